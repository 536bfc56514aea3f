//! The admin API (SPEC 3): health, readiness, the live table, reloads,
//! metrics, the route explainer and the dashboard. Served only on the admin
//! listener, never on the proxy's.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Serialize;
use serde_json::{json, Value};

use crate::observe::history::History;
use crate::observe::metrics::NO_ROUTE;
use crate::proxy::server::Peer;
use crate::reload::reloader::{rfc3339, Apply, ReloadResult, Reloader, RouteDiff, Trigger};
use crate::routes::config::{
    HeaderEdits, HostPattern, RateLimitSpec, RewriteSpec, RouteSpec, TargetSpec, Template,
    ValueMatch,
};
use crate::routes::counters::RouteMetrics;
use crate::routes::explain::{explain, MatchQuery, NoMatch};
use crate::routes::table::RouteTable;
use crate::routes::upstreams::now_ms;
use crate::tls::{Certificates, OnFailure, TlsReload};

pub use crate::observe::metrics::Readiness;

mod candidate;

#[derive(Clone)]
pub struct AdminState {
    pub reloader: Arc<Reloader>,
    pub readiness: Arc<Readiness>,
    /// Accept state changes (`POST /reload`) from peers other than
    /// loopback (`--admin-allow-remote-changes`).
    pub allow_remote_changes: bool,
    /// The TLS listener's certificates, when there is one.
    pub tls: Option<Arc<Certificates>>,
    /// The last 15 minutes of the live table, for the dashboard's charts.
    pub history: Arc<History>,
}

/// Whether `peer` may change the router's state: loopback always, others
/// only when the operator said so. A request whose peer is unknown is
/// refused: the check fails closed.
fn may_change_state(state: &AdminState, peer: Option<SocketAddr>) -> bool {
    state.allow_remote_changes
        || peer.is_some_and(|peer| match peer.ip() {
            IpAddr::V4(ip) => ip.is_loopback(),
            IpAddr::V6(ip) => {
                ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
        })
}

/// The refusal (403) of a state change from a peer that may not make one,
/// logged; `None` when the peer may.
fn refusal(state: &AdminState, peer: Option<Extension<Peer>>, what: &str) -> Option<Response> {
    let peer = peer.map(|Extension(peer)| peer.addr);
    if may_change_state(state, peer) {
        return None;
    }
    tracing::warn!(?peer, "refused {what} from a non-loopback peer");
    let body = json!({
        "error": "forbidden",
        "reason": "state changes are accepted from loopback only; start with --admin-allow-remote-changes to allow others",
    });
    Some((StatusCode::FORBIDDEN, Json(body)).into_response())
}

pub fn app(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/routes", get(routes))
        .route("/reload", post(reload))
        .route("/reloads", get(reloads))
        .route(
            "/candidate",
            get(candidate::show)
                .post(candidate::propose)
                .delete(candidate::discard),
        )
        .route("/candidate/promote", post(candidate::promote))
        .route("/routes/match", get(route_match))
        .route("/upstreams", get(upstreams))
        .route("/metrics", get(metrics))
        .route("/stats", get(stats))
        .route("/history", get(history))
        .route("/", get(dashboard))
        .with_state(state)
}

#[derive(Serialize)]
struct ConfigStatus {
    version: u64,
    routes: usize,
    #[serde(serialize_with = "rfc3339")]
    loaded_at: SystemTime,
    sha256: String,
}

fn health(state: &AdminState) -> Value {
    let table = state.reloader.live().load_full();
    let mut health = json!({
        "status": "ok",
        "config": ConfigStatus {
            version: table.meta.version,
            routes: table.routes().len(),
            loaded_at: table.meta.loaded_at,
            sha256: table.meta.sha256.clone(),
        },
        "last_reload": state.reloader.last_reload(),
    });
    if let Some(certificates) = &state.tls {
        health["tls"] = json!(certificates.status());
    }
    if let Some(candidate) = state.reloader.candidate().load() {
        health["candidate"] = candidate::summary(&candidate);
    }
    health
}

async fn healthz(State(state): State<AdminState>) -> Json<Value> {
    Json(health(&state))
}

async fn readyz(State(state): State<AdminState>) -> Response {
    if state.readiness.get() {
        (StatusCode::OK, Json(json!({ "ready": true }))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false })),
        )
            .into_response()
    }
}

