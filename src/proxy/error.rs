//! The errors the proxy answers with, and the one place that turns them into
//! HTTP responses: upstream faults become 502/504, client faults 4xx, and no
//! internal detail (addresses, OS errors) reaches the client.

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use serde_json::json;
use std::time::Duration;

use crate::proxy::grpc;
use crate::routes::counters::UpstreamErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route for host {host:?} and path {path}")]
    NoRoute { host: Option<String>, path: String },
    #[error("request target is not a path: {0}")]
    BadTarget(String),
    #[error("request has both Content-Length and Transfer-Encoding")]
    AmbiguousFraming,
    /// A body its head says is chunked and that is not: the client and
    /// the router disagree on where the request ends, so nothing more is
    /// read from the connection (answered with `Connection: close`).
    #[error("request body is not framed as its head says: {0}")]
    MalformedBody(String),
    #[error("request headers are over {limit} bytes in total")]
    HeadersTooLarge { limit: usize },
    #[error("route {route}: upstream unreachable: {detail}")]
    UpstreamUnavailable { route: String, detail: String },
    #[error("route {route}: no response headers within {timeout:?}")]
    UpstreamTimeout { route: String, timeout: Duration },
    #[error("route {route}: invalid upstream response: {detail}")]
    InvalidUpstreamResponse { route: String, detail: String },
    #[error("route {route}: an upgrade cannot go to an HTTP/2 upstream")]
    UpgradeUnsupported { route: String },
    #[error("route {route}: rate limited; a token comes in {retry_after:?}")]
    RateLimited {
        route: String,
        retry_after: Duration,
    },
    #[error("route {route}: as many requests in flight as max_in_flight allows")]
    Overloaded { route: String },
}

impl ProxyError {
    /// The value of the JSON `error` field, also used as a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::NoRoute { .. } => "no_route",
            ProxyError::BadTarget(_)
            | ProxyError::AmbiguousFraming
            | ProxyError::MalformedBody(_) => "bad_request",
            ProxyError::HeadersTooLarge { .. } => "headers_too_large",
            ProxyError::UpstreamUnavailable { .. } => "upstream_unavailable",
            ProxyError::UpstreamTimeout { .. } => "upstream_timeout",
            ProxyError::InvalidUpstreamResponse { .. } => "upstream_invalid_response",
            ProxyError::UpgradeUnsupported { .. } => "upgrade_unsupported",
            ProxyError::RateLimited { .. } => "rate_limited",
            ProxyError::Overloaded { .. } => "overloaded",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::BadTarget(_)
            | ProxyError::AmbiguousFraming
            | ProxyError::MalformedBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::UpstreamUnavailable { .. }
            | ProxyError::InvalidUpstreamResponse { .. }
            | ProxyError::UpgradeUnsupported { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The upstream fault behind this error, if it was one: the `kind` its
    /// route's counters count it under.
    pub fn upstream_error_kind(&self) -> Option<UpstreamErrorKind> {
        match self {
            ProxyError::UpstreamUnavailable { .. } => Some(UpstreamErrorKind::Unavailable),
            ProxyError::UpstreamTimeout { .. } => Some(UpstreamErrorKind::Timeout),
            ProxyError::InvalidUpstreamResponse { .. } => Some(UpstreamErrorKind::InvalidResponse),
            ProxyError::NoRoute { .. }
            | ProxyError::BadTarget(_)
            | ProxyError::AmbiguousFraming
            | ProxyError::MalformedBody(_)
            | ProxyError::HeadersTooLarge { .. }
            | ProxyError::UpgradeUnsupported { .. }
            | ProxyError::RateLimited { .. }
            | ProxyError::Overloaded { .. } => None,
        }
    }

    /// The gRPC status a gRPC client is answered with (SPEC 8), and the
    /// message it reads.
    pub fn grpc_code(&self) -> grpc::Code {
        match self {
            ProxyError::NoRoute { .. } => grpc::Code::Unimplemented,
            ProxyError::UpstreamUnavailable { .. }
            | ProxyError::InvalidUpstreamResponse { .. }
            | ProxyError::UpgradeUnsupported { .. } => grpc::Code::Unavailable,
            ProxyError::UpstreamTimeout { .. } => grpc::Code::DeadlineExceeded,
            ProxyError::RateLimited { .. } => grpc::Code::ResourceExhausted,
            ProxyError::Overloaded { .. } => grpc::Code::Unavailable,
            // gRPC's own reading of an HTTP 400 or 431.
            ProxyError::BadTarget(_)
            | ProxyError::AmbiguousFraming
            | ProxyError::MalformedBody(_)
            | ProxyError::HeadersTooLarge { .. } => grpc::Code::Internal,
        }
    }

    /// The answer a client gets: JSON with an HTTP error status, or, for a
    /// gRPC request, a trailers-only gRPC answer. No internal detail (an
    /// address, an OS error) reaches the client either way.
    pub fn into_answer(self, grpc_request: bool) -> Response {
        if !grpc_request {
            return self.into_response();
        }
        let message = match &self {
            ProxyError::NoRoute { .. } => "no route".to_owned(),
            ProxyError::UpstreamUnavailable { route, .. }
            | ProxyError::InvalidUpstreamResponse { route, .. } => {
                format!("{}: route {route}", self.kind())
            }
            ProxyError::UpstreamTimeout { route, timeout } => {
                format!("upstream_timeout: route {route} after {timeout:?}")
            }
            other => other.kind().to_owned(),
        };
        grpc::answer(self.grpc_code(), &message)
    }

    /// Classifies a failed upstream exchange. Connection failures mean the
    /// upstream is not there; anything else means it answered badly.
    pub fn from_upstream(route: &str, error: &reqwest::Error) -> Self {
        let detail = error_chain(error);
        if error.is_connect() {
            ProxyError::UpstreamUnavailable {
                route: route.to_owned(),
                detail,
            }
        } else {
            ProxyError::InvalidUpstreamResponse {
                route: route.to_owned(),
                detail,
            }
        }
    }
}

/// `Retry-After` in whole seconds until a token: rounded up, at least 1
/// (SPEC 7.4).
fn retry_after_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// reqwest's top-level message is generic; the cause is in its sources.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let body = match &self {
            ProxyError::NoRoute { host, path } => {
                json!({ "error": self.kind(), "host": host, "path": path })
            }
            ProxyError::BadTarget(_)
            | ProxyError::AmbiguousFraming
            | ProxyError::MalformedBody(_)
            | ProxyError::HeadersTooLarge { .. } => {
                json!({ "error": self.kind(), "reason": self.to_string() })
            }
            ProxyError::UpstreamUnavailable { route, .. }
            | ProxyError::InvalidUpstreamResponse { route, .. }
            | ProxyError::UpgradeUnsupported { route }
            | ProxyError::RateLimited { route, .. }
            | ProxyError::Overloaded { route } => {
                json!({ "error": self.kind(), "route": route })
            }
            ProxyError::UpstreamTimeout { route, timeout } => {
                json!({ "error": self.kind(), "route": route, "timeout_ms": timeout.as_millis() as u64 })
            }
        };
        let close = matches!(self, ProxyError::MalformedBody(_));
        let retry_after = match &self {
            ProxyError::RateLimited { retry_after, .. } => Some(retry_after_seconds(*retry_after)),
            _ => None,
        };
        let mut response = (self.status(), Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
        }
        if close {
            response.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}
