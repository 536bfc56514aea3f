//! The request path: take one snapshot of the route table, pick the route,
//! forward the request, and stream the answer back.
//!
//! The snapshot is an `Arc` taken with `load_full()` before the first
//! `.await` and kept to the end of the request, so a reload never changes the
//! table under a request and never waits for one. Routing, forwarding,
//! the route timeout (a thread-local list of timers, see `deadline`),
//! metrics and the access line (a thread-local buffer, see `log_writer`)
//! take no lock. The one lock here is `BodyHandoff`'s, on routes with a
//! second upstream to try, taken once per try and uncontended. Nothing is
//! ever held across an `.await`.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::body::{Body, BodyDataStream};
use axum::extract::Request;
use axum::handler::Handler;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderValue, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper_util::rt::TokioIo;
use tokio::sync::Notify;

use url::Url;

use crate::observe::access::{Exchange, Routed};
use crate::proxy::deadline::timeout_at;
use crate::proxy::error::ProxyError;
use crate::proxy::headers::{
    ensure_request_id, request_authority, set_forwarded, strip_hop_by_hop, upgrade_requested,
    REQUEST_ID,
};
use crate::proxy::server::{MakeApp, Peer, MAX_HEADER_BYTES};
use crate::routes::config::RespondSpec;
use crate::routes::counters::UpstreamErrorKind;
use crate::routes::host::host_of_authority;
use crate::routes::path::{canonical_path, upstream_path};
use crate::routes::table::{Destination, RequestFacts, Route, RouteTable};
use crate::routes::upstreams::{now_ms, Balancer, RouteUpstream, Tried};

/// Idle upstream connections are closed after this long; below the common
/// 60 s to 120 s keep-alive of upstream servers, so the router is the side
/// that closes and never writes into a connection the upstream just dropped.
pub const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// Idle connections kept per upstream host: enough for a busy sidecar's
/// bursts without holding hundreds of sockets open on the upstream.
pub const UPSTREAM_MAX_IDLE_PER_HOST: usize = 256;

/// A TCP connect that takes longer than this means the upstream is not
/// there; the route `timeout` still bounds the whole wait for headers.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which proxy listener a request came in on: what `X-Forwarded-Proto`
/// says and the access log's `listener` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Plain,
    Tls,
}

impl Listener {
    pub fn scheme(self) -> &'static str {
        match self {
            Listener::Plain => "http",
            Listener::Tls => "https",
        }
    }

    /// The label of the listener in logs and in `switchyard_connections_open`.
    pub fn name(self) -> &'static str {
        match self {
            Listener::Plain => "proxy",
            Listener::Tls => "tls",
        }
    }
}

/// What the proxy handler needs: the live table and the upstream client.
#[derive(Clone)]
pub struct ProxyState {
    pub live: Arc<ArcSwap<RouteTable>>,
    pub client: reqwest::Client,
    /// Set per listener, so a request learns its scheme without a lookup.
    pub listener: Listener,
    /// Per-request metrics and access log; off only to measure their cost.
    pub observe: bool,
    /// The upgraded connections this worker relays.
    pub tunnels: Tunnels,
}

impl ProxyState {
    pub fn new(live: Arc<ArcSwap<RouteTable>>, tunnels: Tunnels) -> Result<Self, reqwest::Error> {
        Ok(ProxyState {
            live,
            client: upstream_client()?,
            listener: Listener::Plain,
            observe: true,
            tunnels,
        })
    }
}

/// The upgraded connections (WebSocket and others) one worker relays. They
/// outlive the HTTP connection they came from, so the drain waits for them
/// separately and the worker closes whatever is left at the deadline.
#[derive(Clone, Debug)]
pub struct Tunnels {
    here: Arc<(AtomicUsize, Notify)>,
    /// The process-wide gauge (`switchyard_tunnels_open`).
    gauge: Arc<AtomicUsize>,
}

impl Tunnels {
    pub fn new(gauge: Arc<AtomicUsize>) -> Self {
        Tunnels {
            here: Arc::default(),
            gauge,
        }
    }

    fn open(&self) -> TunnelGuard {
        self.here.0.fetch_add(1, Ordering::Relaxed);
        self.gauge.fetch_add(1, Ordering::Relaxed);
        TunnelGuard(self.clone())
    }

