//! The request path: take one snapshot of the route table, pick the route,
//! forward the request, and stream the answer back.
//!
//! The snapshot is an `Arc` taken with `load_full()` before the first
//! `.await` and kept to the end of the request, so a reload never changes the
//! table under a request and never waits for one. Routing, forwarding and
//! metrics take no lock; the one lock a request touches is its own thread's
//! access-log buffer, uncontended and held for a copy (see `log_writer`).
//! Nothing is ever held across an `.await`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::handler::Handler;
use axum::response::{IntoResponse, Response};
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderValue, StatusCode};
use http_body::Body as _;
use hyper_util::rt::TokioIo;

use url::Url;

use crate::observe::access::{Exchange, Routed};
use crate::proxy::error::ProxyError;
use crate::proxy::headers::{
    ensure_request_id, request_authority, set_forwarded, strip_hop_by_hop, upgrade_requested,
    REQUEST_ID,
};
use crate::proxy::server::App;
use crate::routes::config::RespondSpec;
use crate::routes::host::host_of_authority;
use crate::routes::path::{canonical_path, upstream_path};
use crate::routes::table::{Destination, RequestFacts, Route, RouteTable};

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

/// What the proxy handler needs: the live table and the upstream client.
#[derive(Clone)]
pub struct ProxyState {
    pub live: Arc<ArcSwap<RouteTable>>,
    pub client: reqwest::Client,
    /// Per-request metrics and access log; off only to measure their cost.
    pub observe: bool,
}

impl ProxyState {
    pub fn new(live: Arc<ArcSwap<RouteTable>>) -> Result<Self, reqwest::Error> {
        Ok(ProxyState {
            live,
            client: upstream_client()?,
            observe: true,
        })
    }
}

/// A client set up to relay, not to browse: no redirects followed, no
/// decompression (the crate features are off, and nothing re-enables them),
/// no proxy taken from the environment. It adds one header of its own:
/// `Accept: */*` when the request has none, which reqwest cannot be told
/// not to do; RFC 9110 12.5.1 gives a missing Accept the same meaning.
pub fn upstream_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .connect_timeout(UPSTREAM_CONNECT_TIMEOUT)
        .pool_idle_timeout(UPSTREAM_IDLE_TIMEOUT)
        .pool_max_idle_per_host(UPSTREAM_MAX_IDLE_PER_HOST)
        .build()
}

/// The proxy listener's service: every method and path goes to one
/// handler. It is served as a service of its own, not as the fallback of an
/// axum `Router`, whose path matching and layers of boxed services a
/// catch-all route would pay for on every request without using them.
pub fn app(state: ProxyState) -> impl App {
    handle.with_state(state)
}

async fn handle(State(state): State<ProxyState>, request: Request) -> Response {
    let table = state.live.load_full();
    let mut request = request;
    let request_id = ensure_request_id(request.headers_mut());
    // Read once: routed on, forwarded as `Host`, and logged.
    let authority = request_authority(request.headers(), request.uri());
    let exchange = state.observe.then(|| {
        Exchange::begin(
            Arc::clone(&table),
            &request,
            authority.clone(),
            request_id.clone(),
        )
    });
    let mut routed = Routed::default();
    let routing = route_request(&state, &table, request, authority, &mut routed);
    let (mut response, error) = match routing.await {
        Ok(response) => (response, None),
        Err(error) => {
            let upstream = error.upstream_error_kind();
            if upstream.is_some() {
                // The detail (an OS error, an address) is for the operator,
                // never for the client.
                tracing::warn!(%error, request_id = request_id.to_str().unwrap_or("-"), "upstream request failed");
            }
            let kind = error.kind();
            (error.into_response(), Some((kind, upstream)))
        }
    };
    response.headers_mut().insert(REQUEST_ID, request_id);
    match exchange {
        Some(exchange) => exchange.respond(response, routed, error),
        None => response,
    }
}

async fn route_request(
    state: &ProxyState,
    table: &RouteTable,
    request: Request,
    authority: Option<HeaderValue>,
    routed: &mut Routed,
) -> Result<Response, ProxyError> {
    let headers = request.headers();
    if headers.contains_key(TRANSFER_ENCODING) && headers.contains_key(CONTENT_LENGTH) {
        // Two framings: the next hop may pick the other one and read the
        // rest of the body as a second request (smuggling). hyper 1.x gets
        // here first: Transfer-Encoding wins, Content-Length is dropped in
        // either order and the connection closes after the answer (RFC 9112
        // 6.3; tests/limits.rs). This guards against a hyper that stops.
        return Err(ProxyError::AmbiguousFraming);
    }
    let path =
        canonical_path(request.uri().path()).map_err(|e| ProxyError::BadTarget(e.to_string()))?;
    let host = authority.as_ref().and_then(host_of_authority);
    let facts = RequestFacts {
        host: host.as_deref(),
        path: &path,
        method: request.method(),
        headers: request.headers(),
    };
    let Some(route) = table.lookup(&facts) else {
        return Err(ProxyError::NoRoute { host, path });
    };
    routed.route = Some(route.index);
    match route.destination() {
        Destination::Respond(respond) => Ok(fixed_response(respond)),
        Destination::Upstream { index, url, origin } => {
            routed.upstream = Some(index);
            let target = UpstreamTarget { url, origin };
            forward(state, route, target, &path, request, authority).await
        }
    }
}

