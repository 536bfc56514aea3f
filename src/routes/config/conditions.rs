//! A route's conditions beyond host and prefix (SPEC 7.1): `headers`,
//! `query` and `cookies`, each value exact, `{ regex: RE }` or
//! `{ present: BOOL }`, and `path_regex`. Regexes are compiled here, once
//! per table, with the `regex` crate: RE2 syntax, linear time whatever the
//! input, and a cap on the size of a compiled program, so no route file can
//! make matching slow.

use std::fmt;

use http::HeaderName;
use regex::{Regex, RegexBuilder};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::Checked;

/// The most memory one compiled regex may take. Route regexes are short
/// (an id pattern, a tenant name); a pattern that compiles past this is a
/// mistake (a huge repetition count), refused with its position rather
/// than made into megabytes of automaton per table.
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// A compiled regex and the text it was written as; two compare equal when
/// their text does, so an unchanged route stays unchanged across reloads.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    regex: Regex,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Pattern {
    /// A pattern that must match a whole value (SPEC 7.1).
    pub fn whole(source: &str) -> Result<Self, String> {
        Self::compile(source, &format!("^(?:{source})$"))
    }

    /// A pattern searched for anywhere in a value (a regex `rewrite`).
    pub fn search(source: &str) -> Result<Self, String> {
        Self::compile(source, source)
    }

    fn compile(source: &str, program: &str) -> Result<Self, String> {
        let regex = RegexBuilder::new(program)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(limit) => format!(
                    "regex `{source}` compiles to more than {limit} bytes; write a smaller one"
                ),
                other => format!("regex `{source}` is not valid: {other}"),
            })?;
        Ok(Pattern {
            source: source.to_owned(),
            regex,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn regex(&self) -> &Regex {
        &self.regex
    }

    pub fn is_match(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }
}

/// What one header, query parameter or cookie must be.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueMatch {
    Exact(String),
    Regex(Pattern),
    Present(bool),
}

impl ValueMatch {
    /// Whether `value` (the first occurrence, `None` when absent) meets it.
    pub fn accepts(&self, value: Option<&[u8]>) -> bool {
        match (self, value) {
            (ValueMatch::Present(wanted), value) => *wanted == value.is_some(),
            (_, None) => false,
            (ValueMatch::Exact(exact), Some(value)) => exact.as_bytes() == value,
            (ValueMatch::Regex(pattern), Some(value)) => {
                std::str::from_utf8(value).is_ok_and(|text| pattern.is_match(text))
            }
        }
    }
}

impl fmt::Display for ValueMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueMatch::Exact(value) => write!(f, "{value:?}"),
            ValueMatch::Regex(pattern) => write!(f, "~/{}/", pattern.source()),
            ValueMatch::Present(true) => f.write_str("present"),
            ValueMatch::Present(false) => f.write_str("absent"),
        }
    }
}

/// Everything a route asks of a request besides host, prefix and method.
/// Each list is sorted by name, so equal conditions compare equal.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conditions {
    pub headers: Vec<(HeaderName, ValueMatch)>,
    pub query: Vec<(String, ValueMatch)>,
    pub cookies: Vec<(String, ValueMatch)>,
    pub path_regex: Option<Pattern>,
}

impl Conditions {
    /// How many conditions the route has, for precedence (SPEC 2, rule 3):
    /// each entry of `headers`, `query` and `cookies`, and `path_regex`.
    pub fn count(&self) -> usize {
        self.headers.len()
            + self.query.len()
            + self.cookies.len()
            + usize::from(self.path_regex.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// One line per kind, `name=value` pairs, for `check` and conflicts:
    /// equal for equal conditions.
    pub fn describe(&self) -> Vec<String> {
        let mut parts = Vec::new();
        for (name, value) in &self.headers {
            parts.push(format!("header {name}={value}"));
        }
        for (name, value) in &self.query {
            parts.push(format!("query {name}={value}"));
        }
        for (name, value) in &self.cookies {
            parts.push(format!("cookie {name}={value}"));
        }
        if let Some(pattern) = &self.path_regex {
            parts.push(format!("path ~/{}/", pattern.source()));
        }
        parts
    }
}

/// A condition's value as the file writes it: a string, `{ regex: RE }`
/// or `{ present: BOOL }`, read in one visitor so that a bad regex is
/// refused at its own line and column.
impl<'de> Deserialize<'de> for ValueMatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ValueMatchVisitor;
        impl<'de> Visitor<'de> for ValueMatchVisitor {
            type Value = ValueMatch;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value, `{ regex: RE }` or `{ present: true|false }`")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<ValueMatch, E> {
                Ok(ValueMatch::Exact(value.to_owned()))
            }

            fn visit_bool<E: de::Error>(self, value: bool) -> Result<ValueMatch, E> {
                Err(E::custom(format!(
                    "`{value}` is a YAML boolean; quote it (\"{value}\") to match that text, or write `{{ present: {value} }}`"
                )))
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<ValueMatch, E> {
                Ok(ValueMatch::Exact(value.to_string()))
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<ValueMatch, E> {
                Ok(ValueMatch::Exact(value.to_string()))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ValueMatch, A::Error> {
                let Some(kind) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(
                        "an empty mapping; write `{ regex: RE }` or `{ present: true|false }`",
                    ));
                };
                let matched = match kind.as_str() {
                    "regex" => ValueMatch::Regex(
                        map.next_value_seed(Checked("a regex", |text: &str| Pattern::whole(text)))?,
                    ),
                    "present" => ValueMatch::Present(map.next_value::<bool>()?),
                    other => return Err(de::Error::unknown_field(other, &["regex", "present"])),
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "`{extra}`: a condition is one of `regex` or `present`, not both"
                    )));
                }
                Ok(matched)
            }
        }
        d.deserialize_any(ValueMatchVisitor)
    }
}