    /// Returns once this worker relays no tunnel, or at `deadline`, with
    /// the number still open. The caller closes them by dropping the
    /// worker's runtime, which cancels their tasks and closes both sockets.
    pub async fn drained_by(&self, deadline: tokio::time::Instant) -> usize {
        loop {
            let open = self.here.0.load(Ordering::Acquire);
            if open == 0 {
                return 0;
            }
            tokio::select! {
                () = self.here.1.notified() => {}
                () = tokio::time::sleep_until(deadline) => return open,
            }
        }
    }
}

/// Counts one tunnel until its task ends, however it ends.
struct TunnelGuard(Tunnels);

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.0.gauge.fetch_sub(1, Ordering::Relaxed);
        if self.0.here.0.fetch_sub(1, Ordering::AcqRel) == 1 {
            // A stored permit if nobody waits yet: the drain sees it.
            self.0.here.1.notify_one();
        }
    }
}

/// A client set up to relay, not to browse: no redirects followed, no
/// decompression (the crate features are off, and nothing re-enables them),
/// no proxy taken from the environment, and no retries of its own: which
/// request may go to an upstream twice is the router's decision alone
/// (`forward`), and reqwest's default policy would otherwise copy every
/// request's headers in case an HTTP/2 upstream refuses it, which an
/// HTTP/1 upstream never does. It adds one header of its own:
/// `Accept: */*` when the request has none, which reqwest cannot be told
/// not to do; RFC 9110 12.5.1 gives a missing Accept the same meaning.
pub fn upstream_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .retry(reqwest::retry::never().max_retries_per_request(0))
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .connect_timeout(UPSTREAM_CONNECT_TIMEOUT)
        .pool_idle_timeout(UPSTREAM_IDLE_TIMEOUT)
        .pool_max_idle_per_host(UPSTREAM_MAX_IDLE_PER_HOST)
        .build()
}

/// What the requests of one client connection share: the worker's proxy
/// state and the connection's client end. Made once per connection, so a
/// request reaches both through one reference count.
pub struct ClientConnection {
    pub proxy: ProxyState,
    pub peer: Peer,
}

/// The proxy listener's service, one per connection: every method and path
/// goes to one handler. It is served as a service of its own, not as the
/// fallback of an axum `Router`, whose path matching and layers of boxed
/// services a catch-all route would pay for on every request without using
/// them.
pub fn app(state: ProxyState) -> impl MakeApp {
    move |peer| {
        let connection = ClientConnection {
            proxy: state.clone(),
            peer,
        };
        Unboxed(handle).with_state(Arc::new(connection))
    }
}

/// An axum handler made of a function from the request and the state to
/// the response's future, which it boxes as it comes. axum's handlers of
/// extractors box a future that runs the extractors and then the function,
/// and every poll of the request goes through that future's frame, which
/// holds the extractors' work too: ~0.7 KiB more stack under each poll of
/// the upstream request, and code the proxy never needed. The box stays:
/// unboxed, the ~1 KB future is moved into hyper's dispatcher through the
/// service's own future, and a request misses the L1 data cache more, not
/// less (simulated, per small GET: 1,386 unboxed, 1,270 boxed here, 1,300
/// through axum's box; instructions 70.7k against 71.1k).
#[derive(Clone, Copy)]
struct Unboxed<F>(F);

impl<F, Fut, S> Handler<Unboxed<()>, S> for Unboxed<F>
where
    F: FnOnce(Request, S) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    type Future = std::pin::Pin<Box<Fut>>;

    fn call(self, request: Request, state: S) -> Self::Future {
        Box::pin((self.0)(request, state))
    }
}

