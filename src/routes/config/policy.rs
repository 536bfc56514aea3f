//! What a route does to a request and its answer besides choosing where it
//! goes (SPEC 7.2, 7.3), as the file states it and checked with line and
//! column: `rewrite`, the header edits of `request_headers` and
//! `response_headers`, and `redirect`. What runs per request is in
//! `crate::policy`.

use std::fmt;

use http::{HeaderName, HeaderValue, StatusCode};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::conditions::Pattern;
use super::values::Prefix;
use super::Checked;

/// `rewrite:` (SPEC 7.2).
#[derive(Debug, Clone, PartialEq)]
pub enum RewriteSpec {
    /// The matched prefix is replaced by this one (canonical, no trailing
    /// slash; `/` for the root).
    Prefix(String),
    /// The first match of the pattern in the path is replaced by `to`
    /// (`$1`, `${name}`).
    Regex { pattern: Pattern, to: String },
}

impl fmt::Display for RewriteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RewriteSpec::Prefix(prefix) => write!(f, "prefix -> {prefix}"),
            RewriteSpec::Regex { pattern, to } => write!(f, "~/{}/ -> {to}", pattern.source()),
        }
    }
}

/// What a template may name in braces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    ClientIp,
    RequestId,
    Host,
    Scheme,
    Path,
    Rest,
    Query,
}

impl Placeholder {
    fn named(name: &str) -> Option<Self> {
        Some(match name {
            "client_ip" => Placeholder::ClientIp,
            "request_id" => Placeholder::RequestId,
            "host" => Placeholder::Host,
            "scheme" => Placeholder::Scheme,
            "path" => Placeholder::Path,
            "rest" => Placeholder::Rest,
            "query" => Placeholder::Query,
            _ => return None,
        })
    }
}

/// The placeholders of a header edit's value; other braces are literal.
const HEADER_PLACEHOLDERS: [Placeholder; 4] = [
    Placeholder::ClientIp,
    Placeholder::RequestId,
    Placeholder::Host,
    Placeholder::Scheme,
];

/// The placeholders of a redirect's `to`; any other is an error.
const REDIRECT_PLACEHOLDERS: [Placeholder; 5] = [
    Placeholder::Scheme,
    Placeholder::Host,
    Placeholder::Path,
    Placeholder::Rest,
    Placeholder::Query,
];

/// One piece of a template.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Literal(String),
    Hole(Placeholder),
}

/// A header value or redirect target with placeholders, split once when
/// the file is read. A template without any is kept as its header value.
#[derive(Debug, Clone)]
pub struct Template {
    source: String,
    pieces: Vec<Piece>,
    fixed: Option<HeaderValue>,
}

