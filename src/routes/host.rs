//! The request host as routes name it: one spelling per host, so that a
//! route's `host:` and a request's authority compare as plain strings. The
//! proxy and the route explainer both normalize with this one function.

use std::net::Ipv6Addr;

use http::HeaderValue;

/// The longest DNS name (RFC 1035 3.1, in text form without the trailing
/// dot); anything longer in `Host` is not a name we could have a route for.
pub const MAX_HOST_LEN: usize = 253;

/// The host a route can name, from a request's authority (see
/// `proxy::headers::routing_host`, which takes it from the request).
pub fn host_of_authority(authority: &HeaderValue) -> Option<String> {
    normalize_host(authority.to_str().ok()?)
}

fn normalize_host(authority: &str) -> Option<String> {
    if let Some(bracketed) = authority.strip_prefix('[') {
        let (literal, rest) = bracketed.split_once(']')?;
        if !is_valid_port_suffix(rest) {
            return None;
        }
        // Parsing rejects zone ids and IPvFuture, which no route can name,
        // and printing gives one spelling per address.
        let addr: Ipv6Addr = literal.parse().ok()?;
        return Some(format!("[{addr}]"));
    }

    let (name, port) = match authority.find(':') {
        Some(colon) => authority.split_at(colon),
        None => (authority, ""),
    };
    if !is_valid_port_suffix(port) {
        return None;
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let valid = !name.is_empty()
        && name.len() <= MAX_HOST_LEN
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    valid.then(|| name.to_ascii_lowercase())
}

/// Empty, or `:` and a port number (RFC 3986 allows an empty port).
fn is_valid_port_suffix(suffix: &str) -> bool {
    match suffix.strip_prefix(':') {
        None => suffix.is_empty(),
        Some("") => true,
        Some(port) => port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok(),
    }
}