/// Not an `async fn`: one keeps its arguments apart from its locals, so the
/// request would take room twice in the future that is written on every
/// request (on cold cache lines). The work before the first `.await` runs
/// here; the future holds only what the rest needs.
fn handle(
    mut request: Request,
    connection: Arc<ClientConnection>,
) -> impl Future<Output = Response> + Send + 'static {
    let state = &connection.proxy;
    let table = state.live.load_full();
    // Room for the headers the proxy adds (request id, X-Forwarded-For,
    // -Proto and -Host), so the map grows once, not once per header.
    request.headers_mut().reserve(4);
    let request_id = ensure_request_id(request.headers_mut());
    // Read once: routed on, forwarded as `Host`, and logged.
    let authority = request_authority(request.headers(), request.uri());
    let exchange = state.observe.then(|| {
        Exchange::begin(
            Arc::clone(&table),
            &request,
            authority.clone(),
            request_id.clone(),
            state.listener.name(),
        )
    });
    async move {
        let mut routed = Routed::default();
        // Routing is synchronous; only the forwarding awaits, so the request
        // lives in one future, not in one per layer of calls.
        let answer = match pick_route(&table, &request, authority.as_ref()) {
            Err(error) => Err(error),
            Ok(Picked {
                route,
                path,
                chunked,
            }) => {
                routed.route = Some(route.index);
                // Only a chunked body can be framed other than its head
                // says; hyper finds out when it decodes the first chunk.
                let request = if chunked {
                    first_chunk_decoded(request, route.spec.timeout).await
                } else {
                    Ok(request)
                };
                match (request, route.destination()) {
                    (Err(error), _) => Err(error),
                    (Ok(_), Destination::Respond(respond)) => {
                        Ok(Answer::Made(fixed_response(respond)))
                    }
                    (Ok(request), Destination::Upstreams(balancer)) => {
                        let tried = &mut routed.upstreams;
                        forward(
                            &connection,
                            route,
                            balancer,
                            tried,
                            &path,
                            request,
                            authority,
                        )
                        .await
                    }
                }
            }
        };
        match answer {
            Ok(Answer::Upstream(response)) => {
                answer_with(response, request_id, exchange, routed, None)
            }
            Ok(Answer::Made(response)) => answer_with(response, request_id, exchange, routed, None),
            Err(error) => answer_error(error, request_id, exchange, routed),
        }
    }
}

/// The client's answer to a request that failed. Out of line, as every
/// failure path here is: its JSON body and log line would otherwise widen
/// the frame of the handler's poll, under which every request runs.
#[cold]
#[inline(never)]
fn answer_error(
    error: ProxyError,
    request_id: HeaderValue,
    exchange: Option<Exchange>,
    routed: Routed,
) -> Response {
    let upstream = error.upstream_error_kind();
    if upstream.is_some() {
        // The detail (an OS error, an address) is for the operator, never
        // for the client.
        tracing::warn!(%error, request_id = request_id.to_str().unwrap_or("-"), "upstream request failed");
    }
    let failure = Some((error.kind(), upstream));
    answer_with(error.into_response(), request_id, exchange, routed, failure)
}

/// A response on its way to the client: an upstream's, whose body is boxed
/// only once, by [`answer_with`], or one made here.
enum Answer {
    Upstream(http::Response<reqwest::Body>),
    Made(Response),
}

/// `response` as the client gets it: with the request id, and observed to
/// the end of its body when requests are observed.
fn answer_with<B>(
    mut response: http::Response<B>,
    request_id: HeaderValue,
    exchange: Option<Exchange>,
    routed: Routed,
    error: Option<(&'static str, Option<UpstreamErrorKind>)>,
) -> Response
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<axum::BoxError>,
{
    response.headers_mut().insert(REQUEST_ID, request_id);
    match exchange {
        Some(exchange) => exchange.respond(response, routed, error),
        None => response.map(Body::new),
    }
}

/// What [`pick_route`] found for a request.
struct Picked<'t> {
    route: &'t Route,
    /// The canonical path the route was matched on.
    path: String,
    /// The head says `Transfer-Encoding`, so hyper decodes the body as
    /// chunked (it refuses any other transfer coding of a request).
    chunked: bool,
}

/// The route `request` takes in `table`, and the canonical path it was
/// matched on. Out of line, so that its locals are not part of the frame
/// that every later poll of the request runs under.
#[inline(never)]
fn pick_route<'t>(
    table: &'t RouteTable,
    request: &Request,
    authority: Option<&HeaderValue>,
) -> Result<Picked<'t>, ProxyError> {
    let head = HeadFacts::of(request.headers());
    if head.bytes > MAX_HEADER_BYTES {
        return Err(ProxyError::HeadersTooLarge {
            limit: MAX_HEADER_BYTES,
        });
    }
    if head.transfer_encoding && head.content_length {
        // Two framings: the next hop may pick the other one and read the
        // rest of the body as a second request (smuggling). hyper 1.x gets
        // here first: Transfer-Encoding wins, Content-Length is dropped in
        // either order and the connection closes after the answer (RFC 9112
        // 6.3; tests/limits.rs). This guards against a hyper that stops.
        return Err(ProxyError::AmbiguousFraming);
    }
    let path =
        canonical_path(request.uri().path()).map_err(|e| ProxyError::BadTarget(e.to_string()))?;
    let host = authority.and_then(host_of_authority);
    let facts = RequestFacts {
        host: host.as_deref(),
        path: &path,
        method: request.method(),
        headers: request.headers(),
    };
    match table.lookup(&facts) {
        Some(route) => Ok(Picked {
            route,
            path,
            chunked: head.transfer_encoding,
        }),
        None => Err(ProxyError::NoRoute {
            host: host.map(|host| host.into_owned()),
            path,
        }),
    }
}