impl PartialEq for Template {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Template {
    /// Splits `source` on the placeholders in `known`; `strict` refuses any
    /// other `{name}`, where otherwise it stays literal text.
    fn parse(source: &str, known: &[Placeholder], strict: bool) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = source;
        while let Some(open) = rest.find('{') {
            literal.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let name = after.find('}').map(|close| &after[..close]);
            let hole = name
                .and_then(Placeholder::named)
                .filter(|placeholder| known.contains(placeholder));
            match (hole, name) {
                (Some(hole), Some(name)) => {
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Hole(hole));
                    rest = &after[name.len() + 1..];
                }
                (None, Some(name)) if strict => {
                    return Err(format!(
                        "`{{{name}}}` is not a placeholder here (known: {})",
                        names(known)
                    ));
                }
                _ => {
                    literal.push('{');
                    rest = after;
                }
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        for piece in &pieces {
            if let Piece::Literal(text) = piece {
                HeaderValue::from_str(text)
                    .map_err(|_| format!("`{source}` has characters a header value cannot hold"))?;
            }
        }
        let fixed = match pieces.as_slice() {
            [] => Some(HeaderValue::from_static("")),
            [Piece::Literal(text)] => HeaderValue::from_str(text).ok(),
            _ => None,
        };
        Ok(Template {
            source: source.to_owned(),
            pieces,
            fixed,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// The value, when the template has no placeholder.
    pub fn fixed(&self) -> Option<&HeaderValue> {
        self.fixed.as_ref()
    }
}

fn names(known: &[Placeholder]) -> String {
    let all = [
        ("client_ip", Placeholder::ClientIp),
        ("request_id", Placeholder::RequestId),
        ("host", Placeholder::Host),
        ("scheme", Placeholder::Scheme),
        ("path", Placeholder::Path),
        ("rest", Placeholder::Rest),
        ("query", Placeholder::Query),
    ];
    let listed: Vec<String> = all
        .iter()
        .filter(|(_, p)| known.contains(p))
        .map(|(name, _)| format!("{{{name}}}"))
        .collect();
    listed.join(", ")
}

/// `request_headers:` or `response_headers:` (SPEC 7.2): applied in this
/// order, after the router's own edits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderEdits {
    pub remove: Vec<HeaderName>,
    pub set: Vec<(HeaderName, Template)>,
    pub add: Vec<(HeaderName, Template)>,
    /// Whether any value names `{host}` or `{request_id}`: only then does
    /// a request work out what they stand for.
    pub uses_host: bool,
    pub uses_request_id: bool,
}

impl HeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}

impl Template {
    fn uses(&self, placeholder: Placeholder) -> bool {
        self.pieces.contains(&Piece::Hole(placeholder))
    }
}

/// `redirect:` (SPEC 7.3).
#[derive(Debug, Clone, PartialEq)]
pub struct RedirectSpec {
    pub to: Template,
    pub status: StatusCode,
}

/// A redirect without `status` answers this: permanent, and the method
/// and body are kept (unlike 301, which clients may turn into a GET).
pub const DEFAULT_REDIRECT_STATUS: StatusCode = StatusCode::PERMANENT_REDIRECT;

/// Headers an edit may not name: what is hop-by-hop (SPEC 4.3), and
/// `content-length`, which the body, not the route, decides.
const NOT_EDITABLE: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

fn editable_name(text: &str) -> Result<HeaderName, String> {
    if text.starts_with(':') {
        return Err(format!(
            "`{text}` is an HTTP/2 pseudo-header and cannot be edited"
        ));
    }
    let name =
        HeaderName::try_from(text).map_err(|_| format!("`{text}` is not a valid header name"))?;
    if NOT_EDITABLE.contains(&name.as_str()) {
        return Err(format!(
            "`{text}` is not a header a route may edit (hop-by-hop, or set by the body)"
        ));
    }
    Ok(name)
}

/// A header name in an edit, checked where it stands.
struct EditName(HeaderName);

impl<'de> Deserialize<'de> for EditName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::DeserializeSeed::deserialize(
            Checked("a header name", |text: &str| {
                editable_name(text).map(EditName)
            }),
            d,
        )
    }
}

/// `set:` or `add:`: header names to templates, no name twice.
struct EditValues(Vec<(HeaderName, Template)>);

