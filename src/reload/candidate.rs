//! Changing which candidate table runs (SPEC 10): proposing one
//! (`POST /candidate`), promoting it to live, rolling it back, discarding
//! it, and the judge that looks at a running canary ten times a second.
//!
//! Each change takes the reloader's lock, as a reload does, so the live
//! table and the candidate change one at a time and the history records
//! them in order; the request path only loads the slot.

use std::sync::Arc;
use std::time::Duration;

use crate::candidate::canary::{State, Verdict};
use crate::candidate::{Candidate, Mode, Origin};
use crate::reload::reloader::{build, Attempt, ReloadResult, Reloader, RouteDiff, Trigger};
use crate::routes::config::Source;

/// How often a running canary is judged: a broken gate is acted on within
/// this long of the answer that broke it.
pub const JUDGE_INTERVAL: Duration = Duration::from_millis(100);

/// Why a proposed candidate was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    #[error("a candidate runs already (version {0}); promote or delete it first")]
    Running(u64),
    #[error("{0}")]
    Invalid(String),
}

impl Reloader {
    /// Builds `text` as a candidate beside the live table (`POST
    /// /candidate`). In canary mode, the live file's `rollout:` judges it,
    /// or the defaults when the live file has none.
    pub fn propose(&self, text: String, mode: Mode) -> Result<Arc<Candidate>, ProposeError> {
        let _record = self.lock();
        if let Some(running) = self.candidate.load() {
            return Err(ProposeError::Running(running.table.meta.version));
        }
        let current = self.live.load_full();
        let source = Source::new(text);
        let table = build(&source, current.meta.version + 1)
            .map_err(|error| ProposeError::Invalid(error.to_string()))?
            .tracked_by(&self.generations)
            .carry_state_from(&current);
        let rollout = current.rollout.clone().unwrap_or_default();
        let candidate = Arc::new(Candidate::new(
            table,
            source,
            mode,
            Origin::Admin,
            rollout,
            &self.candidate,
        ));
        self.candidate.replace(Some(Arc::clone(&candidate)));
        tracing::info!(
            version = candidate.table.meta.version,
            mode = ?mode,
            "candidate table running beside the live one"
        );
        Ok(candidate)
    }

    /// Discards the candidate, if one runs; the live table is untouched.
    pub fn discard_candidate(&self) -> Option<Arc<Candidate>> {
        let _record = self.lock();
        let discarded = self.candidate.replace(None);
        if let Some(candidate) = &discarded {
            if let Some(canary) = &candidate.canary {
                canary.end(
                    State::RolledBack,
                    "discarded by DELETE /candidate".to_owned(),
                );
            }
            tracing::info!(
                version = candidate.table.meta.version,
                "candidate table discarded"
            );
        }
        discarded
    }

    /// Makes the running candidate the live table (`POST
    /// /candidate/promote`); `None` when there is none.
    pub fn promote_candidate(&self) -> Option<Attempt> {
        let candidate = self.candidate.load()?;
        self.promote(
            &candidate,
            Trigger::Candidate,
            "promoted by POST /candidate/promote",
        )
    }

    /// Looks at a running canary once and acts on the verdict.
    pub fn judge_candidate(&self) -> Option<Attempt> {
        let candidate = self.candidate.load()?;
        let canary = candidate.canary.as_ref()?;
        match canary.judge(candidate.started.elapsed()) {
            Verdict::KeepRunning => None,
            Verdict::Promote => self.promote(
                &candidate,
                Trigger::Canary,
                "served its slice for the rollout's time within every gate",
            ),
            Verdict::RollBack(reason) => self.roll_back(&candidate, reason),
        }
    }

    /// Puts `candidate` live, if it is still the one running.
    fn promote(&self, candidate: &Arc<Candidate>, trigger: Trigger, why: &str) -> Option<Attempt> {
        let mut record = self.lock();
        if !self.is_running(candidate) {
            return None;
        }
        let current = self.live.load_full();
        // Built again from its bytes, numbered after the live table as it is
        // now, with the state the candidate gathered (health, counters).
        let table = match build(&candidate.source, current.meta.version + 1) {
            Ok(table) => table
                .tracked_by(&self.generations)
                .carry_state_from(&candidate.table),
            Err(error) => {
                let reason = format!("cannot be built again to go live: {error}");
                drop(record);
                return self.roll_back(candidate, reason);
            }
        };
        let diff = RouteDiff::between(&current, &table);
        let version = table.meta.version;
        self.live.store(Arc::new(table));
        self.swapped.send_replace(version);
        self.candidate.replace(None);
        if let Some(canary) = &candidate.canary {
            canary.end(State::Promoted, why.to_owned());
        }
        self.metrics.reload_ok();
        let mut attempt = Attempt::new(trigger, ReloadResult::Ok, version);
        attempt.sha256 = Some(candidate.source.sha256.clone());
        attempt.diff = Some(diff);
        attempt.note = Some(why.to_owned());
        attempt.canary = candidate.canary.as_ref().map(|c| c.report());
        record.went_live(attempt.at);
        record.remember(&attempt);
        tracing::info!(%trigger, version, why, "candidate table promoted; it is live");
        Some(attempt)
    }

    /// Discards `candidate` for a broken gate, if it is still the one
    /// running; its bytes are not tried again until the file changes.
    fn roll_back(&self, candidate: &Arc<Candidate>, reason: String) -> Option<Attempt> {
        let mut record = self.lock();
        if !self.is_running(candidate) {
            return None;
        }
        self.candidate.replace(None);
        if let Some(canary) = &candidate.canary {
            canary.end(State::RolledBack, reason.clone());
        }
        let version = self.live.load().meta.version;
        let mut attempt = Attempt::new(Trigger::Canary, ReloadResult::RolledBack, version);
        attempt.sha256 = Some(candidate.source.sha256.clone());
        attempt.error = Some(reason.clone());
        attempt.canary = candidate.canary.as_ref().map(|c| c.report());
        attempt.note = Some(format!(
            "the canary of version {} was rolled back; the live table never changed",
            candidate.table.meta.version
        ));
        record.rolled_back = Some(candidate.source.sha256.clone());
        record.remember(&attempt);
        tracing::warn!(
            candidate_version = candidate.table.meta.version,
            live_version = version,
            %reason,
            "canary rolled back"
        );
        Some(attempt)
    }

    fn is_running(&self, candidate: &Arc<Candidate>) -> bool {
        self.candidate
            .load()
            .is_some_and(|running| Arc::ptr_eq(&running, candidate))
    }
}

/// Judges the running canary every [`JUDGE_INTERVAL`], and sleeps while no
/// canary runs. Spawn it on the control runtime, for as long as the router
/// runs.
pub async fn judge_canaries(reloader: Arc<Reloader>) {
    loop {
        let canary_runs = || {
            reloader
                .candidate()
                .load()
                .is_some_and(|c| c.mode == Mode::Canary)
        };
        if !canary_runs() {
            // No timer while there is nothing to judge.
            reloader.candidate().replaced().await;
            continue;
        }
        let mut ticks = tokio::time::interval(JUDGE_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while canary_runs() {
            ticks.tick().await;
            reloader.judge_candidate();
        }
    }
}