/// What routing checks in a request's headers, from one pass over them
/// (a name compared by its standard-header index, not hashed per lookup).
struct HeadFacts {
    /// Their size as HTTP/1.1 writes them: each line's name, `: `, value
    /// and CRLF.
    bytes: usize,
    transfer_encoding: bool,
    content_length: bool,
}

impl HeadFacts {
    fn of(headers: &http::HeaderMap) -> Self {
        let mut facts = HeadFacts {
            bytes: 0,
            transfer_encoding: false,
            content_length: false,
        };
        for (name, value) in headers {
            facts.bytes += name.as_str().len() + value.len() + 4;
            if name == TRANSFER_ENCODING {
                facts.transfer_encoding = true;
            } else if name == CONTENT_LENGTH {
                facts.content_length = true;
            }
        }
        facts
    }
}

/// `request` once hyper has decoded the first chunk of its body (or its
/// end), with that chunk put back in front of the rest; or the 400 for a
/// body that is not chunked at all.
///
/// A head whose `Transfer-Encoding` line ends in a bare LF is read by hyper
/// (through httparse, which accepts LF line endings as RFC 9112 2.2 lets a
/// recipient) as a chunked request, where a stricter hop sees one header
/// line running into the next, and frames the body by its `Content-Length`
/// or not at all. The bytes that follow such a head are then not a chunked
/// body, and hyper's decoder fails on the first chunk-size line. By then
/// hyper has handed over only the parsed head, in which the bare LF leaves
/// no trace, so this is where the disagreement shows: before any upstream
/// is contacted, at the cost of one await for chunked requests alone (no
/// scan of any head's bytes). A head with both framings is closed after
/// its answer by hyper (see `pick_route`); this one is refused outright
/// and closed too (see `ProxyError::MalformedBody`).
///
/// A client that holds its first chunk back for longer than `wait` (the
/// route's timeout) has its request forwarded as it is, the body still
/// to come: waiting longer would hold a request the upstream might
/// already answer.
#[cold]
#[inline(never)]
fn first_chunk_decoded(
    request: Request,
    wait: Duration,
) -> std::pin::Pin<Box<dyn Future<Output = Result<Request, ProxyError>> + Send>> {
    Box::pin(async move {
        let (parts, mut body) = request.into_parts();
        let first = match tokio::time::timeout(wait, body.frame()).await {
            Err(_elapsed) => return Ok(Request::from_parts(parts, body)),
            Ok(Some(Err(error))) => return Err(ProxyError::MalformedBody(error.to_string())),
            Ok(first) => first,
        };
        let frames = futures_util::stream::iter(first).chain(BodyStream::new(body));
        Ok(Request::from_parts(
            parts,
            Body::new(StreamBody::new(frames)),
        ))
    })
}

fn fixed_response(respond: &RespondSpec) -> Response {
    let mut response = Response::new(Body::from(respond.body.clone()));
    *response.status_mut() = respond.status;
    *response.headers_mut() = respond.headers.clone();
    response
}

/// The URL a request for the canonical `path` with `query` is sent to on
/// `upstream`: the upstream's origin, parsed once per table, with the path
/// and query set on a copy. A copy and two setters cost a quarter of
/// parsing the whole URL again, which validates the host (IDNA included)
/// on every request. The setters apply the rules a parse would, and escape
/// a `#` in the query instead of starting a fragment, as the query meant.
fn request_url(route: &Route, upstream: &RouteUpstream, path: &str, query: Option<&str>) -> Url {
    let path = upstream_path(
        upstream.spec.url.path(),
        &route.spec.prefix,
        path,
        route.spec.strip_prefix,
    );
    let mut url = upstream.origin.clone();
    url.set_path(&path);
    url.set_query(query);
    url
}