async fn routes(State(state): State<AdminState>) -> Json<Value> {
    let table = state.reloader.live().load_full();
    let routes: Vec<Value> = table.routes().iter().map(|r| route_json(&r.spec)).collect();
    Json(json!({
        "version": table.meta.version,
        "sha256": table.meta.sha256,
        "routes": routes,
    }))
}

/// One route as the admin API and `check --diff` show it.
pub fn route_json(spec: &RouteSpec) -> Value {
    let conditions = &spec.conditions;
    let matches = |list: Vec<(&str, &ValueMatch)>| -> serde_json::Map<String, Value> {
        list.into_iter()
            .map(|(name, value)| (name.to_owned(), value_match_json(value)))
            .collect()
    };
    let headers = matches(
        conditions
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value))
            .collect(),
    );
    let query = matches(
        conditions
            .query
            .iter()
            .map(|(n, v)| (n.as_str(), v))
            .collect(),
    );
    let cookies = matches(
        conditions
            .cookies
            .iter()
            .map(|(n, v)| (n.as_str(), v))
            .collect(),
    );
    let target = match &spec.target {
        TargetSpec::Upstreams(upstreams) => json!({
            "upstreams": upstreams.iter().map(|u| u.url.as_str()).collect::<Vec<_>>(),
            "weights": upstreams.iter().map(|u| u.weight).collect::<Vec<_>>(),
            "protocols": upstreams.iter().map(|u| u.protocol()).collect::<Vec<_>>(),
            "upstream_tls": spec.upstream_tls.as_ref().map(|tls| json!({
                "ca": tls.ca.as_ref().map(|p| p.display().to_string()),
                "cert": tls.identity.as_ref().map(|p| p.cert.display().to_string()),
                "key": tls.identity.as_ref().map(|p| p.key.display().to_string()),
                "server_name": tls.server_name,
                "summary": tls.to_string(),
            })),
            "strip_prefix": spec.strip_prefix,
            "timeout_ms": spec.timeout.as_millis() as u64,
            "health": spec.health.as_ref().map(|h| json!({
                "path": h.path,
                "interval_ms": h.interval.as_millis() as u64,
                "timeout_ms": h.timeout.as_millis() as u64,
                "healthy": h.healthy,
                "unhealthy": h.unhealthy,
            })),
        }),
        TargetSpec::Respond(respond) => json!({ "respond": respond.status.as_u16() }),
        TargetSpec::Redirect(redirect) => json!({
            "redirect": redirect.to.source(),
            "status": redirect.status.as_u16(),
        }),
    };
    json!({
        "name": spec.name,
        "host": spec.host.as_ref().map(HostPattern::to_string),
        "prefix": spec.prefix,
        "headers": headers,
        "query": query,
        "cookies": cookies,
        "path_regex": conditions.path_regex.as_ref().map(|p| p.source()),
        "methods": spec.methods.as_ref().map(|m| m.iter().map(|m| m.as_str()).collect::<Vec<_>>()),
        "target": target,
        "rewrite": spec.rewrite.as_ref().map(|r| match r {
            RewriteSpec::Prefix(prefix) => json!({ "prefix": prefix }),
            RewriteSpec::Regex { pattern, to } => json!({ "regex": pattern.source(), "to": to }),
        }),
        "request_headers": edits_json(&spec.request_headers),
        "response_headers": edits_json(&spec.response_headers),
        "protection": protection_json(spec),
    })
}

/// A route's rate limit, in-flight cap, retry, balancing and mirror, as
/// the route file writes them; `null` for what it does not set.
pub fn protection_json(spec: &RouteSpec) -> Value {
    let per = |limit: &RateLimitSpec| match limit.per.as_secs() {
        1 => "s",
        60 => "m",
        _ => "h",
    };
    json!({
        "rate_limit": spec.rate_limit.as_ref().map(|l| json!({
            "rate": format!("{}/{}", l.tokens, per(l)),
            "burst": l.burst,
            "key": l.key.to_string(),
            "max_keys": l.max_keys,
        })),
        "max_in_flight": spec.max_in_flight,
        "retry": spec.retry.as_ref().map(|r| {
            let mut on: Vec<Value> = r.on.statuses.iter().map(|c| json!(c)).collect();
            if r.on.any_5xx { on.push(json!("5xx")); }
            if r.on.reset { on.push(json!("reset")); }
            if r.on.timeout { on.push(json!("timeout")); }
            json!({
                "on": on,
                "attempts": r.attempts,
                "per_try_timeout_ms": r.per_try_timeout.map(|d| d.as_millis() as u64),
                "budget_percent": r.budget_percent,
            })
        }),
        "balance": spec.balance.to_string(),
        "mirror": spec.mirror.as_ref().map(|m| json!({ "to": m.to.as_str(), "percent": m.percent })),
    })
}

