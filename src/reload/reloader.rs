//! Reloading: reads the route file, builds a whole new table off to the side,
//! and swaps it in with one atomic store; keeps the status and history that
//! the admin API shows.
//!
//! Every trigger (the file watcher, the poller, SIGHUP, `POST /reload`) ends
//! in [`Reloader::reload`]. It runs under one mutex, in plain synchronous
//! code that never awaits, so reloads happen one at a time: each reads the
//! file afresh and numbers its table under the lock, which means an older
//! build can never be swapped in over a newer one and `version` only grows.
//! Request handlers never touch that mutex; they only `load_full()` the
//! `ArcSwap`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use serde::{Serialize, Serializer};
use tokio::sync::watch;

use crate::candidate::canary::CanaryReport;
use crate::candidate::metrics::CandidateMetrics;
use crate::candidate::{Candidate, CandidateSlot, Mode, Origin};
use crate::observe::metrics::Metrics;
use crate::routes::config::{self, ConfigError, RouteSpec, Source};
use crate::routes::table::{Generations, Route, RouteTable, TableMeta};

/// How many attempts `GET /reloads` remembers: enough to see an operator's
/// last few edits, small enough to serialize on every request.
pub const HISTORY_LEN: usize = 20;

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Watch,
    Poll,
    Signal,
    Admin,
    /// A canary passed its gates and its table went live (SPEC 10.2), or
    /// was rolled back.
    Canary,
    /// `POST /candidate/promote`.
    Candidate,
}

impl Trigger {
    /// The spelling `/reloads` uses, so a log line and the API say the same word.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Watch => "watch",
            Trigger::Poll => "poll",
            Trigger::Signal => "signal",
            Trigger::Admin => "admin",
            Trigger::Canary => "canary",
            Trigger::Candidate => "candidate",
        }
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadResult {
    Ok,
    Unchanged,
    Error,
    /// The bytes are valid and started a canary beside the live table.
    Canary,
    /// A canary broke a gate and its table was discarded.
    RolledBack,
}

/// Whether a reload follows the live file's `rollout:` (an edit becomes a
/// canary) or puts the file live at once (`POST /reload?now=true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    FollowRollout,
    Now,
}

/// Routes that differ between two tables, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RouteDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl RouteDiff {
    pub fn between(old: &RouteTable, new: &RouteTable) -> Self {
        let old_routes: HashMap<&str, &RouteSpec> =
            old.routes().iter().map(|r| (r.name(), &r.spec)).collect();
        let new_names: HashSet<&str> = new.routes().iter().map(Route::name).collect();
        let mut diff = RouteDiff::default();
        for route in new.routes() {
            match old_routes.get(route.name()) {
                None => diff.added.push(route.name().to_owned()),
                Some(previous) if **previous != route.spec => {
                    diff.changed.push(route.name().to_owned())
                }
                Some(_) => {}
            }
        }
        for route in old.routes() {
            if !new_names.contains(route.name()) {
                diff.removed.push(route.name().to_owned());
            }
        }
        diff
    }
}

/// One reload attempt, as `GET /reloads` shows it.
/// Serializes a time as RFC 3339 UTC with whole seconds.
pub fn rfc3339<S: Serializer>(at: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_seconds(*at))
}

#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    #[serde(serialize_with = "rfc3339")]
    pub at: SystemTime,
    pub trigger: Trigger,
    pub result: ReloadResult,
    /// The live version after the attempt.
    pub version: u64,
    /// The digest of the bytes read, when the file could be read.
    pub sha256: Option<String>,
    pub diff: Option<RouteDiff>,
    pub error: Option<String>,
    /// What happened to a candidate table on the way, when anything did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Both tables' figures, for a canary's promotion or rollback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryReport>,
}

impl Attempt {
    pub(super) fn new(trigger: Trigger, result: ReloadResult, version: u64) -> Self {
        Attempt {
            at: SystemTime::now(),
            trigger,
            result,
            version,
            sha256: None,
            diff: None,
            error: None,
            note: None,
            canary: None,
        }
    }
}

/// The outcome of the most recent attempt, for `/healthz`.
#[derive(Debug, Clone, Serialize)]
pub struct LastReload {
    pub ok: bool,
    #[serde(serialize_with = "rfc3339")]
    pub at: SystemTime,
    pub error: Option<String>,
}

#[derive(Debug)]
pub(super) struct Record {
    pub(super) last: LastReload,
    history: VecDeque<Attempt>,
    /// The digest of the last file rejected. A watcher event that finds the
    /// same bytes again (another file in the directory changed) is not a new
    /// attempt; an explicit reload (signal, admin) always is.
    pub(super) rejected: Option<String>,
    /// The digest of the last bytes a canary rolled back: not tried again
    /// until the file changes, unless put live with `Apply::Now`.
    pub(super) rolled_back: Option<String>,
}

impl Record {
    /// A table went live at `at`: the last reload is good, and bytes
    /// rejected or rolled back before are forgotten.
    pub(super) fn went_live(&mut self, at: SystemTime) {
        self.rejected = None;
        self.rolled_back = None;
        self.last = LastReload {
            ok: true,
            at,
            error: None,
        };
    }

