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
}

impl Trigger {
    /// The spelling `/reloads` uses, so a log line and the API say the same word.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Watch => "watch",
            Trigger::Poll => "poll",
            Trigger::Signal => "signal",
            Trigger::Admin => "admin",
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
struct Record {
    last: LastReload,
    history: VecDeque<Attempt>,
    /// The digest of the last file rejected. A watcher event that finds the
    /// same bytes again (another file in the directory changed) is not a new
    /// attempt; an explicit reload (signal, admin) always is.
    rejected: Option<String>,
}

/// Owns the live table and everything that changes it.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    live: Arc<ArcSwap<RouteTable>>,
    /// The live table's version, sent after each swap: what follows the
    /// table off the request path (the health checks) waits on it instead
    /// of looking for a new table on a timer.
    swapped: watch::Sender<u64>,
    generations: Generations,
    metrics: Metrics,
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
        Ok(Reloader {
            path: path.to_path_buf(),
            metrics: Metrics::new(Arc::clone(&live), generations.clone()),
            live,
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

    /// Changes each time a new table is live; its value is that table's
    /// version.
    pub fn swaps(&self) -> watch::Receiver<u64> {
        self.swapped.subscribe()
    }

    /// Reads, checks and, if the bytes are new and valid, swaps in a new
    /// table. Blocking (it reads a file): call it from a blocking context.
    pub fn reload(&self, trigger: Trigger) -> Attempt {
        let mut record = self.lock();
        let started = Instant::now();
        let current = self.live.load_full();
        let source = Source::read(&self.path);
        let outcome = source
            .as_ref()
            .map_err(ToString::to_string)
            .and_then(|source| {
                let seen_and_rejected = matches!(trigger, Trigger::Watch | Trigger::Poll)
                    && record.rejected.as_ref() == Some(&source.sha256);
                if source.sha256 == current.meta.sha256 || seen_and_rejected {
                    return Ok(None);
                }
                let table = build(source, current.meta.version + 1)
                    .map_err(|e| e.to_string())?
                    .tracked_by(&self.generations)
                    .carry_state_from(&current);
                let diff = RouteDiff::between(&current, &table);
                let version = table.meta.version;
                self.live.store(Arc::new(table));
                self.swapped.send_replace(version);
                Ok(Some(diff))
            });
        let now = SystemTime::now();
        let version = self.live.load().meta.version;
        let sha256 = source.ok().map(|s| s.sha256);
        let attempt = match outcome {
            Ok(Some(diff)) => {
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
                record.rejected = None;
                record.last = LastReload {
                    ok: true,
                    at: now,
                    error: None,
                };
                Attempt {
                    at: now,
                    trigger,
                    result: ReloadResult::Ok,
                    version,
                    sha256,
                    diff: Some(diff),
                    error: None,
                }
            }
            Ok(None) => {
                tracing::debug!(%trigger, version, "route file unchanged");
                Attempt {
                    at: now,
                    trigger,
                    result: ReloadResult::Unchanged,
                    version,
                    sha256,
                    diff: None,
                    error: None,
                }
            }
            Err(error) => {
                tracing::error!(%trigger, version, %error, "route file rejected; the previous table keeps serving");
                self.metrics.reload_error();
                record.rejected.clone_from(&sha256);
                record.last = LastReload {
                    ok: false,
                    at: now,
                    error: Some(error.clone()),
                };
                Attempt {
                    at: now,
                    trigger,
                    result: ReloadResult::Error,
                    version,
                    sha256,
                    diff: None,
                    error: Some(error),
                }
            }
        };
        // A watcher or poller that finds the same bytes saw an unrelated
        // event (another file in the directory); it is not an attempt.
        let noise = attempt.result == ReloadResult::Unchanged
            && matches!(trigger, Trigger::Watch | Trigger::Poll);
        if !noise {
            if record.history.len() == HISTORY_LEN {
                record.history.pop_back();
            }
            record.history.push_front(attempt.clone());
        }
        attempt
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

    fn lock(&self) -> MutexGuard<'_, Record> {
        // The record stays consistent even if a holder panicked: every
        // update is a single assignment.
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }
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
