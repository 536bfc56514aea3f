//! `request_headers` and `response_headers` (SPEC 7.2): `remove`, then
//! `set` (every value replaced), then `add` (appended), after the router's
//! own edits of SPEC 4.3. A value may hold `{client_ip}`, `{request_id}`,
//! `{host}` and `{scheme}`; a value without them was made into a header
//! value once, when the table was built.

use http::{HeaderMap, HeaderValue};

use crate::routes::config::{HeaderEdits, Piece, Placeholder, Template};

/// What the placeholders of an edit stand for, for one request. `host`
/// and `request_id` are worked out only for edits that use them (see
/// `HeaderEdits::uses_host`); an absent one expands to nothing.
#[derive(Debug, Clone, Copy)]
pub struct EditContext<'a> {
    /// The client's address as `X-Forwarded-For` writes it.
    pub client_ip: &'a HeaderValue,
    pub request_id: Option<&'a HeaderValue>,
    /// The request's host, lower-cased and without its port.
    pub host: Option<&'a str>,
    /// `http` or `https`, by the listener the request came in on.
    pub scheme: &'static str,
}

/// Applies `edits` to `headers`.
pub fn apply(edits: &HeaderEdits, headers: &mut HeaderMap, context: &EditContext<'_>) {
    for name in &edits.remove {
        headers.remove(name);
    }
    for (name, template) in &edits.set {
        if let Some(value) = expand(template, context) {
            headers.insert(name.clone(), value);
        }
    }
    for (name, template) in &edits.add {
        if let Some(value) = expand(template, context) {
            headers.append(name.clone(), value);
        }
    }
}

/// The template's value for this request; `None` only if a placeholder's
/// value cannot be a header value, which the values above never are.
fn expand(template: &Template, context: &EditContext<'_>) -> Option<HeaderValue> {
    if let Some(fixed) = template.fixed() {
        return Some(fixed.clone());
    }
    // A value that is one placeholder alone, as `{client_ip}` often is,
    // is that value, shared rather than copied.
    match template.pieces() {
        [Piece::Hole(Placeholder::ClientIp)] => return Some(context.client_ip.clone()),
        [Piece::Hole(Placeholder::RequestId)] => {
            if let Some(id) = context.request_id {
                return Some(id.clone());
            }
        }
        [Piece::Hole(Placeholder::Scheme)] => {
            return Some(HeaderValue::from_static(context.scheme))
        }
        _ => {}
    }
    let mut bytes = Vec::with_capacity(template.source().len() + 32);
    for piece in template.pieces() {
        match piece {
            Piece::Literal(text) => bytes.extend_from_slice(text.as_bytes()),
            Piece::Hole(Placeholder::ClientIp) => {
                bytes.extend_from_slice(context.client_ip.as_bytes())
            }
            Piece::Hole(Placeholder::RequestId) => {
                bytes.extend_from_slice(context.request_id.map_or(&b""[..], |id| id.as_bytes()))
            }
            Piece::Hole(Placeholder::Host) => {
                bytes.extend_from_slice(context.host.unwrap_or_default().as_bytes())
            }
            Piece::Hole(Placeholder::Scheme) => bytes.extend_from_slice(context.scheme.as_bytes()),
            // Not placeholders of a header value: the file was refused.
            Piece::Hole(Placeholder::Path | Placeholder::Rest | Placeholder::Query) => {}
        }
    }
    HeaderValue::from_bytes(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::config::parse;

    fn edits_of(yaml_edits: &str) -> HeaderEdits {
        let file = format!(
            "routes:\n  r:\n    upstream: http://127.0.0.1:9\n    request_headers: {yaml_edits}\n"
        );
        let config = parse(&file).expect("a valid file");
        config.routes[0].request_headers.clone()
    }

    #[test]
    fn remove_then_set_then_add_with_placeholders() {
        let edits = edits_of(
            "{ remove: [x-debug, x-set], set: { host: users.internal, x-set: \"{client_ip} {scheme}://{host} {unknown}\" }, add: { x-via: switchyard, x-id: \"{request_id}\" } }",
        );
        let mut headers = HeaderMap::new();
        headers.insert("x-debug", HeaderValue::from_static("1"));
        headers.insert("host", HeaderValue::from_static("api.example.com"));
        headers.insert("x-set", HeaderValue::from_static("old"));
        headers.append("x-via", HeaderValue::from_static("edge"));
        let client = HeaderValue::from_static("10.0.0.7");
        let id = HeaderValue::from_static("req-1");
        let context = EditContext {
            client_ip: &client,
            request_id: Some(&id),
            host: Some("api.example.com"),
            scheme: "https",
        };
        apply(&edits, &mut headers, &context);
        assert!(!headers.contains_key("x-debug"));
        assert_eq!(headers["host"], "users.internal");
        assert_eq!(
            headers["x-set"],
            "10.0.0.7 https://api.example.com {unknown}"
        );
        let via: Vec<_> = headers.get_all("x-via").iter().collect();
        assert_eq!(via, ["edge", "switchyard"]);
        assert_eq!(headers["x-id"], "req-1");
    }
}