    /// Keeps `attempt` in the history, newest first.
    pub(super) fn remember(&mut self, attempt: &Attempt) {
        if self.history.len() == HISTORY_LEN {
            self.history.pop_back();
        }
        self.history.push_front(attempt.clone());
    }
}

/// Owns the live table and everything that changes it.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    pub(super) live: Arc<ArcSwap<RouteTable>>,
    /// The candidate table beside the live one, if any (SPEC 10). Changed
    /// only under `record`'s lock, like the live table.
    pub(super) candidate: Arc<CandidateSlot>,
    /// The live table's version, sent after each swap: what follows the
    /// table off the request path (the health checks) waits on it instead
    /// of looking for a new table on a timer.
    pub(super) swapped: watch::Sender<u64>,
    pub(super) generations: Generations,
    pub(super) metrics: Metrics,
    /// Serializes reloads and holds their record. Only synchronous code takes
    /// it, and never a request handler.
    record: Mutex<Record>,
}

impl Reloader {
    /// Loads the file for the first time; an error here means the router
    /// must not start.
    pub fn start(path: &Path) -> Result<Self, ConfigError> {
        let source = Source::read(path)?;
        let generations = Generations::default();
        let table = build(&source, 1)?.tracked_by(&generations);
        let swapped = watch::Sender::new(table.meta.version);
        let live = Arc::new(ArcSwap::from_pointee(table));
        let metrics = Metrics::new(Arc::clone(&live), generations.clone());
        let candidate = Arc::new(CandidateSlot::default());
        metrics.attach(Box::new(CandidateMetrics(Arc::clone(candidate.totals()))));
        Ok(Reloader {
            path: path.to_path_buf(),
            metrics,
            live,
            candidate,
            swapped,
            generations,
            record: Mutex::new(Record {
                last: LastReload {
                    ok: true,
                    at: SystemTime::now(),
                    error: None,
                },
                history: VecDeque::with_capacity(HISTORY_LEN),
                rejected: None,
                rolled_back: None,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The handle request handlers load the table from.
    pub fn live(&self) -> &Arc<ArcSwap<RouteTable>> {
        &self.live
    }

    /// The slot request handlers load the candidate table from.
    pub fn candidate(&self) -> &Arc<CandidateSlot> {
        &self.candidate
    }

    /// Changes each time a new table is live; its value is that table's
    /// version.
    pub fn swaps(&self) -> watch::Receiver<u64> {
        self.swapped.subscribe()
    }

    /// Reads, checks and, if the bytes are new and valid, swaps in a new
    /// table, or starts a canary of it when the live file has `rollout:`.
    /// Blocking (it reads a file): call it from a blocking context.
    pub fn reload(&self, trigger: Trigger) -> Attempt {
        self.reload_with(trigger, Apply::FollowRollout)
    }

    /// [`Reloader::reload`], or with `Apply::Now` the file goes live at
    /// once, whatever the live file's `rollout:` says.
    pub fn reload_with(&self, trigger: Trigger, apply: Apply) -> Attempt {
        let mut record = self.lock();
        let started = Instant::now();
        let current = self.live.load_full();
        let source = Source::read(&self.path);
        let outcome = match &source {
            Err(error) => Outcome::Refused(error.to_string()),
            Ok(source) => self.apply(source, &current, &record, trigger, apply),
        };
        let version = self.live.load().meta.version;
        let mut attempt = Attempt::new(trigger, ReloadResult::Unchanged, version);
        attempt.sha256 = source.ok().map(|s| s.sha256);
        let noise = match outcome {
            Outcome::Swapped { diff, note } => {
                tracing::info!(
                    %trigger,
                    version,
                    added = %names(&diff.added),
                    removed = %names(&diff.removed),
                    changed = %names(&diff.changed),
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "route table reloaded"
                );
                self.metrics.reload_ok();
                record.went_live(attempt.at);
                attempt.result = ReloadResult::Ok;
                attempt.diff = Some(diff);
                attempt.note = note;
                false
            }
            Outcome::CanaryStarted { diff, note } => {
                tracing::info!(%trigger, live_version = version, %note, "route file valid; trying it on a slice of traffic first");
                record.rejected = None;
                record.rolled_back = None;
                attempt.result = ReloadResult::Canary;
                attempt.diff = Some(diff);
                attempt.note = Some(note);
                false
            }
            Outcome::Unchanged { note } => {
                tracing::debug!(%trigger, version, "route file unchanged");
                // A watcher or poller that finds the same bytes saw an
                // unrelated event (another file in the directory); it is
                // not an attempt, unless it ended a candidate.
                let noise = note.is_none() && matches!(trigger, Trigger::Watch | Trigger::Poll);
                attempt.note = note;
                noise
            }
            Outcome::Refused(error) => {
                tracing::error!(%trigger, version, %error, "route file rejected; the previous table keeps serving");
                self.metrics.reload_error();
                record.rejected.clone_from(&attempt.sha256);
                record.last = LastReload {
                    ok: false,
                    at: attempt.at,
                    error: Some(error.clone()),
                };
                attempt.result = ReloadResult::Error;
                attempt.error = Some(error);
                false
            }
        };
        if !noise {
            record.remember(&attempt);
        }
        attempt
    }

    /// What the bytes of `source` do: nothing, a new live table, or a
    /// canary beside the live one.
    fn apply(
        &self,
        source: &Source,
        current: &Arc<RouteTable>,
        record: &Record,
        trigger: Trigger,
        apply: Apply,
    ) -> Outcome {
        let from_file = self
            .candidate
            .load()
            .filter(|candidate| candidate.origin == Origin::File);
        let follow = apply == Apply::FollowRollout;
        if source.sha256 == current.meta.sha256 {
            // The file is back to the live bytes: a canary of an edit of it
            // has nothing left to prove.
            let note = from_file.map(|candidate| {
                self.candidate.replace(None);
                format!(
                    "the file is back to the live bytes; the canary of version {} was discarded",
                    candidate.table.meta.version
                )
            });
            return Outcome::Unchanged { note };
        }
        let seen_and_rejected = matches!(trigger, Trigger::Watch | Trigger::Poll)
            && record.rejected.as_ref() == Some(&source.sha256);
        let running = from_file
            .as_ref()
            .is_some_and(|c| c.source.sha256 == source.sha256);
        if seen_and_rejected || (follow && running) {
            return Outcome::Unchanged { note: None };
        }
        if follow && record.rolled_back.as_ref() == Some(&source.sha256) {
            let note = (!matches!(trigger, Trigger::Watch | Trigger::Poll)).then(|| {
                "these bytes were rolled back by their canary; change the file, \
                 or put it live with POST /reload?now=true"
                    .to_owned()
            });
            return Outcome::Unchanged { note };
        }
        let table = match build(source, current.meta.version + 1) {
            Ok(table) => table
                .tracked_by(&self.generations)
                .carry_state_from(current),
            Err(error) => return Outcome::Refused(error.to_string()),
        };
        let diff = RouteDiff::between(current, &table);
        match (&current.rollout, follow) {
            (Some(rollout), true) => {
                let candidate = Candidate::new(
                    table,
                    source.clone(),
                    Mode::Canary,
                    Origin::File,
                    rollout.clone(),
                    &self.candidate,
                );
                let mut note = format!(
                    "canary of version {}: {}",
                    candidate.table.meta.version, rollout
                );
                if let Some(replaced) = self.candidate.replace(Some(Arc::new(candidate))) {
                    note.push_str(&format!(
                        "; replaces the candidate of version {}",
                        replaced.table.meta.version
                    ));
                }
                Outcome::CanaryStarted { diff, note }
            }
            _ => {
                let version = table.meta.version;
                self.live.store(Arc::new(table));
                self.swapped.send_replace(version);
                let note = from_file.map(|candidate| {
                    self.candidate.replace(None);
                    format!(
                        "put live at once; the canary of version {} was discarded",
                        candidate.table.meta.version
                    )
                });
                Outcome::Swapped { diff, note }
            }
        }
    }

    /// Route tables still alive, the live one included.
    pub fn generations_live(&self) -> usize {
        self.generations.live()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn last_reload(&self) -> LastReload {
        self.lock().last.clone()
    }

    /// Attempts, newest first.
    pub fn history(&self) -> Vec<Attempt> {
        self.lock().history.iter().cloned().collect()
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Record> {
        // The record stays consistent even if a holder panicked: every
        // update is a single assignment.
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What one reload did with the bytes it read.
enum Outcome {
    Swapped {
        diff: RouteDiff,
        note: Option<String>,
    },
    CanaryStarted {
        diff: RouteDiff,
        note: String,
    },
    Unchanged {
        note: Option<String>,
    },
    Refused(String),
}

/// How many route names one list of a reload's log line shows; a first load
/// of thousands of routes should not produce a log line of megabytes. The
/// whole diff is in `GET /reloads`.
const LOGGED_NAMES: usize = 20;

fn names(list: &[String]) -> String {
    let shown = list
        .iter()
        .take(LOGGED_NAMES)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(",");
    match list.len().checked_sub(LOGGED_NAMES) {
        Some(more) if more > 0 => format!("[{shown},... {more} more]"),
        _ => format!("[{shown}]"),
    }
}

/// Parses and builds a table from a file's bytes.
pub fn build(source: &Source, version: u64) -> Result<RouteTable, ConfigError> {
    let config = config::parse(&source.text)?;
    RouteTable::build(
        config,
        TableMeta {
            version,
            sha256: source.sha256.clone(),
            loaded_at: SystemTime::now(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::Trigger;

    #[test]
    fn a_trigger_is_spelled_in_logs_as_in_the_api() {
        for trigger in [
            Trigger::Watch,
            Trigger::Poll,
            Trigger::Signal,
            Trigger::Admin,
        ] {
            let api = serde_json::to_value(trigger).expect("a trigger serializes");
            assert_eq!(api, serde_json::Value::from(trigger.to_string()));
        }
    }
}
