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
//! Log fields: `method`, `host` (as sent), `path` (as sent), `query` (as
//! sent, absent without one; `check --replay` routes it, SPEC 10.3: a
//! service that puts secrets in query strings should keep its access log
//! as guarded as the requests), `route` (`_none` when unrouted),
//! `upstream` (the base URL picked, `-` for `respond` routes; every URL
//! tried, joined by `,`, when a try failed and the next went elsewhere), `status`,
//! `duration_ms` (request received to body end), `bytes` (response body
//! bytes handed to the connection; headers not included), `request_id`,
//! `outcome` (`complete`, `aborted` when the upstream body broke off,
//! `incomplete` when the client left first), `listener` (`proxy`, or `tls`
//! for the TLS listener), `protocol` (what the client spoke: `HTTP/1.1` or
//! `HTTP/2`), `upstream_protocol` (what the upstream that answered spoke;
//! absent when none did), `retries` (why each try after the first was
//! made: `connect`, `reset`, `timeout`, `status`, by `,`; absent when
//! none), `mirrored` (true when a copy went to the route's mirror),
//! `error` for proxy errors (among them `rate_limited` and `overloaded`),
//! and, for a request traced (SPEC 9), `trace_id` and `span_id`: its server
//! span's, which ends here too.

use std::borrow::Cow;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::response::Response;
use axum::BoxError;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, Uri, Version};
use http_body::{Frame, SizeHint};

use crate::observe::log_format::{AccessLine, LineFormat};
use crate::observe::log_writer::BatchedStderr;
use crate::observe::metrics::NO_ROUTE;
use crate::routes::balance::{Tried, MAX_ATTEMPTS};
use crate::routes::counters::{InFlight, RetryReason, UpstreamErrorKind};
use crate::routes::host::host_of_authority;
use crate::routes::table::{Route, RouteTable};
use crate::trace::{ServerEnd, ServerSpan};

/// The `tracing` target of access-log events, so they can be filtered on
/// their own: `SWITCHYARD_LOG=info,switchyard::access=off`.
pub const TARGET: &str = "switchyard::access";

/// Where access lines go when the process has set up its log output: the
/// binary does at start-up ([`write_lines_to`]). Without it (the crate
/// used as a library, in-process tests) each line is a `tracing` event.
static OUTPUT: OnceLock<AccessOutput> = OnceLock::new();

/// The log output access lines are written straight into, in the format of
/// every other line.
#[derive(Clone)]
pub struct AccessOutput {
    pub format: LineFormat,
    /// `None` writes each line to stderr at once: the fallback when the
    /// batching writer could not start.
    pub batched: Option<BatchedStderr>,
}

/// Sends access lines to `output` from now on; the first call wins.
pub fn write_lines_to(output: AccessOutput) {
    let _ = OUTPUT.set(output);
}

impl AccessOutput {
    fn write(&self, line: &AccessLine<'_>) {
        let now = SystemTime::now();
        match &self.batched {
            Some(batched) => batched.append(|out| line.write(self.format, TARGET, now, out)),
            None => {
                let mut out = Vec::with_capacity(256);
                line.write(self.format, TARGET, now, &mut out);
                // Nowhere to report a failed write to.
                let _ = std::io::stderr().write_all(&out);
            }
        }
    }
}

/// The access line as a `tracing` event, for a process that did not call
/// [`write_lines_to`].
fn trace_event(line: &AccessLine<'_>) {
    tracing::info!(
        target: TARGET,
        method = line.method,
        host = line.host,
        path = line.path,
        query = line.query,
        route = line.route,
        upstream = line.upstream,
        status = line.status,
        duration_ms = line.duration.as_micros() as f64 / 1000.0,
        bytes = line.bytes,
        request_id = line.request_id,
        outcome = line.outcome,
        listener = line.listener,
        protocol = line.protocol,
        upstream_protocol = line.upstream_protocol,
        retries = line.retries,
        mirrored = line.mirrored,
        error = line.error,
        trace_id = line.trace_id,
        span_id = line.span_id,
        "request"
    );
}

/// Which route and upstream a request went to, filled in by the proxy as it
/// decides; positions into the request's table snapshot.
#[derive(Debug, Default, Clone, Copy)]
pub struct Routed {
    pub route: Option<usize>,
    /// Every upstream tried, in order; the last one answered (or failed).
    pub upstreams: Tried,
    /// Why each try after the first was made, in order.
    pub retries: RetryLog,
    /// The protocol the upstream that answered spoke.
    pub upstream_version: Option<Version>,
    /// A copy of the request went to the route's mirror.
    pub mirrored: bool,
}

