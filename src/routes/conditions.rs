//! Matching a request against a route's conditions (SPEC 7.1), checked
//! only on the routes the trie found by host and prefix, and only for
//! routes that have any: a request to a route without conditions never
//! parses its query or its cookies.
//!
//! Where a name appears more than once (a header, a query parameter, a
//! cookie), its first occurrence is the one tested. Query parameters are
//! split on `&` and percent-decoded (`+` is a space); cookies are the
//! `name=value` pairs of every `Cookie` header, in order.

use std::borrow::Cow;

use http::header::COOKIE;
use http::HeaderMap;

use crate::routes::config::{Conditions, ValueMatch};
use crate::routes::request::RequestFacts;

/// Whether every condition holds for `request`. It allocates nothing
/// unless a query parameter is percent-encoded.
pub fn accepts(conditions: &Conditions, request: &RequestFacts<'_>) -> bool {
    failing(conditions, request).is_none()
}

/// The first condition that does not hold for `request`, in the order
/// headers, query, cookies, path.
pub fn failing<'c>(conditions: &'c Conditions, request: &RequestFacts<'_>) -> Option<Failing<'c>> {
    for (name, wanted) in &conditions.headers {
        let value = request.headers.get(name).map(|v| v.as_bytes());
        if !wanted.accepts(value) {
            return Some(Failing::Header(name.as_str(), wanted));
        }
    }
    for (name, wanted) in &conditions.query {
        let value = request
            .query
            .and_then(|query| first_query_value(query, name));
        if !wanted.accepts(value.as_deref().map(str::as_bytes)) {
            return Some(Failing::Query(name, wanted));
        }
    }
    for (name, wanted) in &conditions.cookies {
        if !wanted.accepts(first_cookie(request.headers, name)) {
            return Some(Failing::Cookie(name, wanted));
        }
    }
    if let Some(pattern) = &conditions.path_regex {
        if !pattern.is_match(request.path) {
            return Some(Failing::Path(pattern.source()));
        }
    }
    None
}

/// What a logged request (method, host, path and query; no headers, no
/// cookies) says about a route's conditions, for `check --replay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logged {
    Holds,
    Fails,
    /// The query and path hold, but the route tests headers or cookies,
    /// which the log does not record.
    Unknown,
}

/// Judges `conditions` on a logged request, whose `headers` are empty.
pub fn judge_logged(conditions: &Conditions, request: &RequestFacts<'_>) -> Logged {
    let only_logged = Conditions {
        headers: Vec::new(),
        query: conditions.query.clone(),
        cookies: Vec::new(),
        path_regex: conditions.path_regex.clone(),
    };
    if failing(&only_logged, request).is_some() {
        Logged::Fails
    } else if conditions.headers.is_empty() && conditions.cookies.is_empty() {
        Logged::Holds
    } else {
        Logged::Unknown
    }
}

/// A condition that did not hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Failing<'c> {
    Header(&'c str, &'c ValueMatch),
    Query(&'c str, &'c ValueMatch),
    Cookie(&'c str, &'c ValueMatch),
    Path(&'c str),
}

impl Failing<'_> {
    /// The condition as `check` prints it (`cookie beta="on"`), and what
    /// the request had instead (`absent`, or the value tested): for the
    /// route explainer, off the request path.
    pub fn describe(&self, request: &RequestFacts<'_>) -> (String, String) {
        let seen = |value: Option<&[u8]>| match value {
            None => "absent".to_owned(),
            Some(value) => format!("{:?}", String::from_utf8_lossy(value)),
        };
        match *self {
            Failing::Header(name, wanted) => (
                format!("header {name}={wanted}"),
                seen(request.headers.get(name).map(|v| v.as_bytes())),
            ),
            Failing::Query(name, wanted) => {
                let value = request.query.and_then(|q| first_query_value(q, name));
                (
                    format!("query {name}={wanted}"),
                    seen(value.as_deref().map(str::as_bytes)),
                )
            }
            Failing::Cookie(name, wanted) => (
                format!("cookie {name}={wanted}"),
                seen(first_cookie(request.headers, name)),
            ),
            Failing::Path(source) => (
                format!("path_regex ~/{source}/"),
                format!("{:?}", request.path),
            ),
        }
    }
}

/// The value of the first `name` parameter in a query string, decoded as
/// a form decodes it (`+` is a space, `%XX` a byte). A key or value that
/// needs no decoding, nearly every one, is compared and returned as it is.
pub fn first_query_value<'q>(query: &'q str, name: &str) -> Option<Cow<'q, str>> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decoded(key) == name).then(|| form_decoded(value))
        })
}

/// `text` with `+` read as a space and percent-escapes decoded (invalid
/// UTF-8 replaced), borrowed when it holds neither.
fn form_decoded(text: &str) -> Cow<'_, str> {
    if !text.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(text);
    }
    let spaced = text.replace('+', " ");
    let decoded = percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy();
    Cow::Owned(decoded.into_owned())
}

/// The value of the first cookie called `name` in the `Cookie` headers.
pub fn first_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|header| header.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let at = pair.iter().position(|&b| b == b'=')?;
            (pair[..at].trim_ascii() == name.as_bytes()).then(|| pair[at + 1..].trim_ascii())
        })
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, Method};

    use super::*;

    #[test]
    fn query_values_are_decoded_and_the_first_one_counts() {
        let query = "a=1&b=two+words&a=2&c=%2Fx%20y&flag";
        assert_eq!(first_query_value(query, "a").as_deref(), Some("1"));
        assert_eq!(first_query_value(query, "b").as_deref(), Some("two words"));
        assert_eq!(first_query_value(query, "c").as_deref(), Some("/x y"));
        assert_eq!(first_query_value(query, "flag").as_deref(), Some(""));
        assert_eq!(first_query_value(query, "d"), None);
        assert_eq!(first_query_value("na%6De=v", "name").as_deref(), Some("v"));
    }

    #[test]
    fn cookies_come_from_every_cookie_header_in_order() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("theme=dark; beta=on"));
        headers.append(COOKIE, HeaderValue::from_static("beta=off;  id = 7 "));
        assert_eq!(first_cookie(&headers, "beta"), Some(&b"on"[..]));
        assert_eq!(first_cookie(&headers, "id"), Some(&b"7"[..]));
        assert_eq!(first_cookie(&headers, "theme"), Some(&b"dark"[..]));
        assert_eq!(first_cookie(&headers, "missing"), None);
        assert_eq!(first_cookie(&HeaderMap::new(), "beta"), None);
    }

    #[test]
    fn the_first_failing_condition_is_named() {
        let conditions = Conditions {
            cookies: vec![("beta".to_owned(), ValueMatch::Exact("on".to_owned()))],
            ..Conditions::default()
        };
        let headers = HeaderMap::new();
        let request = RequestFacts {
            host: None,
            path: "/",
            query: None,
            method: &Method::GET,
            headers: &headers,
        };
        let failing = failing(&conditions, &request).expect("the cookie is missing");
        let (what, saw) = failing.describe(&request);
        assert_eq!(what, "cookie beta=\"on\"");
        assert_eq!(saw, "absent");
    }
}
