//! The request host as routes name it: one spelling per host, so that a
//! route's `host:` and a request's authority compare as plain strings. The
//! proxy and the route explainer both normalize with this one function.

use std::borrow::Cow;
use std::net::Ipv6Addr;

use http::HeaderValue;

/// The longest DNS name (RFC 1035 3.1, in text form without the trailing
/// dot); anything longer in `Host` is not a name we could have a route for.
pub const MAX_HOST_LEN: usize = 253;

/// The host a route can name, from a request's authority (see
/// `proxy::headers::routing_host`, which takes it from the request).
/// Borrowed from `authority` when it is already in that spelling, as
/// nearly every `Host` is, so routing a request allocates nothing for it.
pub fn host_of_authority(authority: &HeaderValue) -> Option<Cow<'_, str>> {
    normalize_host(authority.to_str().ok()?)
}

fn normalize_host(authority: &str) -> Option<Cow<'_, str>> {
    if let Some(bracketed) = authority.strip_prefix('[') {
        let (literal, rest) = bracketed.split_once(']')?;
        if !is_valid_port_suffix(rest) {
            return None;
        }
        // Parsing rejects zone ids and IPvFuture, which no route can name,
        // and printing gives one spelling per address.
        let addr: Ipv6Addr = literal.parse().ok()?;
        return Some(Cow::Owned(format!("[{addr}]")));
    }

    // One pass over the bytes: it checks each label, finds the port and
    // notes whether lowercasing is needed. This runs on every request.
    let bytes = authority.as_bytes();
    let mut end = bytes.len();
    let mut label = 0usize;
    let mut upper = false;
    for (at, &b) in bytes.iter().enumerate() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => label += 1,
            b'A'..=b'Z' => {
                label += 1;
                upper = true;
            }
            // An empty label: a leading dot or two dots in a row.
            b'.' if label == 0 => return None,
            b'.' => label = 0,
            b':' => {
                end = at;
                break;
            }
            _ => return None,
        }
    }
    if !is_valid_port_suffix(&authority[end..]) {
        return None;
    }
    // Ending on a dot is the fully qualified spelling of the same name; the
    // label before it was checked when the dot was reached.
    let name = match (end, label) {
        (0, _) => return None,
        (_, 0) => &authority[..end - 1],
        _ => &authority[..end],
    };
    if name.is_empty() || name.len() > MAX_HOST_LEN {
        return None;
    }
    Some(if upper {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    })
}

/// Empty, or `:` and a port number (RFC 3986 allows an empty port).
fn is_valid_port_suffix(suffix: &str) -> bool {
    match suffix.strip_prefix(':') {
        None => suffix.is_empty(),
        Some("") => true,
        Some(port) => port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_spelling_per_host() {
        let cases: &[(&str, Option<&str>)] = &[
            ("example.com", Some("example.com")),
            ("Example.COM:8080", Some("example.com")),
            ("example.com.", Some("example.com")),
            ("example.com.:80", Some("example.com")),
            ("a_b-c.d9", Some("a_b-c.d9")),
            ("127.0.0.1:18093", Some("127.0.0.1")),
            ("host:", Some("host")),
            ("[::1]:8080", Some("[::1]")),
            ("[0:0::1]", Some("[::1]")),
            ("", None),
            (".", None),
            (":80", None),
            ("..", None),
            ("example.com..", None),
            (".example.com", None),
            ("a..b", None),
            ("exa mple", None),
            ("example.com:http", None),
            ("example.com:99999", None),
            ("example.com:80:80", None),
            ("ex%41mple", None),
            ("[::1", None),
            ("[fe80::1%eth0]", None),
        ];
        for (authority, expected) in cases {
            assert_eq!(
                normalize_host(authority).as_deref(),
                *expected,
                "{authority:?}"
            );
        }
        let longest = format!("{}.com", "a".repeat(MAX_HOST_LEN - 4));
        assert_eq!(normalize_host(&longest).as_deref(), Some(longest.as_str()));
        assert_eq!(normalize_host(&format!("a{longest}")), None);
        assert_eq!(
            normalize_host(&format!("{longest}.")).as_deref(),
            Some(longest.as_str())
        );
    }
}
