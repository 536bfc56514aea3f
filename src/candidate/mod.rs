//! The candidate table (SPEC 10): a second, complete route table held
//! beside the live one, to prove a change on live traffic before it serves
//! everyone.
//!
//! Like the live table it is an immutable value behind an `ArcSwap`
//! ([`CandidateSlot`]), loaded once per request without a lock. What the
//! request path does with it is here, as plain functions over the built
//! candidate, called by the handler at two fixed points:
//!
//! - [`Trial::begin`], before routing: in canary mode, whether the
//!   request's key falls in the candidate's slice (then the candidate
//!   routes it);
//! - [`Trial::compare`], once routed: the other table's route for the same
//!   request, counted as a move when the two differ;
//! - [`Trial::finish`], when the answer's head is known: its class and
//!   latency, in the figures of the table that routed it (canary only).
//!
//! Everything that changes which candidate exists (proposing, promoting,
//! rolling back, the judge's ticks) is the reloader's (`crate::reload`),
//! under its lock and off the request path. Parts:
//!
//! - `moves`: the (live route, candidate route) pairs and examples;
//! - `figures`: one table's answers and their latency histogram;
//! - `canary`: the slice, both tables' figures, the judgement;
//! - `metrics`: the `switchyard_candidate_*` series;
//! - `replay`: `check --replay`, routing a logged day with a file.

pub mod canary;
pub mod figures;
pub mod metrics;
pub mod moves;
pub mod replay;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwapOption;
use http::HeaderMap;
use serde::Serialize;

use crate::candidate::canary::{Canary, CanaryReport};
use crate::candidate::figures::class_of;
use crate::candidate::moves::{Move, Moves, Seen};
use crate::routes::config::{RolloutSpec, Source};
use crate::routes::table::{Route, RouteTable};

/// How the candidate takes part in routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Looked up for every request; routes none.
    Shadow,
    /// Routes a slice of requests and is judged on their answers.
    Canary,
}

/// Where a candidate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// An edit of the route file, while the live file has `rollout:`.
    File,
    /// `POST /candidate`.
    Admin,
}

/// A candidate table and what it has shown so far.
#[derive(Debug)]
pub struct Candidate {
    pub table: Arc<RouteTable>,
    pub source: Source,
    pub mode: Mode,
    pub origin: Origin,
    pub since: SystemTime,
    pub started: Instant,
    /// Requests looked up in both tables.
    compared: AtomicU64,
    pub moves: Moves,
    /// Present in canary mode.
    pub canary: Option<Canary>,
    totals: Arc<Totals>,
}

/// The process's counts over every candidate, for the metrics, which must
/// only grow.
#[derive(Debug, Default)]
pub struct Totals {
    /// By table (live, candidate), then class: answers while a canary ran.
    pub requests: [[AtomicU64; 5]; 2],
    pub moves: AtomicU64,
}

/// Which table routes a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Live,
    Candidate,
}

impl Side {
    pub fn label(self) -> &'static str {
        match self {
            Side::Live => "live",
            Side::Candidate => "candidate",
        }
    }
}

/// The candidate slot: at most one candidate, swapped whole.
#[derive(Debug, Default)]
pub struct CandidateSlot {
    current: ArcSwapOption<Candidate>,
    totals: Arc<Totals>,
    /// Woken at every replace, so what watches the slot (the canary's
    /// judge) sleeps while it is empty instead of looking on a timer: an
    /// idle sidecar wakes for nothing.
    replaced: tokio::sync::Notify,
}

impl CandidateSlot {
    /// The running candidate, if any: one atomic load, no lock.
    pub fn load(&self) -> Option<Arc<Candidate>> {
        self.current.load_full()
    }

    /// Puts `candidate` in the slot, in place of any other; what was there.
    pub fn replace(&self, candidate: Option<Arc<Candidate>>) -> Option<Arc<Candidate>> {
        let previous = self.current.swap(candidate);
        self.replaced.notify_one();
        previous
    }

    /// Waits for the next [`replace`](Self::replace), or returns at once
    /// when one happened since the last wait.
    pub async fn replaced(&self) {
        self.replaced.notified().await;
    }

    pub fn totals(&self) -> &Arc<Totals> {
        &self.totals
    }
}

