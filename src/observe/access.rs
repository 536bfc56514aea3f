//! What each request leaves behind: one access-log event and its counts in
//! the route's metrics, both written when the response body ends.
//!
//! A streamed body's size and duration are only known at its end, so the
//! response body is wrapped and the [`Exchange`] is finished exactly once:
//! when the body yields its last frame, when it fails, or when hyper drops
//! it (the client went away, or a body hyper never needed to poll). The
//! wrapper also keeps the request's table snapshot until then (SPEC 4.1:
//! the request keeps it to its end), which is what
//! `switchyard_config_generations_live` counts.
//!
//! Log fields: `method`, `host` (as sent), `path` (as sent, without the
//! query, which may carry secrets), `route` (`_none` when unrouted),
//! `upstream` (the base URL picked, `-` for `respond` routes; every URL
//! tried, joined by `,`, when a try failed and the next went elsewhere), `status`,
//! `duration_ms` (request received to body end), `bytes` (response body
//! bytes handed to the connection; headers not included), `request_id`,
//! `outcome` (`complete`, `aborted` when the upstream body broke off,
//! `incomplete` when the client left first), `listener` (`proxy`, or `tls`
//! for the TLS listener), and `error` for proxy errors.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, Uri};
use http_body::{Body as _, Frame, SizeHint};

use crate::observe::metrics::NO_ROUTE;
use crate::routes::counters::UpstreamErrorKind;
use crate::routes::table::{Route, RouteTable};
use crate::routes::upstreams::Tried;

/// The `tracing` target of access-log events, so they can be filtered on
/// their own: `SWITCHYARD_LOG=info,switchyard::access=off`.
pub const TARGET: &str = "switchyard::access";

/// Which route and upstream a request went to, filled in by the proxy as it
/// decides; positions into the request's table snapshot.
#[derive(Debug, Default, Clone, Copy)]
pub struct Routed {
    pub route: Option<usize>,
    /// Every upstream tried, in order; the last one answered (or failed).
    pub upstreams: Tried,
}

/// A request being observed, from its arrival to the end of its response.
#[derive(Debug)]
pub struct Exchange {
    table: Arc<RouteTable>,
    started: Instant,
    method: Method,
    // `Uri` and `HeaderValue` clone by reference count, not by copying.
    uri: Uri,
    host: Option<HeaderValue>,
    request_id: HeaderValue,
    listener: &'static str,
    routed: Routed,
    status: StatusCode,
    error: Option<&'static str>,
    upstream_error: Option<UpstreamErrorKind>,
    bytes: u64,
    expected_bytes: Option<u64>,
}

/// How a response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Complete,
    Aborted,
    Incomplete,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::Aborted => "aborted",
            Outcome::Incomplete => "incomplete",
        }
    }
}

impl Exchange {
    /// Starts observing; call before the request is consumed.
    /// `host` is the request's authority as sent (see
    /// [`crate::proxy::headers::request_authority`]).
    pub fn begin<B>(
        table: Arc<RouteTable>,
        request: &http::Request<B>,
        host: Option<HeaderValue>,
        request_id: HeaderValue,
        listener: &'static str,
    ) -> Self {
        Exchange {
            table,
            started: Instant::now(),
            method: request.method().clone(),
            uri: request.uri().clone(),
            host,
            request_id,
            listener,
            routed: Routed::default(),
            status: StatusCode::OK,
            error: None,
            upstream_error: None,
            bytes: 0,
            expected_bytes: None,
        }
    }

    /// Wraps the response so that the exchange finishes when its body does.
    /// `error` is the proxy error the response was made from, if any.
    pub fn respond(
        mut self,
        response: Response,
        routed: Routed,
        error: Option<(&'static str, Option<UpstreamErrorKind>)>,
    ) -> Response {
        self.routed = routed;
        self.status = response.status();
        if let Some((kind, upstream)) = error {
            self.error = Some(kind);
            self.upstream_error = upstream;
        }
        let (parts, inner) = response.into_parts();
        self.expected_bytes = inner.size_hint().exact();
        let body = ObservedBody {
            inner,
            exchange: Some(self),
        };
        Response::from_parts(parts, Body::new(body))
    }

    fn finish(self, outcome: Outcome) {
        let elapsed = self.started.elapsed();
        let route = self.routed.route.and_then(|i| self.table.routes().get(i));
        let metrics = route.map_or(&self.table.unrouted, |route| &route.metrics);
        metrics.record(self.status, elapsed);
        if let Some(kind) = self.upstream_error {
            metrics.upstream_error(kind);
        }
        let upstream = route.map_or(Cow::Borrowed("-"), |r| {
            tried_upstreams(r, &self.routed.upstreams)
        });
        if outcome == Outcome::Aborted && !self.routed.upstreams.is_empty() {
            metrics.upstream_error(UpstreamErrorKind::BodyAborted);
        }
        tracing::info!(
            target: TARGET,
            method = self.method.as_str(),
            host = self.host.as_ref().and_then(|h| h.to_str().ok()),
            path = self.uri.path(),
            route = route.map_or(NO_ROUTE, |r| r.name()),
            upstream = &*upstream,
            status = self.status.as_u16(),
            // Whole microseconds, so the number prints short.
            duration_ms = elapsed.as_micros() as f64 / 1000.0,
            bytes = self.bytes,
            request_id = self.request_id.to_str().unwrap_or("-"),
            outcome = outcome.label(),
            listener = self.listener,
            error = self.error,
            "request"
        );
    }

    /// Whether a body dropped before its last frame had nothing left to
    /// send: hyper need not poll a body whose length it already knows, and
    /// sends none at all for HEAD, 1xx, 204 and 304.
    fn nothing_left(&self, inner: &Body) -> bool {
        inner.is_end_stream()
            || self.expected_bytes == Some(self.bytes)
            || self.method == Method::HEAD
            || self.status.is_informational()
            || self.status == StatusCode::NO_CONTENT
            || self.status == StatusCode::NOT_MODIFIED
    }
}

/// The upstreams a request tried, as the log names them: the base URL, or
/// several joined by `,` when the first ones failed; `-` for none.
fn tried_upstreams<'r>(route: &'r Route, tried: &Tried) -> Cow<'r, str> {
    let mut urls = tried
        .as_slice()
        .iter()
        .filter_map(|&i| route.upstream(usize::from(i)))
        .map(|u| u.spec.url.as_str());
    match (urls.next(), tried.len()) {
        (None, _) => Cow::Borrowed("-"),
        (Some(only), 1) => Cow::Borrowed(only),
        (Some(first), _) => {
            let mut all = first.to_owned();
            for url in urls {
                all.push(',');
                all.push_str(url);
            }
            Cow::Owned(all)
        }
    }
}

/// A response body that counts its bytes and finishes its exchange.
struct ObservedBody {
    inner: Body,
    exchange: Option<Exchange>,
}

impl http_body::Body for ObservedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(exchange)) = (frame.data_ref(), this.exchange.as_mut()) {
                    exchange.bytes += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(exchange) = this.exchange.take() {
                    exchange.finish(Outcome::Aborted);
                }
            }
            Poll::Ready(None) => {
                if let Some(exchange) = this.exchange.take() {
                    exchange.finish(Outcome::Complete);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        if let Some(exchange) = self.exchange.take() {
            let outcome = if exchange.nothing_left(&self.inner) {
                Outcome::Complete
            } else {
                Outcome::Incomplete
            };
            exchange.finish(outcome);
        }
    }
}
