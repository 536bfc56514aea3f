//! Forwarding one request to its route's upstreams: the request as the
//! upstream gets it (SPEC 4.3), the client its upstream's protocol asks
//! for (SPEC 8), the tries and what may be tried again (SPEC 4.10), and
//! the answer as the client gets it, its body and trailers streamed frame
//! by frame.

use std::borrow::Cow;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::Request;
use http::header::{HOST, TRAILER};
use http::{HeaderMap, HeaderValue, StatusCode, Version};
use http_body::Body as _;
use url::Url;

use crate::observe::access::Routed;
use crate::policy::edits::{self, EditContext};
use crate::policy::rewrite::path_for_upstream;
use crate::proxy::body::{BodyHandoff, Relayed};
use crate::proxy::deadline::timeout_at;
use crate::proxy::error::ProxyError;
use crate::proxy::grpc::{self, GRPC_TRAILERS};
use crate::proxy::headers::{set_forwarded, strip_hop_by_hop, upgrade_requested, REQUEST_ID};
use crate::proxy::state::{Answer, ClientConnection, Wire};
use crate::proxy::tunnel::switch_protocols;
use crate::routes::host::host_of_authority;
use crate::routes::table::Route;
use crate::routes::upstreams::{now_ms, Connect, RouteUpstream};

/// The URL a request for the canonical `path` with `query` is sent to on
/// `upstream`: the upstream's origin, parsed once per table, with the path
/// and query set on a copy. A copy and two setters cost a quarter of
/// parsing the whole URL again, which validates the host (IDNA included)
/// on every request. The setters apply the rules a parse would, and escape
/// a `#` in the query instead of starting a fragment, as the query meant.
fn request_url(route: &Route, upstream: &RouteUpstream, path: &str, query: Option<&str>) -> Url {
    let path = path_for_upstream(
        upstream.spec.url.path(),
        &route.spec.prefix,
        path,
        route.spec.strip_prefix,
        route.spec.rewrite.as_ref(),
    );
    let mut url = upstream.origin.clone();
    url.set_path(&path);
    url.set_query(query);
    url
}

/// Sends the request to the route's upstreams, trying the next one where
/// that is safe, and returns the first answer. Not an `async fn`, for the
/// reason the handler's `handle` is not: the request is taken apart here,
/// before the future, which keeps only the parts.
pub fn forward<'a>(
    connection: &'a ClientConnection,
    route: &'a Route,
    routed: &'a mut Routed,
    path: &'a str,
    mut request: Request,
    original_host: Option<HeaderValue>,
    wire: Wire,
) -> impl Future<Output = Result<Answer, ProxyError>> + Send + 'a {
    let state = &connection.proxy;
    let balancer = route.balancer();
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
    // The route's own edits come last (SPEC 7.2), so it can set `Host`.
    if !route.spec.request_headers.is_empty() {
        edit_request(route, headers, connection);
    }

    // A request without a body must not gain one: a stream body would make
    // the upstream request chunked even for a GET.
    let mut body = (!body.is_end_stream()).then_some(body);
    let replayable = body.is_none() && parts.method.is_idempotent();
    // Only a route with somewhere else to go keeps what a second try needs.
    let may_retry = balancer.upstreams().len() > 1;
    let handoff = body.take_if(|_| may_retry).map(BodyHandoff::new);
    let timeout = match wire.grpc {
        // A gRPC client's own deadline shortens the route's (SPEC 8).
        true => grpc::timeout(&parts.headers)
            .map_or(route.spec.timeout, |asked| asked.min(route.spec.timeout)),
        false => route.spec.timeout,
    };
    let deadline = tokio::time::Instant::now() + timeout;

    async move {
        let tried = &mut routed.upstreams;
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
            if upgrade.is_some() && matches!(upstream.connect, Connect::H2c) {
                return Err(ProxyError::UpgradeUnsupported {
                    route: route.name().to_owned(),
                });
            }
            // Built in a block of its own, so that the request handed to
            // reqwest takes no room in this future while it is awaited.
            let sent = {
                let client = match &upstream.connect {
                    Connect::Http1 => Cow::Borrowed(state.clients.http1()),
                    other => Cow::Owned(
                        state
                            .clients
                            .for_upstream(other)
                            .map_err(|e| ProxyError::from_upstream(route.name(), &e))?,
                    ),
                };
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
                    *outgoing.body_mut() = Some(Relayed::into_reqwest(body));
                }
                client.execute(outgoing)
            };
            let error = match timeout_at(deadline, sent).await {
                Ok(Ok(response)) => {
                    upstream.health.succeeded();
                    break response;
                }
                Ok(Err(error)) => Some(error),
                Err(_elapsed) => None,
            };
            let failed = failed_try(
                route,
                upstream,
                error,
                timeout,
                replayable,
                handoff.as_ref(),
            );
            match failed {
                AfterFailure::TryNext(failure) => last_error = Some(failure),
                AfterFailure::GiveUp(failure) => return Err(failure),
            }
        };
        routed.upstream_version = Some(upstream_response.version());

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
        let declared = wire
            .http1_trailers
            .then(|| trailers_to_declare(&response))
            .flatten();
        strip_hop_by_hop(response.headers_mut(), false);
        if let Some(declared) = declared {
            response.headers_mut().insert(TRAILER, declared);
        }
        // The body streams through frame by frame, trailers included; if
        // the upstream breaks off, the error reaches hyper, which aborts the
        // client connection instead of ending the response as if it were
        // complete.
        Ok(Answer::Upstream(response))
    }
}