impl Candidate {
    /// A candidate from a built table. `rollout` is the policy that judges
    /// it in canary mode: the live table's, never its own.
    pub fn new(
        table: RouteTable,
        source: Source,
        mode: Mode,
        origin: Origin,
        rollout: RolloutSpec,
        slot: &CandidateSlot,
    ) -> Self {
        let salt = u64::from_str_radix(source.sha256.get(..16).unwrap_or("0"), 16).unwrap_or(0);
        Candidate {
            table: Arc::new(table),
            source,
            mode,
            origin,
            since: SystemTime::now(),
            started: Instant::now(),
            compared: AtomicU64::new(0),
            moves: Moves::default(),
            canary: (mode == Mode::Canary).then(|| Canary::new(rollout, salt)),
            totals: Arc::clone(&slot.totals),
        }
    }

    pub fn compared(&self) -> u64 {
        self.compared.load(Ordering::Relaxed)
    }

    pub fn report(&self) -> CandidateReport {
        CandidateReport {
            mode: self.mode,
            origin: self.origin,
            version: self.table.meta.version,
            sha256: self.source.sha256.clone(),
            since: humantime::format_rfc3339_seconds(self.since).to_string(),
            compared: self.compared(),
            moved: self.moves.total(),
            moves: self.moves.report(),
            canary: self.canary.as_ref().map(Canary::report),
            rollout: self.canary.as_ref().map(|c| c.rollout.to_string()),
        }
    }
}

/// `GET /candidate`'s answer (SPEC 10.1).
#[derive(Debug, Clone, Serialize)]
pub struct CandidateReport {
    pub mode: Mode,
    pub origin: Origin,
    pub version: u64,
    pub sha256: String,
    pub since: String,
    pub compared: u64,
    /// Requests counted in `moves`, all pairs together.
    pub moved: u64,
    pub moves: Vec<Move>,
    pub canary: Option<CanaryReport>,
    /// The policy judging the canary, as one line.
    pub rollout: Option<String>,
}

/// One request's part in a running candidate.
pub struct Trial {
    candidate: Arc<Candidate>,
    /// The table that routes the request.
    pub side: Side,
    /// The live table, kept to compare with when the candidate routes.
    live: Option<Arc<RouteTable>>,
    started: Instant,
}

impl Trial {
    /// Which table routes this request. Out of line: only requests that
    /// come while a candidate runs take this path.
    #[cold]
    #[inline(never)]
    pub fn begin(
        candidate: Arc<Candidate>,
        live: &Arc<RouteTable>,
        headers: &HeaderMap,
        client: IpAddr,
    ) -> Box<Trial> {
        let side = match &candidate.canary {
            Some(canary) if canary.takes(headers, client) => Side::Candidate,
            _ => Side::Live,
        };
        // Boxed: the request's future keeps it to the end, and a pointer
        // is all that future grows by.
        Box::new(Trial {
            live: (side == Side::Candidate).then(|| Arc::clone(live)),
            candidate,
            side,
            started: Instant::now(),
        })
    }

    /// The table that routes this request, given the live one.
    pub fn routing_table(&self, live: Arc<RouteTable>) -> Arc<RouteTable> {
        match self.side {
            Side::Live => live,
            Side::Candidate => Arc::clone(&self.candidate.table),
        }
    }

    /// Looks the request up in the table that did not route it, and counts
    /// a move when the two routes differ.
    #[inline(never)]
    pub fn compare(
        &self,
        routed: Option<&Route>,
        facts: &crate::routes::request::RequestFacts<'_>,
    ) {
        let other_table = match (&self.side, &self.live) {
            (Side::Candidate, Some(live)) => live,
            _ => &self.candidate.table,
        };
        let other = other_table.lookup(facts);
        let (from, to) = match self.side {
            Side::Live => (routed, other),
            Side::Candidate => (other, routed),
        };
        self.candidate.compared.fetch_add(1, Ordering::Relaxed);
        let (from, to) = (from.map(Route::name), to.map(Route::name));
        if from != to {
            self.candidate.totals.moves.fetch_add(1, Ordering::Relaxed);
            self.candidate.moves.count(
                from,
                to,
                &Seen {
                    method: facts.method.as_str(),
                    host: facts.host,
                    path: facts.path,
                },
            );
        }
    }

    /// Counts the answer in the figures of the table that routed it.
    #[inline(never)]
    pub fn finish(&self, status: u16) {
        let Some(canary) = &self.candidate.canary else {
            return;
        };
        let elapsed = self.started.elapsed();
        let (figures, side) = match self.side {
            Side::Live => (&canary.live, 0),
            Side::Candidate => (&canary.candidate, 1),
        };
        figures.record(status, elapsed);
        self.candidate.totals.requests[side][class_of(status)].fetch_add(1, Ordering::Relaxed);
    }
}
