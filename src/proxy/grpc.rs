//! gRPC at the router (SPEC 8): telling a gRPC request from others, its
//! `grpc-timeout`, and the answers the router gives a gRPC client itself:
//! trailers-only responses (HTTP 200, `grpc-status` and `grpc-message` in
//! the one HEADERS frame), which a gRPC library reads as the status they
//! name, where an HTTP error page would read as "unknown" at best.

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The trailers of a gRPC answer, declared to an HTTP/1.1 client that
/// accepts trailers (see `forward`).
pub const GRPC_TRAILERS: &str = "grpc-status, grpc-message, grpc-status-details-bin";

/// The gRPC status codes the router answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    DeadlineExceeded = 4,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
}

/// Whether a `content-type` is gRPC's: `application/grpc`, alone or with a
/// `+proto`, `+json` or other suffix (and any parameters).
pub fn is_grpc(content_type: &HeaderValue) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    let value = content_type.as_bytes();
    value
        .get(..GRPC.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(GRPC))
        && matches!(value.get(GRPC.len()), None | Some(b'+' | b';' | b' '))
}

/// The longest `grpc-timeout` value: at most 8 digits and a unit.
const MAX_TIMEOUT_DIGITS: usize = 8;

/// The deadline a gRPC client sent in `grpc-timeout` (`100m` is 100 ms),
/// if it sent a valid one. The gRPC wire format allows up to eight digits
/// and one of `H`, `M`, `S`, `m`, `u`, `n`.
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(GRPC_TIMEOUT)?.as_bytes();
    let (unit, digits) = value.split_last()?;
    if digits.is_empty()
        || digits.len() > MAX_TIMEOUT_DIGITS
        || !digits.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount.checked_mul(3600)?),
        b'M' => Duration::from_secs(amount.checked_mul(60)?),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// What gRPC's `grpc-message` percent-encodes: everything outside printable
/// ASCII, and `%` itself.
const MESSAGE_ESCAPES: &AsciiSet = &CONTROLS.add(b'%');

/// A trailers-only answer: HTTP 200 with `content-type: application/grpc`,
/// the status and its message, and no body.
pub fn answer(code: Code, message: &str) -> Response {
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(GRPC_STATUS, HeaderValue::from(code as u16));
    let encoded = utf8_percent_encode(message, MESSAGE_ESCAPES).to_string();
    if let Ok(message) = HeaderValue::from_str(&encoded) {
        headers.insert(GRPC_MESSAGE, message);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_timeout(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_TIMEOUT, HeaderValue::from_str(value).expect("a value"));
        headers
    }

    #[test]
    fn grpc_content_types_are_told_apart() {
        for grpc in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC+json",
            "application/grpc; charset=utf-8",
        ] {
            assert!(is_grpc(&HeaderValue::from_static(grpc)), "{grpc}");
        }
        for other in [
            "application/json",
            "application/grpcx",
            "application/grp",
            "text/plain",
        ] {
            assert!(!is_grpc(&HeaderValue::from_static(other)), "{other}");
        }
    }

    #[test]
    fn grpc_timeouts_read_every_unit() {
        let cases = [
            ("100m", Duration::from_millis(100)),
            ("2S", Duration::from_secs(2)),
            ("1M", Duration::from_secs(60)),
            ("1H", Duration::from_secs(3600)),
            ("250u", Duration::from_micros(250)),
            ("99999999n", Duration::from_nanos(99_999_999)),
        ];
        for (value, expected) in cases {
            assert_eq!(timeout(&with_timeout(value)), Some(expected), "{value}");
        }
    }

    #[test]
    fn malformed_grpc_timeouts_are_ignored() {
        for bad in ["", "m", "100", "100x", "123456789m", "-1S", "1.5S", " 1S"] {
            assert_eq!(timeout(&with_timeout(bad)), None, "{bad:?}");
        }
        assert_eq!(timeout(&HeaderMap::new()), None);
    }

    #[test]
    fn a_trailers_only_answer_carries_status_and_encoded_message() {
        let response = answer(Code::Unavailable, "upstream 100% gone\n");
        assert_eq!(response.status(), http::StatusCode::OK);
        let headers = response.headers();
        assert_eq!(headers[CONTENT_TYPE], "application/grpc");
        assert_eq!(headers[GRPC_STATUS], "14");
        assert_eq!(headers[GRPC_MESSAGE], "upstream 100%25 gone%0A");
    }
}