/// Applies the route's `request_headers` (SPEC 7.2), after the router's
/// own edits: `Host` is the host the client sent, and the request id is in
/// place.
#[cold]
#[inline(never)]
fn edit_request(route: &Route, headers: &mut HeaderMap, connection: &ClientConnection) {
    let edits = &route.spec.request_headers;
    let request_id = edits
        .uses_request_id
        .then(|| headers.get(REQUEST_ID).cloned())
        .flatten();
    let host = edits
        .uses_host
        .then(|| headers.get(HOST).cloned())
        .flatten()
        .and_then(|host| host_of_authority(&host).map(Cow::into_owned));
    let context = EditContext {
        client_ip: connection.peer.forwarded_for.as_header_value(),
        request_id: request_id.as_ref(),
        host: host.as_deref(),
        scheme: connection.proxy.listener.scheme(),
    };
    edits::apply(edits, headers, &context);
}

/// The `Trailer` header an HTTP/1.1 client that accepts trailers (`TE:
/// trailers`) is given: hyper sends a chunked response's trailers only
/// when they are declared, and `Trailer` is hop-by-hop, so the upstream's
/// own declaration does not pass as it is. An HTTP/2 upstream declares
/// nothing (HTTP/2 needs no declaration); a gRPC answer's trailers are the
/// ones gRPC names.
#[cold]
fn trailers_to_declare(response: &http::Response<reqwest::Body>) -> Option<HeaderValue> {
    if let Some(declared) = response.headers().get(TRAILER) {
        return Some(declared.clone());
    }
    let is_grpc = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(grpc::is_grpc);
    (is_grpc && response.version() == Version::HTTP_2)
        .then(|| HeaderValue::from_static(GRPC_TRAILERS))
}

/// What a request does after a try failed.
enum AfterFailure {
    TryNext(ProxyError),
    GiveUp(ProxyError),
}

/// Counts a failed try against `upstream` and decides whether the request
/// may go to the next upstream: `error` is reqwest's, or `None` when the
/// request's `timeout` passed. Out of line, as every failure path is: it
/// would otherwise widen the frame every request's polls run under.
#[cold]
#[inline(never)]
fn failed_try(
    route: &Route,
    upstream: &RouteUpstream,
    error: Option<reqwest::Error>,
    timeout: Duration,
    replayable: bool,
    handoff: Option<&BodyHandoff>,
) -> AfterFailure {
    upstream.counters.errors.fetch_add(1, Ordering::Relaxed);
    let Some(error) = error else {
        note_failure(upstream);
        return AfterFailure::GiveUp(ProxyError::UpstreamTimeout {
            route: route.name().to_owned(),
            timeout,
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