/// Sends the request to the route's upstreams, trying the next one where
/// that is safe, and returns the first answer. Not an `async fn`, for the
/// reason [`handle`] is not: the request is taken apart here, before the
/// future, which keeps only the parts.
fn forward<'a>(
    connection: &'a ClientConnection,
    route: &'a Route,
    balancer: &'a Balancer,
    tried: &'a mut Tried,
    path: &'a str,
    mut request: Request,
    original_host: Option<HeaderValue>,
) -> impl Future<Output = Result<Answer, ProxyError>> + Send + 'a {
    let state = &connection.proxy;
    let upgrade = upgrade_requested(request.headers()).then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();

    // The host routed on is the host forwarded; for HTTP/2 this turns
    // `:authority` into `Host`.
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers, upgrade.is_some());
    let proto = state.listener.scheme();
    let client = &connection.peer.forwarded_for;
    set_forwarded(headers, client, proto, original_host.as_ref());
    // Over HTTP/1.1 with an origin-form target the authority is the `Host`
    // header itself, already in place.
    if let Some(host) = original_host.filter(|_| parts.uri.authority().is_some()) {
        headers.insert(HOST, host);
    }

    // A request without a body must not gain one: a stream body would make
    // the upstream request chunked even for a GET.
    let mut body = (!body.is_end_stream()).then_some(body);
    let replayable = body.is_none() && parts.method.is_idempotent();
    // Only a route with somewhere else to go keeps what a second try needs.
    let may_retry = balancer.upstreams().len() > 1;
    let handoff = body.take_if(|_| may_retry).map(BodyHandoff::new);
    let deadline = tokio::time::Instant::now() + route.spec.timeout;

    async move {
        let mut last_error = None;
        let upstream_response = loop {
            let Some(index) = balancer.pick(tried) else {
                return Err(last_error.unwrap_or_else(|| no_upstream_left(route)));
            };
            if !tried.is_empty() {
                route.metrics.retried();
            }
            tried.push(index);
            let upstream = &balancer.upstreams()[index];
            upstream.counters.requests.fetch_add(1, Ordering::Relaxed);
            // Built in a block of its own, so that the request handed to
            // reqwest takes no room in this future while it is awaited.
            let sent = {
                let url = request_url(route, upstream, path, parts.uri.query());
                let mut outgoing = reqwest::Request::new(parts.method.clone(), url);
                *outgoing.headers_mut() = if may_retry {
                    parts.headers.clone()
                } else {
                    std::mem::take(&mut parts.headers)
                };
                if let Some(handoff) = &handoff {
                    *outgoing.body_mut() = Some(handoff.body());
                } else if let Some(body) = body.take() {
                    *outgoing.body_mut() =
                        Some(reqwest::Body::wrap_stream(body.into_data_stream()));
                }
                state.client.execute(outgoing)
            };
            let error = match timeout_at(deadline, sent).await {
                Ok(Ok(response)) => {
                    upstream.health.succeeded();
                    break response;
                }
                Ok(Err(error)) => Some(error),
                Err(_elapsed) => None,
            };
            match failed_try(route, upstream, error, replayable, handoff.as_ref()) {
                AfterFailure::TryNext(failure) => last_error = Some(failure),
                AfterFailure::GiveUp(failure) => return Err(failure),
            }
        };

        if let Some(client_upgrade) = upgrade {
            if upstream_response.status() == StatusCode::SWITCHING_PROTOCOLS {
                return Ok(Answer::Made(switch_protocols(
                    route.name(),
                    upstream_response,
                    client_upgrade,
                    &state.tunnels,
                )));
            }
        }

        let mut response: http::Response<reqwest::Body> = upstream_response.into();
        strip_hop_by_hop(response.headers_mut(), false);
        // The body streams through frame by frame; if the upstream breaks off,
        // the error reaches hyper, which aborts the client connection instead of
        // ending the response as if it were complete.
        Ok(Answer::Upstream(response))
    }
}

/// What a request does after a try failed.
enum AfterFailure {
    TryNext(ProxyError),
    GiveUp(ProxyError),
}

/// Counts a failed try against `upstream` and decides whether the request
/// may go to the next upstream: `error` is reqwest's, or `None` when the
/// route's timeout passed. Out of line, for the reason [`answer_error`] is.
#[cold]
#[inline(never)]
fn failed_try(
    route: &Route,
    upstream: &RouteUpstream,
    error: Option<reqwest::Error>,
    replayable: bool,
    handoff: Option<&BodyHandoff>,
) -> AfterFailure {
    upstream.counters.errors.fetch_add(1, Ordering::Relaxed);
    let Some(error) = error else {
        note_failure(upstream);
        return AfterFailure::GiveUp(ProxyError::UpstreamTimeout {
            route: route.name().to_owned(),
            timeout: route.spec.timeout,
        });
    };
    let retry = if error.is_connect() {
        note_failure(upstream);
        // Nothing reached the upstream; the body goes to the next try if
        // the first one never started reading it.
        handoff.is_none_or(BodyHandoff::unread)
    } else {
        replayable && closed_before_answering(&error)
    };
    let failure = ProxyError::from_upstream(route.name(), &error);
    if !retry {
        return AfterFailure::GiveUp(failure);
    }
    tracing::debug!(route = route.name(), upstream = %upstream.spec.url, %failure, "trying the next upstream");
    AfterFailure::TryNext(failure)
}

