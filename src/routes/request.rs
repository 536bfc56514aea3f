//! The parts of a request that routing looks at, borrowed from the request
//! for the length of a lookup: what the table's walk, the conditions and
//! the explainer read.

use http::{HeaderMap, Method};

/// The parts of a request that routing looks at; `path` is canonical,
/// `query` as sent (parsed only for a route with `query` conditions).
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
}
