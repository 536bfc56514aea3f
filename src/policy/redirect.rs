//! `redirect:` (SPEC 7.3): the router answers with the route's status and
//! a `Location` made from its template, and an empty body; no upstream is
//! contacted.

use http::header::LOCATION;
use http::{HeaderValue, Response};

use crate::routes::config::{Piece, Placeholder, RedirectSpec};

/// What a redirect template's placeholders stand for, for one request.
#[derive(Debug, Clone, Copy)]
pub struct RedirectContext<'a> {
    pub scheme: &'static str,
    /// The request's host, without its port.
    pub host: Option<&'a str>,
    /// The normalized path.
    pub path: &'a str,
    /// The matched prefix, canonical (`/` or `/a/b`).
    pub prefix: &'a str,
    /// The query string as sent, without its `?`.
    pub query: Option<&'a str>,
}

/// The `Location` for this request.
pub fn location(spec: &RedirectSpec, context: &RedirectContext<'_>) -> HeaderValue {
    let mut bytes = Vec::with_capacity(spec.to.source().len() + context.path.len() + 32);
    for piece in spec.to.pieces() {
        match piece {
            Piece::Literal(text) => bytes.extend_from_slice(text.as_bytes()),
            Piece::Hole(Placeholder::Scheme) => bytes.extend_from_slice(context.scheme.as_bytes()),
            Piece::Hole(Placeholder::Host) => {
                bytes.extend_from_slice(context.host.unwrap_or_default().as_bytes())
            }
            Piece::Hole(Placeholder::Path) => bytes.extend_from_slice(context.path.as_bytes()),
            Piece::Hole(Placeholder::Rest) => bytes.extend_from_slice(rest(context).as_bytes()),
            Piece::Hole(Placeholder::Query) => {
                if let Some(query) = context.query.filter(|q| !q.is_empty()) {
                    bytes.push(b'?');
                    bytes.extend_from_slice(query.as_bytes());
                }
            }
            // Not placeholders of a redirect: the file was refused.
            Piece::Hole(Placeholder::ClientIp | Placeholder::RequestId) => {}
        }
    }
    // Every piece is header-safe: literals were checked with the file, and
    // the path, host and query come from a parsed request line.
    HeaderValue::from_bytes(&bytes).unwrap_or_else(|_| HeaderValue::from_static("/"))
}

/// The path after the matched prefix: `/a` for prefix `/old` and path
/// `/old/a`, empty for `/old` itself; the whole path under prefix `/`.
fn rest<'p>(context: &RedirectContext<'p>) -> &'p str {
    if context.prefix == "/" {
        return context.path;
    }
    match context.path.strip_prefix(context.prefix) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        _ => context.path,
    }
}

/// The redirect answer, with an empty body.
pub fn response<B: Default>(spec: &RedirectSpec, context: &RedirectContext<'_>) -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = spec.status;
    response
        .headers_mut()
        .insert(LOCATION, location(spec, context));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::config::{parse, TargetSpec};

    fn redirect(to: &str) -> RedirectSpec {
        let file = format!("routes:\n  old:\n    prefix: /old\n    redirect: {{ to: \"{to}\" }}\n");
        match parse(&file).expect("a valid file").routes.remove(0).target {
            TargetSpec::Redirect(spec) => spec,
            other => panic!("not a redirect: {other:?}"),
        }
    }

    fn context<'a>(path: &'a str, query: Option<&'a str>) -> RedirectContext<'a> {
        RedirectContext {
            scheme: "http",
            host: Some("old.example.com"),
            path,
            prefix: "/old",
            query,
        }
    }

    #[test]
    fn every_placeholder_is_filled() {
        let all = redirect("{scheme}://{host}/new{rest}{query}#{path}");
        assert_eq!(
            location(&all, &context("/old/a/b", Some("x=1"))),
            "http://old.example.com/new/a/b?x=1#/old/a/b"
        );
        assert_eq!(
            location(&all, &context("/old", None)),
            "http://old.example.com/new#/old"
        );
        assert_eq!(
            location(&all, &context("/old", Some(""))),
            "http://old.example.com/new#/old"
        );
    }

    #[test]
    fn the_default_status_keeps_the_method() {
        let to_https = redirect("https://{host}{path}{query}");
        assert_eq!(to_https.status, http::StatusCode::PERMANENT_REDIRECT);
        let answer: Response<()> = response(&to_https, &context("/old/x", Some("q=1")));
        assert_eq!(
            answer.headers()[LOCATION],
            "https://old.example.com/old/x?q=1"
        );
    }
}