/// The reasons of a request's retries, as the access line lists them.
#[derive(Debug, Default, Clone, Copy)]
pub struct RetryLog {
    reasons: [Option<RetryReason>; MAX_ATTEMPTS - 1],
}

impl RetryLog {
    pub fn push(&mut self, reason: RetryReason) {
        if let Some(slot) = self.reasons.iter_mut().find(|slot| slot.is_none()) {
            *slot = Some(reason);
        }
    }

    /// `connect,status`: the reasons in order; `None` when there were none.
    fn joined(&self) -> Option<String> {
        let labels: Vec<&str> = self.reasons.iter().flatten().map(|r| r.label()).collect();
        (!labels.is_empty()).then(|| labels.join(","))
    }
}

/// What a request holds until its response ends: its place in its route's
/// in-flight count (SPEC 7.4) and in its upstream's (SPEC 7.6), and its
/// server span when it is traced (SPEC 9).
#[derive(Debug, Default)]
pub struct Holds {
    pub route: Option<InFlight>,
    pub upstream: Option<InFlight>,
    pub trace: Option<ServerSpan>,
}

impl Holds {
    pub fn is_empty(&self) -> bool {
        self.route.is_none() && self.upstream.is_none() && self.trace.is_none()
    }
}

/// A request being observed, from its arrival to the end of its response.
///
/// Boxed: the request's future holds it from the start and the response
/// body carries it to the end. By value, its ~300 bytes were copied at each
/// hand-over, onto stack and heap lines the request would not otherwise
/// touch; one allocation costs less (cachegrind, per proxied request:
/// ~350 fewer instructions).
#[derive(Debug)]
pub struct Exchange(Box<ExchangeState>);

/// What an [`Exchange`] has seen of its request so far.
#[derive(Debug)]
struct ExchangeState {
    table: Arc<RouteTable>,
    started: Instant,
    method: Method,
    version: Version,
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
    /// Released when the exchange finishes, with the response body.
    holds: Holds,
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
        Exchange(Box::new(ExchangeState {
            table,
            started: Instant::now(),
            method: request.method().clone(),
            version: request.version(),
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
            holds: Holds::default(),
        }))
    }

    /// Wraps the response so that the exchange finishes when its body does.
    /// `error` is the proxy error the response was made from, if any. The
    /// body is boxed here, once: an upstream's body comes unboxed, so the
    /// response is not boxed twice over.
    pub fn respond<B>(
        self,
        response: http::Response<B>,
        routed: Routed,
        holds: Holds,
        error: Option<(&'static str, Option<UpstreamErrorKind>)>,
    ) -> Response
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let mut state = self.0;
        state.routed = routed;
        state.holds = holds;
        state.status = response.status();
        if let Some((kind, upstream)) = error {
            state.error = Some(kind);
            state.upstream_error = upstream;
        }
        let (parts, inner) = response.into_parts();
        state.expected_bytes = inner.size_hint().exact();
        let body = ObservedBody {
            inner,
            exchange: Some(state),
        };
        Response::from_parts(parts, Body::new(body))
    }
}