/// A `headers:`, `query:` or `cookies:` mapping: names checked by `name`
/// (which also says whether two spellings are the same name), no name
/// twice, in file order.
fn named_conditions<'de, A, N>(
    mut map: A,
    what: &'static str,
    name: fn(&str) -> Result<N, String>,
) -> Result<Vec<(N, ValueMatch)>, A::Error>
where
    A: MapAccess<'de>,
    N: PartialEq + Clone,
{
    let mut entries: Vec<(N, ValueMatch)> = Vec::new();
    loop {
        let seen: Vec<N> = entries.iter().map(|(n, _)| n.clone()).collect();
        let check = move |key: &str| {
            let checked = name(key)?;
            if seen.contains(&checked) {
                return Err(format!("duplicate {what} `{key}`"));
            }
            Ok(checked)
        };
        let Some(key) = map.next_key_seed(Checked(what, check))? else {
            break;
        };
        let value = map.next_value::<ValueMatch>()?;
        entries.push((key, value));
    }
    Ok(entries)
}

/// `headers:` conditions, by header name (case-insensitive).
#[derive(Debug, Clone, Default)]
pub(super) struct HeaderConditions(pub(super) Vec<(HeaderName, ValueMatch)>);

impl<'de> Deserialize<'de> for HeaderConditions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct HeadersVisitor;
        impl<'de> Visitor<'de> for HeadersVisitor {
            type Value = HeaderConditions;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of header names to conditions")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<HeaderConditions, A::Error> {
                let mut headers = named_conditions(map, "header", |key| {
                    HeaderName::try_from(key)
                        .map_err(|_| format!("`{key}` is not a valid header name"))
                })?;
                headers.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
                Ok(HeaderConditions(headers))
            }
        }
        d.deserialize_map(HeadersVisitor)
    }
}

/// `query:` or `cookies:` conditions, by exact (case-sensitive) name.
#[derive(Debug, Clone, Default)]
pub(super) struct NameConditions(pub(super) Vec<(String, ValueMatch)>);

impl<'de> Deserialize<'de> for NameConditions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NamesVisitor;
        impl<'de> Visitor<'de> for NamesVisitor {
            type Value = NameConditions;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of names to conditions")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<NameConditions, A::Error> {
                let mut entries = named_conditions(map, "name", |key| {
                    if key.is_empty() {
                        return Err("an empty name can never be sent".to_owned());
                    }
                    Ok(key.to_owned())
                })?;
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Ok(NameConditions(entries))
            }
        }
        d.deserialize_map(NamesVisitor)
    }
}

/// `path_regex:` and the regex of a `rewrite`.
#[derive(Debug, Clone)]
pub(super) struct WholePattern(pub(super) Pattern);

impl<'de> Deserialize<'de> for WholePattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::DeserializeSeed::deserialize(
            Checked("a regex", |text: &str| {
                Pattern::whole(text).map(WholePattern)
            }),
            d,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_patterns_match_the_whole_value_only() {
        let id = Pattern::whole("[0-9]+").expect("a valid regex");
        assert!(id.is_match("42"));
        assert!(!id.is_match("42a"));
        assert!(!id.is_match("a42"));
        let either = Pattern::whole("a|b").expect("a valid regex");
        assert!(either.is_match("a") && either.is_match("b") && !either.is_match("ab"));
    }

    #[test]
    fn a_backtracking_bomb_runs_in_linear_time() {
        let bomb = Pattern::whole("(a+)+$").expect("a valid regex");
        let input = format!("{}b", "a".repeat(10_000));
        let started = std::time::Instant::now();
        assert!(!bomb.is_match(&input));
        // Generous for a debug build; a backtracking engine takes years.
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
    }

    #[test]
    fn oversized_and_invalid_patterns_are_refused() {
        let huge = Pattern::whole("(?:a{1000}){1000}").expect_err("too big");
        assert!(huge.contains("compiles to more than"), "{huge}");
        let bad = Pattern::whole("(unclosed").expect_err("invalid");
        assert!(bad.contains("is not valid"), "{bad}");
    }

    #[test]
    fn value_matches_test_the_first_occurrence() {
        let exact = ValueMatch::Exact("on".to_owned());
        assert!(exact.accepts(Some(b"on")));
        assert!(!exact.accepts(Some(b"On")));
        assert!(!exact.accepts(None));
        assert!(ValueMatch::Present(true).accepts(Some(b"")));
        assert!(ValueMatch::Present(false).accepts(None));
        assert!(!ValueMatch::Present(false).accepts(Some(b"x")));
        let regex = ValueMatch::Regex(Pattern::whole("[a-z]{3}").expect("a regex"));
        assert!(regex.accepts(Some(b"abc")));
        assert!(!regex.accepts(Some(b"\xff\xfe\xfd")));
    }
}
