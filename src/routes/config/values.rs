//! The small values of a route file, each checked while it is read so its
//! error carries a line and column: prefixes, hosts, methods, durations,
//! status codes, header lists and fixed responses.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::{Checked, HostPattern, RespondSpec};
use crate::routes::path::canonical_path;

/// Header conditions or response headers: a mapping whose keys must be
/// valid header names and values valid header values, with no name given
/// twice (names compare case-insensitively, so `X-A` and `x-a` collide).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderList(pub Vec<(HeaderName, HeaderValue)>);

impl<'de> Deserialize<'de> for HeaderList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct HeaderListVisitor;
        impl<'de> Visitor<'de> for HeaderListVisitor {
            type Value = HeaderList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of header names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HeaderList, A::Error> {
                let mut entries: Vec<(HeaderName, HeaderValue)> = Vec::new();
                loop {
                    let check_name = |key: &str| {
                        let name = HeaderName::try_from(key)
                            .map_err(|_| format!("`{key}` is not a valid header name"))?;
                        if entries.iter().any(|(n, _)| *n == name) {
                            return Err(format!("duplicate header `{key}`"));
                        }
                        Ok(name)
                    };
                    let Some(name) = map.next_key_seed(Checked("a header name", check_name))?
                    else {
                        break;
                    };
                    let check_value = |value: &str| {
                        HeaderValue::try_from(value)
                            .map_err(|_| format!("`{value}` is not a valid header value"))
                    };
                    let value = map.next_value_seed(Checked("a header value", check_value))?;
                    entries.push((name, value));
                }
                entries.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
                Ok(HeaderList(entries))
            }
        }
        d.deserialize_map(HeaderListVisitor)
    }
}

/// A route prefix in the canonical form the request path is matched in.
#[derive(Debug, Clone)]
pub(super) struct Prefix(pub(super) String);

checked_from_str!(Prefix, "a path starting with `/`", |text| {
    if !text.starts_with('/') {
        return Err(format!("prefix `{text}` does not start with `/`"));
    }
    if text.contains(['?', '#']) {
        return Err(format!("prefix `{text}` contains a query or fragment"));
    }
    let canonical = canonical_path(text).map_err(|e| format!("prefix `{text}`: {e}"))?;
    let trimmed = canonical.trim_end_matches('/');
    Ok(Prefix(if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    }))
});

checked_from_str!(HostPattern, "a host name or `*.domain`", |text| {
    let host = text.to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host);
    let (pattern, name) = match host.strip_prefix("*.") {
        Some(rest) => (HostPattern::Wildcard(format!(".{rest}")), rest),
        None => (HostPattern::Exact(host.to_owned()), host),
    };
    let is_ipv6 = name.starts_with('[') && name.ends_with(']');
    let valid_name = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if !(valid_name || is_ipv6 && matches!(pattern, HostPattern::Exact(_))) {
        return Err(format!("`{text}` is not a valid host (no port, no scheme)"));
    }
    Ok(pattern)
});

/// An HTTP method name as a route or test states it.
#[derive(Debug, Clone)]
pub struct MethodName(pub Method);

checked_from_str!(
    MethodName,
    "an upper-case method name such as GET",
    |text| {
        if text.is_empty() || !text.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(format!("method `{text}` is not an upper-case method name"));
        }
        Method::from_bytes(text.as_bytes())
            .map(MethodName)
            .map_err(|_| format!("method `{text}` is not valid"))
    }
);

#[derive(Debug, Clone)]
pub(super) struct DurationValue(pub(super) Duration);

checked_from_str!(
    DurationValue,
    "a duration such as 250ms, 5s or 2m",
    |text| {
        match humantime::parse_duration(text) {
            Ok(d) if d.is_zero() => Err(format!("duration `{text}` must be more than zero")),
            Ok(d) => Ok(DurationValue(d)),
            Err(_) => Err(format!(
                "`{text}` is not a duration (write it like 250ms, 5s or 2m)"
            )),
        }
    }
);

#[derive(Debug, Clone)]
pub(super) struct Status(pub(super) StatusCode);

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct StatusVisitor;
        impl Visitor<'_> for StatusVisitor {
            type Value = Status;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a status code from 200 to 599")
            }
            fn visit_u64<E: de::Error>(self, code: u64) -> Result<Status, E> {
                u16::try_from(code)
                    .ok()
                    .filter(|code| (200..=599).contains(code))
                    .and_then(|code| StatusCode::from_u16(code).ok())
                    .map(Status)
                    .ok_or_else(|| {
                        E::custom(format!(
                            "status {code} is not a final HTTP status (200 to 599)"
                        ))
                    })
            }
            fn visit_i64<E: de::Error>(self, code: i64) -> Result<Status, E> {
                self.visit_u64(u64::try_from(code).unwrap_or(0))
            }
            /// `status: "200"` means what it says.
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Status, E> {
                match text.trim().parse::<u64>() {
                    Ok(code) => self.visit_u64(code),
                    Err(_) => Err(E::custom(format!("status `{text}` is not a number"))),
                }
            }
        }
        d.deserialize_any(StatusVisitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRespond {
    #[serde(default)]
    status: Option<Status>,
    #[serde(default)]
    body: String,
    #[serde(default)]
    headers: HeaderList,
}

impl RawRespond {
    pub(super) fn into_spec(self) -> RespondSpec {
        RespondSpec {
            status: self.status.map_or(StatusCode::OK, |s| s.0),
            body: Bytes::from(self.body),
            headers: self.headers.0.into_iter().collect(),
        }
    }
}