/// A condition's value as the route file writes it.
fn value_match_json(value: &ValueMatch) -> Value {
    match value {
        ValueMatch::Exact(text) => json!(text),
        ValueMatch::Regex(pattern) => json!({ "regex": pattern.source() }),
        ValueMatch::Present(present) => json!({ "present": present }),
    }
}

/// Header edits as the route file writes them; `null` when there are none.
fn edits_json(edits: &HeaderEdits) -> Value {
    if edits.is_empty() {
        return Value::Null;
    }
    let values = |list: &[(http::HeaderName, Template)]| -> serde_json::Map<String, Value> {
        list.iter()
            .map(|(name, template)| (name.to_string(), json!(template.source())))
            .collect()
    };
    json!({
        "remove": edits.remove.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
        "set": values(&edits.set),
        "add": values(&edits.add),
    })
}

/// Every route's upstreams and their health as of now (SPEC 3).
async fn upstreams(State(state): State<AdminState>) -> Json<Value> {
    let table = state.reloader.live().load_full();
    Json(json!({ "routes": upstreams_json(&table) }))
}

pub fn upstreams_json(table: &RouteTable) -> Vec<Value> {
    let now = now_ms();
    let wall = SystemTime::now();
    table
        .routes()
        .iter()
        .filter(|route| !route.upstreams().is_empty())
        .map(|route| {
            let upstreams: Vec<Value> = route
                .upstreams()
                .iter()
                .map(|u| {
                    let ejected_until = u
                        .health
                        .ejected_for(now)
                        .map(|left| rfc3339_string(wall + left));
                    let last_check = u.health.last_check_unix_ms().map(|ms| {
                        rfc3339_string(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
                    });
                    json!({
                        "url": u.spec.url.as_str(),
                        "weight": u.spec.weight,
                        "state": u.health.state(now),
                        "consecutive_failures": u.health.consecutive_failures(),
                        "ejected_until": ejected_until,
                        "last_check": last_check,
                        "requests": u.counters.requests.load(Ordering::Relaxed),
                        "errors": u.counters.errors.load(Ordering::Relaxed),
                        "ejections": u.counters.ejections.load(Ordering::Relaxed),
                        "in_flight": u.in_flight(),
                    })
                })
                .collect();
            json!({
                "route": route.name(),
                "balance": route.spec.balance.to_string(),
                "upstreams": upstreams,
            })
        })
        .collect()
}

fn rfc3339_string(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

async fn reload(
    State(state): State<AdminState>,
    peer: Option<Extension<Peer>>,
    RawQuery(query): RawQuery,
) -> Response {
    if let Some(refused) = refusal(&state, peer, "POST /reload") {
        return refused;
    }
    // `?now=true` puts the file live at once, past the live file's
    // `rollout:` (SPEC 10.2).
    let apply = match query.as_deref() {
        Some("now=true") => Apply::Now,
        None | Some("") | Some("now=false") => Apply::FollowRollout,
        Some(other) => {
            let body =
                json!({ "error": "bad_query", "reason": format!("`{other}` is not `now=true`") });
            return (StatusCode::BAD_REQUEST, Json(body)).into_response();
        }
    };
    let reloader = Arc::clone(&state.reloader);
    let certificates = state.tls.clone();
    let reloaded = tokio::task::spawn_blocking(move || {
        let attempt = reloader.reload_with(Trigger::Admin, apply);
        let tls = certificates.map(|c| c.reload(Trigger::Admin, OnFailure::Report));
        (attempt, tls)
    });
    let (attempt, tls) = match reloaded.await {
        Ok(reloaded) => reloaded,
        Err(error) => {
            tracing::error!(%error, "reload task failed");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let tls_failed = matches!(tls, Some(TlsReload::Failed(_)));
    let status = if attempt.result == ReloadResult::Error || tls_failed {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let mut body = health(&state);
    body["reload"] = json!(attempt);
    if let Some(tls) = tls {
        body["tls_reload"] = match tls {
            TlsReload::Replaced => json!({ "result": "ok", "error": null }),
            TlsReload::Unchanged => json!({ "result": "unchanged", "error": null }),
            TlsReload::Failed(error) | TlsReload::Held(error) => {
                json!({ "result": "error", "error": error.to_string() })
            }
        };
    }
    (status, Json(body)).into_response()
}

async fn reloads(State(state): State<AdminState>) -> Json<Value> {
    Json(json!({ "reloads": state.reloader.history() }))
}

/// What would change if `local` replaced the table a running router serves,
/// given that router's `GET /routes` answer. Routes compare by their admin
/// JSON, the same form `/routes` shows.
pub fn diff_against_live(live_routes: &Value, local: &RouteTable) -> Result<RouteDiff, String> {
    let live: Vec<&Value> = live_routes
        .get("routes")
        .and_then(Value::as_array)
        .ok_or("the admin API's /routes answer has no `routes` list")?
        .iter()
        .collect();
    let name_of = |route: &&Value| route.get("name").and_then(Value::as_str).map(str::to_owned);
    let mut diff = RouteDiff::default();
    for route in local.routes() {
        let ours = route_json(&route.spec);
        match live
            .iter()
            .find(|r| name_of(r).as_deref() == Some(route.name()))
        {
            None => diff.added.push(route.name().to_owned()),
            Some(theirs) if **theirs != ours => diff.changed.push(route.name().to_owned()),
            Some(_) => {}
        }
    }
    for name in live.iter().filter_map(name_of) {
        if !local.routes().iter().any(|r| r.name() == name) {
            diff.removed.push(name);
        }
    }
    Ok(diff)
}

/// The dashboard: one self-contained page (inline CSS and JS, no external
/// assets) that polls `/routes`, `/reloads`, `/healthz` and `/stats`.
const DASHBOARD_HTML: &str = include_str!("dashboard.html");

async fn dashboard() -> Response {
    ([(CONTENT_TYPE, "text/html; charset=utf-8")], DASHBOARD_HTML).into_response()
}

async fn metrics(State(state): State<AdminState>) -> Response {
    match state.reloader.metrics().encode() {
        Ok(text) => (
            [(CONTENT_TYPE, crate::observe::metrics::CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The last 15 minutes, a sample a second, for the dashboard's charts.
async fn history(State(state): State<AdminState>) -> Json<crate::observe::history::Snapshot> {
    Json(state.history.snapshot())
}

/// Per-route counters as JSON, for the dashboard to compute rates from two
/// scrapes: the same numbers `/metrics` shows, without a text parser.
async fn stats(State(state): State<AdminState>) -> Json<Value> {
    let table = state.reloader.live().load_full();
    let route_stats = |name: &str, metrics: &RouteMetrics| {
        let mut requests = 0;
        let mut server_errors = 0;
        let mut codes = serde_json::Map::new();
        for (code, count) in metrics.codes() {
            requests += count;
            if code.starts_with('5') {
                server_errors += count;
            }
            codes.insert(code, json!(count));
        }
        let upstream_errors: serde_json::Map<String, Value> = metrics
            .upstream_errors()
            .map(|(kind, count)| (kind.label().to_owned(), json!(count)))
            .collect();
        json!({
            "route": name,
            "requests": requests,
            "errors": server_errors,
            "codes": codes,
            "upstream_errors": upstream_errors,
        })
    };
    let mut routes: Vec<Value> = table
        .routes()
        .iter()
        .map(|route| route_stats(route.name(), &route.metrics))
        .collect();
    routes.push(route_stats(NO_ROUTE, &table.unrouted));
    Json(json!({
        "version": table.meta.version,
        "generations_live": state.reloader.generations_live(),
        "routes": routes,
    }))
}

async fn route_match(State(state): State<AdminState>, RawQuery(query): RawQuery) -> Response {
    let bad_request = |reason: String| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "bad_request", "reason": reason })),
        )
            .into_response()
    };
    let query = match MatchQuery::parse(query.as_deref().unwrap_or("")) {
        Ok(query) => query,
        Err(reason) => return bad_request(reason),
    };
    let table = state.reloader.live().load_full();
    match explain(&table, &query) {
        Ok(explanation) => Json(explanation).into_response(),
        Err(NoMatch::BadPath(reason)) => bad_request(reason),
        Err(NoMatch::NoRoute { host, path }) => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "no_route", "host": host, "path": path })),
        )
            .into_response(),
    }
}
