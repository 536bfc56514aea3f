//! The request path: take one snapshot of the route table, pick the route,
//! forward the request, and stream the answer back.
//!
//! The snapshot is an `Arc` taken with `load_full()` before the first
//! `.await` and kept to the end of the request, so a reload never changes the
//! table under a request and never waits for one. Routing, forwarding,
//! the route timeout (a thread-local list of timers, see `deadline`),
//! metrics and the access line (a thread-local buffer, see `log_writer`)
//! take no lock. The one lock on the way is `BodyHandoff`'s (see `body`),
//! on routes with a second upstream to try, taken once per try and
//! uncontended. Nothing is ever held across an `.await`.
//!
//! The steps of a request, in [`handle`]: the snapshot, the request id,
//! the route (`pick_route`), then the route's destination: a fixed
//! response, or `forward::forward` to its upstreams; last, the answer as
//! the client gets it (`answer_with`, or `answer_error`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::handler::Handler;
use axum::response::Response;
use futures_util::StreamExt;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, TE, TRANSFER_ENCODING};
use http::{HeaderValue, Version};
use http_body_util::{BodyExt, BodyStream, StreamBody};

use crate::candidate::Trial;
use crate::observe::access::Exchange;
use crate::policy::edits::{self, EditContext};
use crate::policy::limit::{self, Refused};
use crate::policy::redirect::{self, RedirectContext};
use crate::proxy::body::Holding;
use crate::proxy::error::ProxyError;
use crate::proxy::forward::forward;
use crate::proxy::grpc;
use crate::proxy::headers::{ensure_request_id, request_authority, REQUEST_ID};
use crate::proxy::server::{MakeApp, MAX_HEADER_BYTES};
use crate::proxy::state::{Answer, ClientConnection, Listener, Progress, ProxyState, Wire};
use crate::routes::config::{RedirectSpec, RespondSpec};
use crate::routes::counters::UpstreamErrorKind;
use crate::routes::host::host_of_authority;
use crate::routes::path::canonical_path;
use crate::routes::table::{Destination, RequestFacts, Route, RouteTable};

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
    let live = state.live.load_full();
    // While a candidate table runs (SPEC 10), which of the two routes this
    // request, and what it tells about the candidate; `None` otherwise.
    let trial = state.candidate.load().map(|candidate| {
        Trial::begin(
            candidate,
            &live,
            request.headers(),
            connection.peer.addr.ip(),
        )
    });
    let table = match &trial {
        None => live,
        Some(trial) => trial.routing_table(live),
    };
    // Room for the headers the proxy adds (request id, X-Forwarded-For,
    // -Proto and -Host), so the map grows once, not once per header.
    request.headers_mut().reserve(4);
    let request_id = ensure_request_id(request.headers_mut());
    // Read once: routed on, forwarded as `Host`, and logged.
    let authority = request_authority(request.headers(), request.uri());
    // The server span, when tracing is on and the request is sampled
    // (SPEC 9); it ends with the response body, in the exchange.
    let trace = state.tracer.as_ref().and_then(|tracer| {
        tracer.start_request(
            request.headers_mut(),
            state.listener.scheme(),
            connection.peer.addr.ip(),
        )
    });
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
        let mut progress = Progress::default();
        progress.holds.trace = trace;
        // Routing is synchronous; only the forwarding awaits, so the request
        // lives in one future, not in one per layer of calls.
        let (picked, wire) = pick_route(&table, trial.as_deref(), &request, authority.as_ref());
        // A route whose answers get `response_headers`, with what their
        // placeholders need; `None` for nearly every request.
        let mut edited = None;
        let answer = match picked {
            Err(error) => Err(error),
            Ok((route, path)) => {
                progress.routed.route = Some(route.index);
                // The route's rate limit and in-flight cap; a route with
                // neither pays one branch.
                let admitted = if route.protection.guards_admission() {
                    admit_to(route, &request, &connection, &mut progress)
                } else {
                    Ok(())
                };
                // Only a chunked body can be framed other than its head
                // says; hyper finds out when it decodes the first chunk.
                let checked = match admitted {
                    Err(refused) => Err(refused),
                    Ok(()) if wire.chunked => {
                        first_chunk_decoded(request, route.spec.timeout).await
                    }
                    Ok(()) => Ok(request),
                };
                if !route.spec.response_headers.is_empty() {
                    edited = Some((route, authority.clone(), request_id.clone()));
                }
                match (checked, route.destination()) {
                    (Err(error), _) => Err(error),
                    (Ok(_), Destination::Respond(respond)) => {
                        Ok(Answer::Made(fixed_response(respond)))
                    }
                    (Ok(request), Destination::Redirect(redirect)) => {
                        Ok(Answer::Made(redirect_answer(
                            route,
                            redirect,
                            &request,
                            authority.as_ref(),
                            &path,
                            connection.proxy.listener,
                        )))
                    }
                    (Ok(request), Destination::Upstreams(_)) => {
                        let progress = &mut progress;
                        forward(
                            &connection,
                            route,
                            progress,
                            &path,
                            request,
                            authority,
                            wire,
                        )
                        .await
                    }
                }
            }
        };
        let mut response = match answer {
            Ok(Answer::Upstream(response)) => {
                answer_with(response, request_id, exchange, progress, None)
            }
            Ok(Answer::Made(response)) => {
                answer_with(response, request_id, exchange, progress, None)
            }
            Err(error) => answer_error(error, wire.grpc, request_id, exchange, progress),
        };
        if let Some(trial) = trial {
            trial.finish(response.status().as_u16());
        }
        if let Some((route, host, request_id)) = edited {
            edit_answer(
                route,
                &mut response,
                &connection,
                host.as_ref(),
                &request_id,
            );
        }
        response
    }
}