impl<'de> Deserialize<'de> for EditValues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EditValuesVisitor;
        impl<'de> Visitor<'de> for EditValuesVisitor {
            type Value = EditValues;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of header names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EditValues, A::Error> {
                let mut entries: Vec<(HeaderName, Template)> = Vec::new();
                loop {
                    let seen: Vec<HeaderName> = entries.iter().map(|(n, _)| n.clone()).collect();
                    let check = move |key: &str| {
                        let name = editable_name(key)?;
                        if seen.contains(&name) {
                            return Err(format!("duplicate header `{key}`"));
                        }
                        Ok(name)
                    };
                    let Some(name) = map.next_key_seed(Checked("a header name", check))? else {
                        break;
                    };
                    let template = map
                        .next_value_seed(Checked("a header value", |text: &str| {
                            Template::parse(text, &HEADER_PLACEHOLDERS, false)
                        }))?;
                    entries.push((name, template));
                }
                Ok(EditValues(entries))
            }
        }
        d.deserialize_map(EditValuesVisitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEdits {
    #[serde(default)]
    remove: Vec<EditName>,
    #[serde(default)]
    set: Option<EditValues>,
    #[serde(default)]
    add: Option<EditValues>,
}

impl<'de> Deserialize<'de> for HeaderEdits {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawEdits::deserialize(d)?;
        let set = raw.set.map_or_else(Vec::new, |s| s.0);
        let add = raw.add.map_or_else(Vec::new, |a| a.0);
        let uses = |placeholder| {
            set.iter()
                .chain(&add)
                .any(|(_, template)| template.uses(placeholder))
        };
        Ok(HeaderEdits {
            remove: raw.remove.into_iter().map(|n| n.0).collect(),
            uses_host: uses(Placeholder::Host),
            uses_request_id: uses(Placeholder::RequestId),
            set,
            add,
        })
    }
}

/// A redirect's `to`, checked for unknown placeholders where it stands.
struct RedirectTarget(Template);

impl<'de> Deserialize<'de> for RedirectTarget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::DeserializeSeed::deserialize(
            Checked("a URL template", |text: &str| {
                if text.is_empty() {
                    return Err("a redirect needs somewhere to go".to_owned());
                }
                Template::parse(text, &REDIRECT_PLACEHOLDERS, true).map(RedirectTarget)
            }),
            d,
        )
    }
}

/// A redirect's status: one of the five that mean "go there".
struct RedirectStatus(StatusCode);

impl<'de> Deserialize<'de> for RedirectStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = u64::deserialize(d)
            .map_err(|_| de::Error::custom("a redirect status is 301, 302, 303, 307 or 308"))?;
        match code {
            301 | 302 | 303 | 307 | 308 => StatusCode::from_u16(code as u16)
                .map(RedirectStatus)
                .map_err(de::Error::custom),
            other => Err(de::Error::custom(format!(
                "redirect status {other} is not 301, 302, 303, 307 or 308"
            ))),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedirect {
    to: RedirectTarget,
    #[serde(default)]
    status: Option<RedirectStatus>,
}

impl<'de> Deserialize<'de> for RedirectSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawRedirect::deserialize(d)?;
        Ok(RedirectSpec {
            to: raw.to.0,
            status: raw.status.map_or(DEFAULT_REDIRECT_STATUS, |s| s.0),
        })
    }
}

/// `rewrite:` as written: `{ prefix: P }` or `{ regex: RE, to: T }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRewrite {
    #[serde(default)]
    prefix: Option<Prefix>,
    #[serde(default)]
    regex: Option<SearchPattern>,
    #[serde(default)]
    to: Option<String>,
}

/// A rewrite's regex: searched for, not anchored.
struct SearchPattern(Pattern);

impl<'de> Deserialize<'de> for SearchPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::DeserializeSeed::deserialize(
            Checked("a regex", |text: &str| {
                Pattern::search(text).map(SearchPattern)
            }),
            d,
        )
    }
}

impl<'de> Deserialize<'de> for RewriteSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawRewrite::deserialize(d)?;
        match (raw.prefix, raw.regex, raw.to) {
            (Some(prefix), None, None) => Ok(RewriteSpec::Prefix(prefix.0)),
            (None, Some(pattern), Some(to)) => {
                check_replacement(&pattern.0, &to)
                    .map_err(|e| de::Error::custom(format!("`rewrite`: {e}")))?;
                Ok(RewriteSpec::Regex {
                    pattern: pattern.0,
                    to,
                })
            }
            (None, Some(_), None) => {
                Err(de::Error::custom("`rewrite`: a regex rewrite needs `to`"))
            }
            (None, None, Some(_)) => Err(de::Error::custom("`rewrite`: `to` needs a `regex`")),
            _ => Err(de::Error::custom(
                "`rewrite`: a rewrite is `{ prefix: P }` or `{ regex: RE, to: T }`",
            )),
        }
    }
}

