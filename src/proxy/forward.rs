//! Forwarding one request to its route's upstreams: the request as the
//! upstream gets it (SPEC 4.3), the client its upstream's protocol asks
//! for (SPEC 8), the tries and what may be tried again (SPEC 4.10), and
//! the answer as the client gets it, its body and trailers streamed frame
//! by frame.

use std::borrow::Cow;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use http::header::{HOST, TRAILER};
use http::{HeaderMap, HeaderValue, StatusCode, Version};
use http_body::Body as _;
use url::Url;

use crate::observe::access::{Holds, Routed};
use crate::policy::edits::{self, EditContext};
use crate::policy::mirror;
use crate::policy::retry::{self, TryOutcome};
use crate::policy::rewrite::path_for_upstream;
use crate::proxy::body::{BodyHandoff, Relayed};
use crate::proxy::deadline::timeout_at;
use crate::proxy::error::ProxyError;
use crate::proxy::grpc::{self, GRPC_TRAILERS};
use crate::proxy::headers::{set_forwarded, strip_hop_by_hop, upgrade_requested, REQUEST_ID};
use crate::proxy::state::{Answer, ClientConnection, Progress, Wire};
use crate::proxy::tunnel::switch_protocols;
use crate::routes::balance::key_digest;
use crate::routes::conditions::first_cookie;
use crate::routes::config::{Balance, HashOn};
use crate::routes::counters::{InFlight, RetryReason};
use crate::routes::host::host_of_authority;
use crate::routes::limits::{Mirror, RetryBudget};
use crate::routes::table::Route;
use crate::routes::upstreams::{now_ms, Connect, RouteUpstream};
use crate::trace::{ServerSpan, TryEnd, TrySpan};

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
    progress: &'a mut Progress,
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
    if let Some(mirror) = &route.protection.mirror {
        body = mirror_request(
            connection,
            route,
            mirror,
            path,
            &parts,
            body,
            &mut progress.routed,
        );
    }
    let replayable = body.is_none() && parts.method.is_idempotent();
    // Answers are retried only on bodiless idempotent requests (SPEC 7.5).
    let retry = route
        .protection
        .retry
        .as_deref()
        .filter(|_| retry::replayable(&parts.method, body.is_some()));
    if let Some(budget) = retry {
        budget.first_try();
    }
    // Only a route with somewhere else to go keeps what a second try needs.
    let may_retry = balancer.upstreams().len() > 1;
    let keep_headers = may_retry || retry.is_some();
    let handoff = body.take_if(|_| may_retry).map(BodyHandoff::new);
    let timeout = match wire.grpc {
        // A gRPC client's own deadline shortens the route's (SPEC 8).
        true => grpc::timeout(&parts.headers)
            .map_or(route.spec.timeout, |asked| asked.min(route.spec.timeout)),
        false => route.spec.timeout,
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let per_try = retry.and_then(|budget| budget.spec.per_try_timeout);
    let key = match balancer.balance() {
        Balance::Hash(on) => hash_key(on, &parts.headers, connection),
        _ => None,
    };

    async move {
        let Progress { routed, holds } = progress;
        let mut last_error = None;
        // The last answer a retry passed over: what the client gets if
        // every try after it fails (SPEC 7.5).
        let mut passed_over: Option<(reqwest::Response, InFlight)> = None;
        let mut next_reason = None;
        // The next try is a retry of an answer (SPEC 7.5), which may go back
        // to an upstream already tried; a try after a connect failure
        // (SPEC 4.10) goes to each upstream at most once.
        let mut again = false;
        let upstream_response = loop {
            let tried = &routed.upstreams;
            let picked = if again {
                balancer.pick_again(tried, key)
            } else {
                balancer.pick(tried, key)
            };
            let Some(index) = picked else {
                return match passed_over {
                    Some((answer, load)) => answered(answer, load, holds),
                    None => Err(last_error.unwrap_or_else(|| no_upstream_left(route))),
                };
            };
            if let Some(reason) = next_reason.take() {
                route.metrics.retried(reason);
                routed.retries.push(reason);
            }
            routed.upstreams.push(index);
            let upstream = &balancer.upstreams()[index];
            upstream.counters.requests.fetch_add(1, Ordering::Relaxed);
            if upgrade.is_some() && matches!(upstream.connect, Connect::H2c) {
                return Err(ProxyError::UpgradeUnsupported {
                    route: route.name().to_owned(),
                });
            }
            let load = upstream.start();
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
                *outgoing.headers_mut() = if keep_headers {
                    parts.headers.clone()
                } else {
                    std::mem::take(&mut parts.headers)
                };
                if let Some(handoff) = &handoff {
                    *outgoing.body_mut() = Some(handoff.body());
                } else if let Some(body) = body.take() {
                    *outgoing.body_mut() = Some(Relayed::into_reqwest(body));
                }
                // The try's client span (SPEC 9), named in its `traceparent`.
                let traced = holds
                    .trace
                    .as_ref()
                    .map(|span| start_try_span(span, &mut outgoing, upstream));
                (traced, client.execute(outgoing))
            };
            let (traced, sent) = sent;
            let try_deadline = per_try.map_or(deadline, |per_try| {
                deadline.min(tokio::time::Instant::now() + per_try)
            });
            let tried = timeout_at(try_deadline, sent).await;
            if let Some(span) = traced {
                span.end(try_end(&tried));
            }
            let outcome = match tried {
                Ok(Ok(response)) => {
                    upstream.health.succeeded();
                    let status = response.status();
                    let retried = retry.filter(|_| routed.upstreams.len() < retry_attempts(retry));
                    match retried.and_then(|budget| {
                        retry::reason(&budget.spec, TryOutcome::Answered(status))
                            .map(|reason| (budget, reason))
                    }) {
                        Some((budget, reason)) if budget.try_retry() => {
                            passed_over = Some((response, load));
                            next_reason = Some(reason);
                            again = true;
                            continue;
                        }
                        _ => {
                            *holds = Holds {
                                upstream: Some(load),
                                ..std::mem::take(holds)
                            };
                            break response;
                        }
                    }
                }
                Ok(Err(error)) => Some(error),
                Err(_elapsed) => None,
            };
            drop(load);
            let timed_out = outcome.is_none();
            // A try that ran past its own timeout, with the route's still
            // running, may be retried like a reset.
            let per_try_expired = timed_out && try_deadline < deadline;
            let failed = failed_try(
                route,
                upstream,
                outcome,
                timeout,
                replayable,
                handoff.as_ref(),
            );
            let retried = retry.filter(|_| routed.upstreams.len() < retry_attempts(retry));
            let on_answer = retried.and_then(|budget| {
                let outcome = match &failed {
                    _ if per_try_expired => TryOutcome::TimedOut,
                    AfterFailure::GiveUp(ProxyError::InvalidUpstreamResponse { .. }) => {
                        TryOutcome::Reset
                    }
                    _ => return None,
                };
                retry::reason(&budget.spec, outcome).map(|reason| (budget, reason))
            });
            match (failed, on_answer) {
                (AfterFailure::TryNext(failure, reason), _) => {
                    last_error = Some(failure);
                    next_reason = Some(reason);
                    again = false;
                }
                (AfterFailure::GiveUp(failure), Some((budget, reason))) if budget.try_retry() => {
                    last_error = Some(failure);
                    next_reason = Some(reason);
                    again = true;
                }
                (AfterFailure::GiveUp(failure), _) => {
                    return match passed_over {
                        Some((answer, load)) => answered(answer, load, holds),
                        None => Err(failure),
                    };
                }
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
                    holds.route.take(),
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

/// Starts the client span of a try to `upstream`, named by the URL the
/// route gives (not the `server_name` the connection may use instead).
#[cold]
#[inline(never)]
fn start_try_span(
    server: &ServerSpan,
    outgoing: &mut reqwest::Request,
    upstream: &RouteUpstream,
) -> TrySpan {
    let url = &upstream.spec.url;
    let port = url
        .port()
        .or_else(|| upstream.origin.port_or_known_default());
    let method = outgoing.method().clone();
    server.start_try(
        outgoing.headers_mut(),
        &method,
        url.host_str().unwrap_or_default(),
        port,
    )
}

/// How a try ended, as its client span records it.
#[cold]
fn try_end<E>(tried: &Result<Result<reqwest::Response, reqwest::Error>, E>) -> TryEnd {
    match tried {
        Ok(Ok(response)) => TryEnd::Answered(response.status().as_u16()),
        Ok(Err(error)) if error.is_connect() => TryEnd::Failed("connect"),
        Ok(Err(error)) if closed_before_answering(error) => TryEnd::Failed("reset"),
        Ok(Err(_)) => TryEnd::Failed("invalid_response"),
        Err(_elapsed) => TryEnd::Failed("timeout"),
    }
}

/// The tries a route's `retry` allows in all (SPEC 7.5).
fn retry_attempts(retry: Option<&RetryBudget>) -> usize {
    retry.map_or(1, |budget| budget.spec.attempts as usize)
}

/// An answer a retry passed over, given to the client after all (SPEC 7.5:
/// the last real answer, not a router error), as it was.
fn answered(
    response: reqwest::Response,
    load: InFlight,
    holds: &mut Holds,
) -> Result<Answer, ProxyError> {
    holds.upstream = Some(load);
    let mut response: http::Response<reqwest::Body> = response.into();
    strip_hop_by_hop(response.headers_mut(), false);
    Ok(Answer::Upstream(response))
}

/// The digest of the request's `hash_on` key, or `None` when it has none
/// (such a request goes round robin).
fn hash_key(on: &HashOn, headers: &HeaderMap, connection: &ClientConnection) -> Option<u64> {
    match on {
        HashOn::ClientIp => Some(key_digest(
            connection.peer.forwarded_for.as_header_value().as_bytes(),
        )),
        HashOn::Header(name) => headers.get(name).map(|v| key_digest(v.as_bytes())),
        HashOn::Cookie(name) => first_cookie(headers, name).map(key_digest),
    }
}

/// Starts the route's mirrored copy of this request, if it is one of the
/// copied share (SPEC 7.6), and returns the body the original sends.
#[cold]
#[inline(never)]
fn mirror_request(
    connection: &ClientConnection,
    route: &Route,
    mirror: &Arc<Mirror>,
    path: &str,
    parts: &http::request::Parts,
    body: Option<axum::body::Body>,
    routed: &mut Routed,
) -> Option<axum::body::Body> {
    let destination = mirror.destination.as_ref().and_then(|(origin, connect)| {
        let client = connection.proxy.clients.for_upstream(connect).ok()?;
        Some((origin, client))
    });
    let Some((origin, client)) = destination else {
        mirror.dropped.fetch_add(1, Ordering::Relaxed);
        return body;
    };
    let mut url = origin.clone();
    url.set_path(&path_for_upstream(
        mirror.spec.to.path(),
        &route.spec.prefix,
        path,
        route.spec.strip_prefix,
        route.spec.rewrite.as_ref(),
    ));
    url.set_query(parts.uri.query());
    let (body, copied) = mirror::copy(
        mirror,
        client,
        &parts.method,
        url,
        &parts.headers,
        body,
        route.spec.timeout,
    );
    routed.mirrored = copied;
    body
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
    /// Nothing reached the upstream, or it closed a reused connection
    /// before any byte of an answer (SPEC 4.10): the next upstream, for
    /// this reason.
    TryNext(ProxyError, RetryReason),
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
        handoff
            .is_none_or(BodyHandoff::unread)
            .then_some(RetryReason::Connect)
    } else {
        (replayable && closed_before_answering(&error)).then_some(RetryReason::Reset)
    };
    let failure = ProxyError::from_upstream(route.name(), &error);
    let Some(reason) = retry else {
        return AfterFailure::GiveUp(failure);
    };
    tracing::debug!(route = route.name(), upstream = %upstream.spec.url, %failure, "trying the next upstream");
    AfterFailure::TryNext(failure, reason)
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
