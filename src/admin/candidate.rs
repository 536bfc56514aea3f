//! The candidate table's admin endpoints (SPEC 3 and 10): `GET`, `POST`
//! and `DELETE /candidate`, `POST /candidate/promote`, and what `/healthz`
//! shows of a running candidate. Every change goes through the reloader,
//! under its lock, on a blocking thread (building a table is real work).

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::{health, refusal, AdminState};
use crate::candidate::{Candidate, Mode};
use crate::proxy::server::Peer;
use crate::reload::candidate::ProposeError;

fn no_candidate() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": "no_candidate" })),
    )
        .into_response()
}

/// What `/healthz` shows of a running candidate.
pub(super) fn summary(candidate: &Candidate) -> Value {
    let report = candidate.report();
    json!({
        "version": report.version,
        "sha256": report.sha256,
        "mode": report.mode,
        "origin": report.origin,
        "since": report.since,
        "compared": report.compared,
        "moved": report.moved,
        "canary": report.canary,
    })
}

pub(super) async fn show(State(state): State<AdminState>) -> Response {
    match state.reloader.candidate().load() {
        Some(candidate) => Json(candidate.report()).into_response(),
        None => no_candidate(),
    }
}

pub(super) async fn propose(
    State(state): State<AdminState>,
    peer: Option<Extension<Peer>>,
    RawQuery(query): RawQuery,
    // axum refuses a body over 2 MiB (413) before this runs: far above
    // any real route file.
    body: axum::body::Bytes,
) -> Response {
    if let Some(refused) = refusal(&state, peer, "POST /candidate") {
        return refused;
    }
    let mode = match query.as_deref() {
        Some("mode=shadow") => Mode::Shadow,
        Some("mode=canary") => Mode::Canary,
        _ => {
            let body = json!({
                "error": "bad_mode",
                "reason": "say how the candidate runs: ?mode=shadow or ?mode=canary",
            });
            return (StatusCode::BAD_REQUEST, Json(body)).into_response();
        }
    };
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        let body = json!({ "error": "invalid", "message": "the route file is not UTF-8" });
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response();
    };
    let reloader = Arc::clone(&state.reloader);
    match tokio::task::spawn_blocking(move || reloader.propose(text, mode)).await {
        Ok(Ok(candidate)) => Json(candidate.report()).into_response(),
        Ok(Err(ProposeError::Running(version))) => (
            StatusCode::CONFLICT,
            Json(json!({
                "error": "candidate_running",
                "version": version,
                "message": ProposeError::Running(version).to_string(),
            })),
        )
            .into_response(),
        Ok(Err(ProposeError::Invalid(message))) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": "invalid", "message": message })),
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "candidate task failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

pub(super) async fn promote(
    State(state): State<AdminState>,
    peer: Option<Extension<Peer>>,
) -> Response {
    if let Some(refused) = refusal(&state, peer, "POST /candidate/promote") {
        return refused;
    }
    let reloader = Arc::clone(&state.reloader);
    match tokio::task::spawn_blocking(move || reloader.promote_candidate()).await {
        Ok(Some(attempt)) => {
            let mut body = health(&state);
            body["reload"] = json!(attempt);
            Json(body).into_response()
        }
        Ok(None) => no_candidate(),
        Err(error) => {
            tracing::error!(%error, "promote task failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

pub(super) async fn discard(
    State(state): State<AdminState>,
    peer: Option<Extension<Peer>>,
) -> Response {
    if let Some(refused) = refusal(&state, peer, "DELETE /candidate") {
        return refused;
    }
    match state.reloader.discard_candidate() {
        Some(candidate) => Json(json!({
            "discarded": candidate.table.meta.version,
            "sha256": candidate.source.sha256,
        }))
        .into_response(),
        None => no_candidate(),
    }
}