/// Applies the route's `response_headers` to its answer (SPEC 7.2),
/// whatever made it: the upstream, `respond`, `redirect` or the router's
/// own error.
#[cold]
#[inline(never)]
fn edit_answer(
    route: &Route,
    response: &mut Response,
    connection: &ClientConnection,
    authority: Option<&HeaderValue>,
    request_id: &HeaderValue,
) {
    let host = authority.and_then(host_of_authority);
    let context = EditContext {
        client_ip: connection.peer.forwarded_for.as_header_value(),
        request_id: Some(request_id),
        host: host.as_deref(),
        scheme: connection.proxy.listener.scheme(),
    };
    edits::apply(
        &route.spec.response_headers,
        response.headers_mut(),
        &context,
    );
}

/// A `redirect` route's answer (SPEC 7.3). Out of line, as every path the
/// common request does not take.
#[cold]
#[inline(never)]
fn redirect_answer(
    route: &Route,
    redirect: &RedirectSpec,
    request: &Request,
    authority: Option<&HeaderValue>,
    path: &str,
    listener: Listener,
) -> Response {
    let host = authority.and_then(host_of_authority);
    let context = RedirectContext {
        scheme: listener.scheme(),
        host: host.as_deref(),
        path,
        prefix: &route.spec.prefix,
        query: request.uri().query(),
    };
    redirect::response(redirect, &context)
}

/// The client's answer to a request that failed. Out of line, as every
/// failure path here is: its JSON body and log line would otherwise widen
/// the frame of the handler's poll, under which every request runs.
#[cold]
#[inline(never)]
fn answer_error(
    error: ProxyError,
    grpc_request: bool,
    request_id: HeaderValue,
    exchange: Option<Exchange>,
    progress: Progress,
) -> Response {
    let upstream = error.upstream_error_kind();
    if upstream.is_some() {
        // The detail (an OS error, an address) is for the operator, never
        // for the client.
        tracing::warn!(%error, request_id = request_id.to_str().unwrap_or("-"), "upstream request failed");
    }
    let failure = Some((error.kind(), upstream));
    let response = error.into_answer(grpc_request);
    answer_with(response, request_id, exchange, progress, failure)
}