impl ExchangeState {
    fn finish(mut self: Box<Self>, outcome: Outcome) {
        let elapsed = self.started.elapsed();
        let route = self.routed.route.and_then(|i| self.table.routes().get(i));
        let span = self
            .holds
            .trace
            .take()
            .map(|span| self.end_span(span, route));
        let metrics = route.map_or(&self.table.unrouted, |route| &route.metrics);
        metrics.record(self.status, elapsed);
        if let Some(kind) = self.upstream_error {
            metrics.upstream_error(kind);
        }
        if outcome == Outcome::Aborted && !self.routed.upstreams.is_empty() {
            metrics.upstream_error(UpstreamErrorKind::BodyAborted);
        }
        if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
            return;
        }
        let upstream = route.map_or(Cow::Borrowed("-"), |r| {
            tried_upstreams(r, &self.routed.upstreams)
        });
        let retries = self.routed.retries.joined();
        let line = AccessLine {
            method: self.method.as_str(),
            host: self.host.as_ref().and_then(|h| h.to_str().ok()),
            path: self.uri.path(),
            query: self.uri.query().filter(|q| !q.is_empty()),
            route: route.map_or(NO_ROUTE, |r| r.name()),
            upstream: &upstream,
            status: self.status.as_u16(),
            duration: elapsed,
            bytes: self.bytes,
            request_id: self.request_id.to_str().unwrap_or("-"),
            outcome: outcome.label(),
            listener: self.listener,
            protocol: protocol_name(self.version),
            upstream_protocol: self.routed.upstream_version.map(protocol_name),
            retries: retries.as_deref(),
            mirrored: self.routed.mirrored,
            error: self.error,
            trace_id: span.as_ref().map(|ids| ids.trace_id()),
            span_id: span.as_ref().map(|ids| ids.span_id()),
        };
        match OUTPUT.get() {
            Some(output) => output.write(&line),
            None => trace_event(&line),
        }
    }

    /// Ends the request's server span with what the access line says, and
    /// returns its ids for the line.
    fn end_span(&self, span: ServerSpan, route: Option<&Route>) -> crate::trace::SpanIds {
        let ids = span.ids();
        let host = self.host.as_ref().and_then(host_of_authority);
        span.end(ServerEnd {
            method: &self.method,
            path: self.uri.path(),
            host: host.as_deref(),
            route: route.map(|r| (r.name(), r.spec.prefix.as_str())),
            config_version: self.table.meta.version,
            status: self.status.as_u16(),
            version: self.version,
        });
        ids
    }

    /// Whether a body dropped before its last frame had nothing left to
    /// send: hyper need not poll a body whose length it already knows, and
    /// sends none at all for HEAD, 1xx, 204 and 304.
    fn nothing_left(&self, inner: &impl http_body::Body) -> bool {
        inner.is_end_stream()
            || self.expected_bytes == Some(self.bytes)
            || self.method == Method::HEAD
            || self.status.is_informational()
            || self.status == StatusCode::NO_CONTENT
            || self.status == StatusCode::NOT_MODIFIED
    }
}

/// How the access line names an HTTP version.
fn protocol_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
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
struct ObservedBody<B: http_body::Body> {
    inner: B,
    exchange: Option<Box<ExchangeState>>,
}

impl<B> http_body::Body for ObservedBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner)
            .poll_frame(cx)
            .map_err(axum::Error::new);
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

impl<B: http_body::Body> Drop for ObservedBody<B> {
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    /// Collects what a tracing subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .expect("not poisoned")
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The keys of a JSON line in the order they are written.
    fn keys(line: &str) -> Vec<String> {
        let value: serde_json::Value = serde_json::from_str(line).expect("one JSON object");
        let mut keys: Vec<(usize, String)> = value
            .as_object()
            .expect("an object")
            .keys()
            .map(|key| (line.find(&format!("\"{key}\":")).expect("key"), key.clone()))
            .collect();
        keys.sort();
        keys.into_iter().map(|(_, key)| key).collect()
    }

    #[test]
    fn json_access_lines_are_what_tracing_subscriber_writes_for_the_event() {
        let captured = Captured::default();
        for (host, error) in [(Some("a.test"), None), (None, Some("no_route"))] {
            let line = AccessLine {
                method: "POST",
                host,
                path: "/a\"b\\c",
                query: Some("q=\"1\""),
                route: "api",
                upstream: "http://127.0.0.1:9/,http://127.0.0.1:10/",
                status: 502,
                duration: Duration::from_micros(12_340),
                bytes: 0,
                request_id: "id-\u{7f}",
                outcome: "aborted",
                listener: "tls",
                protocol: "HTTP/2",
                upstream_protocol: Some("HTTP/1.1"),
                retries: Some("connect,status"),
                mirrored: true,
                error,
                trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
                span_id: Some("00f067aa0ba902b7"),
            };
            captured.0.lock().expect("not poisoned").clear();
            let sink = captured.clone();
            let subscriber = tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_writer(move || sink.clone())
                .finish();
            tracing::subscriber::with_default(subscriber, || trace_event(&line));
            let theirs =
                String::from_utf8(captured.0.lock().expect("not poisoned").clone()).expect("UTF-8");
            let mut ours = Vec::new();
            line.write(LineFormat::Json, TARGET, SystemTime::now(), &mut ours);
            let ours = String::from_utf8(ours).expect("UTF-8");

            assert_eq!(keys(&ours), keys(&theirs), "{ours}\n{theirs}");
            let without_time = |text: &str| {
                let mut value: serde_json::Value = serde_json::from_str(text).expect("JSON");
                value
                    .as_object_mut()
                    .expect("an object")
                    .remove("timestamp");
                value
            };
            assert_eq!(without_time(&ours), without_time(&theirs));
        }
    }
}