#[cold]
fn no_upstream_left(route: &Route) -> ProxyError {
    ProxyError::UpstreamUnavailable {
        route: route.name().to_owned(),
        detail: "no upstream left to try".to_owned(),
    }
}

/// Counts a connect failure or timeout against the upstream's health.
fn note_failure(upstream: &RouteUpstream) {
    if upstream.health.failed(now_ms()) {
        upstream.counters.ejections.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(upstream = %upstream.spec.url, "upstream ejected after failing in a row");
    }
}

/// Whether the upstream closed the connection before answering: what a
/// server does to a keep-alive connection it is closing just as a request
/// is written into it. hyper reports it as an incomplete message (or the
/// reset as an I/O error); either way no response byte was read, so an
/// idempotent request without a body may go elsewhere.
fn closed_before_answering(error: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(hyper_error) = cause.downcast_ref::<hyper::Error>() {
            if hyper_error.is_incomplete_message() {
                return true;
            }
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ) {
                return true;
            }
        }
        source = cause.source();
    }
    false
}

/// A client's request body, kept aside until a try first reads it. A connect
/// that fails never reads the body (hyper polls it only on a connection),
/// so the next try can still send it; once read, it is that try's alone and
/// a request that has sent body bytes is never sent again.
///
/// The slot is a `std::sync::Mutex`, locked only to take the body out, once
/// per request and never across an `.await`; the lock is uncontended.
struct BodyHandoff(Arc<Mutex<Option<Body>>>);

impl BodyHandoff {
    fn new(body: Body) -> Self {
        BodyHandoff(Arc::new(Mutex::new(Some(body))))
    }

    fn unread(&self) -> bool {
        self.0.lock().map(|slot| slot.is_some()).unwrap_or(false)
    }

    fn body(&self) -> reqwest::Body {
        let slot = Arc::clone(&self.0);
        let mut stream: Option<BodyDataStream> = None;
        reqwest::Body::wrap_stream(futures_util::stream::poll_fn(move |cx| {
            if stream.is_none() {
                let taken = slot.lock().ok().and_then(|mut slot| slot.take());
                stream = taken.map(Body::into_data_stream);
            }
            match stream.as_mut() {
                Some(stream) => stream.poll_next_unpin(cx),
                None => std::task::Poll::Ready(Some(Err(axum::Error::new(BodyTaken)))),
            }
        }))
    }
}

/// A second try found the body already read by the first (never expected:
/// such a request is not tried again).
#[derive(Debug, thiserror::Error)]
#[error("the request body was already sent to another upstream")]
struct BodyTaken;

/// Answers the client's upgrade with the upstream's `101` and, once both
/// sides have switched, copies bytes both ways until either side closes. The
/// copy holds no table snapshot, so a reload never touches an open tunnel.
/// Out of line, for the reason [`answer_error`] is: the spawned copy's
/// future is built on the stack.
#[inline(never)]
fn switch_protocols(
    route: &str,
    upstream_response: reqwest::Response,
    client_upgrade: hyper::upgrade::OnUpgrade,
    tunnels: &Tunnels,
) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *response.headers_mut() = upstream_response.headers().clone();
    strip_hop_by_hop(response.headers_mut(), true);
    let route = route.to_owned();
    let tunnel = tunnels.open();
    tokio::spawn(async move {
        let _tunnel = tunnel;
        let (client, upstream) = match tokio::try_join!(
            async { client_upgrade.await.map_err(|e| e.to_string()) },
            async { upstream_response.upgrade().await.map_err(|e| e.to_string()) },
        ) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%route, %error, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = upstream;
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((sent, received)) => {
                tracing::debug!(%route, sent, received, "upgraded connection closed")
            }
            Err(error) => {
                tracing::debug!(%route, %error, "upgraded connection ended with an error")
            }
        }
    });
    response
}