/// `response` as the client gets it: with the request id, and observed to
/// the end of its body when requests are observed. What the request holds
/// (its places in in-flight counts) goes with the body, to its end.
fn answer_with<B>(
    mut response: http::Response<B>,
    request_id: HeaderValue,
    exchange: Option<Exchange>,
    progress: Progress,
    error: Option<(&'static str, Option<UpstreamErrorKind>)>,
) -> Response
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<axum::BoxError>,
{
    response.headers_mut().insert(REQUEST_ID, request_id);
    let Progress { routed, holds } = progress;
    match exchange {
        Some(exchange) => exchange.respond(response, routed, holds, error),
        None if holds.is_empty() => response.map(Body::new),
        // A router that does not observe requests (measurements only):
        // the body keeps what the request holds, as the observed one would.
        None => response.map(|body| Body::new(Holding::new(body, holds))),
    }
}

/// Admits a request to its route (SPEC 7.4), keeping its place in the
/// route's in-flight count; out of line, as few routes limit.
#[cold]
#[inline(never)]
fn admit_to(
    route: &Route,
    request: &Request,
    connection: &ClientConnection,
    progress: &mut Progress,
) -> Result<(), ProxyError> {
    match limit::admit(
        &route.protection,
        request.headers(),
        connection.peer.addr.ip(),
    ) {
        Ok(place) => {
            progress.holds.route = place;
            Ok(())
        }
        Err(Refused::RateLimited { retry_after }) => Err(ProxyError::RateLimited {
            route: route.name().to_owned(),
            retry_after,
        }),
        Err(Refused::Overloaded) => Err(ProxyError::Overloaded {
            route: route.name().to_owned(),
        }),
    }
}

/// The route `request` takes in `table`, and the canonical path it was
/// matched on, with what its framing says. Out of line, so that its
/// locals are not part of the frame that every later poll of the request
/// runs under.
#[inline(never)]
fn pick_route<'t>(
    table: &'t RouteTable,
    trial: Option<&Trial>,
    request: &Request,
    authority: Option<&HeaderValue>,
) -> (Result<(&'t Route, String), ProxyError>, Wire) {
    let head = HeadFacts::of(request.headers());
    let wire = Wire {
        grpc: head.grpc,
        chunked: head.transfer_encoding,
        http1_trailers: head.te
            && request.version() == Version::HTTP_11
            && accepts_trailers(request),
    };
    (route_of(table, trial, request, authority, &head), wire)
}

#[cold]
fn accepts_trailers(request: &Request) -> bool {
    request.headers().get_all(TE).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"trailers"))
    })
}

fn route_of<'t>(
    table: &'t RouteTable,
    trial: Option<&Trial>,
    request: &Request,
    authority: Option<&HeaderValue>,
    head: &HeadFacts,
) -> Result<(&'t Route, String), ProxyError> {
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
        query: request.uri().query(),
        method: request.method(),
        headers: request.headers(),
    };
    let found = table.lookup(&facts);
    if let Some(trial) = trial {
        trial.compare(found, &facts);
    }
    match found {
        Some(route) => Ok((route, path)),
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
    /// A gRPC `content-type`.
    grpc: bool,
    /// A `TE` header (what it says is read only when there is one).
    te: bool,
}

impl HeadFacts {
    fn of(headers: &http::HeaderMap) -> Self {
        let mut facts = HeadFacts {
            bytes: 0,
            transfer_encoding: false,
            content_length: false,
            grpc: false,
            te: false,
        };
        for (name, value) in headers {
            facts.bytes += name.as_str().len() + value.len() + 4;
            if name == TRANSFER_ENCODING {
                facts.transfer_encoding = true;
            } else if name == CONTENT_LENGTH {
                facts.content_length = true;
            } else if name == CONTENT_TYPE {
                facts.grpc |= grpc::is_grpc(value);
            } else if name == TE {
                facts.te = true;
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