fn fixed_response(respond: &RespondSpec) -> Response {
    let mut response = Response::new(Body::from(respond.body.clone()));
    *response.status_mut() = respond.status;
    *response.headers_mut() = respond.headers.clone();
    response
}

/// The upstream a request goes to, as the route table holds it.
struct UpstreamTarget<'a> {
    url: &'a Url,
    origin: &'a str,
}

impl UpstreamTarget<'_> {
    /// The URL a request for the canonical `path` with `query` is sent to:
    /// written out in one buffer and parsed once, with the rules reqwest
    /// sends by (the path is already in the form `Url` gives it).
    fn request_url(
        &self,
        route: &Route,
        path: &str,
        query: Option<&str>,
    ) -> Result<Url, ProxyError> {
        let path = upstream_path(
            self.url.path(),
            &route.spec.prefix,
            path,
            route.spec.strip_prefix,
        );
        let query_len = query.map_or(0, |q| q.len() + 1);
        let mut target = String::with_capacity(self.origin.len() + path.len() + query_len);
        target.push_str(self.origin);
        target.push_str(&path);
        // A `#` would end the query and start a fragment, which is never
        // sent; `set_query` escapes it instead, as the query was meant.
        let escaped_query = query.filter(|q| q.contains('#'));
        if let (Some(query), None) = (query, escaped_query) {
            target.push('?');
            target.push_str(query);
        }
        let mut url = Url::parse(&target).map_err(|e| ProxyError::BadTarget(e.to_string()))?;
        if escaped_query.is_some() {
            url.set_query(escaped_query);
        }
        Ok(url)
    }
}

async fn forward(
    state: &ProxyState,
    route: &Route,
    upstream: UpstreamTarget<'_>,
    path: &str,
    request: Request,
    original_host: Option<HeaderValue>,
) -> Result<Response, ProxyError> {
    let mut request = request;
    let upgrade = upgrade_requested(request.headers()).then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    let url = upstream.request_url(route, path, parts.uri.query())?;

    let client_addr = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    // The host routed on is the host forwarded; for HTTP/2 this turns
    // `:authority` into `Host`.
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers, upgrade.is_some());
    if let Some(ip) = client_addr {
        set_forwarded(headers, ip, "http", original_host.as_ref());
    }
    // Over HTTP/1.1 with an origin-form target the authority is the `Host`
    // header itself, already in place.
    if let Some(host) = original_host.filter(|_| parts.uri.authority().is_some()) {
        headers.insert(HOST, host);
    }

    let mut outgoing = reqwest::Request::new(parts.method, url);
    *outgoing.headers_mut() = parts.headers;
    // A request without a body must not gain one: a stream body would make
    // the upstream request chunked even for a GET.
    if !body.is_end_stream() {
        *outgoing.body_mut() = Some(reqwest::Body::wrap_stream(body.into_data_stream()));
    }

    let timeout = route.spec.timeout;
    let upstream_response =
        match tokio::time::timeout(timeout, state.client.execute(outgoing)).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => return Err(ProxyError::from_upstream(route.name(), &error)),
            Err(_) => {
                return Err(ProxyError::UpstreamTimeout {
                    route: route.name().to_owned(),
                    timeout,
                })
            }
        };

    if let Some(client_upgrade) = upgrade {
        if upstream_response.status() == StatusCode::SWITCHING_PROTOCOLS {
            return Ok(switch_protocols(
                route.name(),
                upstream_response,
                client_upgrade,
            ));
        }
    }

    let mut response: http::Response<reqwest::Body> = upstream_response.into();
    strip_hop_by_hop(response.headers_mut(), false);
    // The body streams through frame by frame; if the upstream breaks off,
    // the error reaches hyper, which aborts the client connection instead of
    // ending the response as if it were complete.
    Ok(response.map(Body::new))
}

/// Answers the client's upgrade with the upstream's `101` and, once both
/// sides have switched, copies bytes both ways until either side closes. The
/// copy holds no table snapshot, so a reload never touches an open tunnel.
fn switch_protocols(
    route: &str,
    upstream_response: reqwest::Response,
    client_upgrade: hyper::upgrade::OnUpgrade,
) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *response.headers_mut() = upstream_response.headers().clone();
    strip_hop_by_hop(response.headers_mut(), true);
    let route = route.to_owned();
    tokio::spawn(async move {
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