/// Refuses a replacement that names a group the regex does not have (the
/// `regex` crate would silently put nothing there).
fn check_replacement(pattern: &Pattern, to: &str) -> Result<(), String> {
    let regex = pattern.regex();
    let groups = regex.captures_len();
    let mut rest = to;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        if let Some(escaped) = rest.strip_prefix('$') {
            rest = escaped;
            continue;
        }
        let (name, after) = match rest.strip_prefix('{') {
            Some(braced) => match braced.find('}') {
                Some(close) => (&braced[..close], &braced[close + 1..]),
                None => return Err(format!("`{to}`: an unclosed `${{`")),
            },
            None => {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                (&rest[..end], &rest[end..])
            }
        };
        let known = match name.parse::<usize>() {
            Ok(index) => index < groups,
            Err(_) => regex.capture_names().flatten().any(|n| n == name),
        };
        if !name.is_empty() && !known {
            return Err(format!(
                "`{to}` names group `{name}`, which `{}` does not have",
                pattern.source()
            ));
        }
        rest = after;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_templates_know_four_placeholders_and_keep_other_braces() {
        let template = Template::parse(
            "{client_ip} via {scheme}://{host} {x}",
            &HEADER_PLACEHOLDERS,
            false,
        )
        .expect("valid");
        assert_eq!(
            template.pieces(),
            [
                Piece::Hole(Placeholder::ClientIp),
                Piece::Literal(" via ".into()),
                Piece::Hole(Placeholder::Scheme),
                Piece::Literal("://".into()),
                Piece::Hole(Placeholder::Host),
                Piece::Literal(" {x}".into()),
            ]
        );
        let plain = Template::parse("max-age=63072000", &HEADER_PLACEHOLDERS, false).expect("ok");
        assert_eq!(
            plain.fixed().map(|v| v.as_bytes()),
            Some(&b"max-age=63072000"[..])
        );
        let path = Template::parse("{path}", &HEADER_PLACEHOLDERS, false).expect("ok");
        assert_eq!(path.fixed().map(|v| v.as_bytes()), Some(&b"{path}"[..]));
    }

    #[test]
    fn redirect_templates_refuse_unknown_placeholders() {
        let template = Template::parse(
            "https://shop.example.com{path}{query}",
            &REDIRECT_PLACEHOLDERS,
            true,
        )
        .expect("valid");
        assert_eq!(template.pieces().len(), 3);
        let error = Template::parse("https://{hots}{path}", &REDIRECT_PLACEHOLDERS, true)
            .expect_err("a typo");
        assert!(error.contains("`{hots}` is not a placeholder"), "{error}");
        let unclosed = Template::parse("https://a{", &REDIRECT_PLACEHOLDERS, true).expect("ok");
        assert_eq!(unclosed.pieces(), [Piece::Literal("https://a{".into())]);
    }

    #[test]
    fn replacements_may_only_name_groups_the_regex_has() {
        let pattern = Pattern::search("^/api/users/(?P<id>[0-9]+)").expect("valid");
        for good in [
            "/v2/users/$1",
            "/v2/users/${id}",
            "/$0",
            "/cost $$5",
            "/v2/$id/x",
        ] {
            check_replacement(&pattern, good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in ["/v2/$2", "/v2/${name}", "/v2/${1"] {
            assert!(check_replacement(&pattern, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hop_by_hop_and_pseudo_headers_cannot_be_edited() {
        for name in [
            "connection",
            "Transfer-Encoding",
            "content-length",
            "te",
            ":path",
        ] {
            assert!(editable_name(name).is_err(), "{name}");
        }
        assert!(editable_name("host").is_ok());
        assert!(editable_name("strict-transport-security").is_ok());
    }
}
