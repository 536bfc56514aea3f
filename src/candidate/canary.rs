//! The canary (SPEC 10.2): which requests the candidate routes (a stable
//! hash slice of a key), the figures of both tables while it runs, and the
//! judgement, a pure function of those figures and the live table's
//! `rollout:`, that promotes it, rolls it back or lets it run.

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use http::HeaderMap;
use serde::Serialize;

use crate::candidate::figures::{Figures, Snapshot};
use crate::routes::config::{RolloutSpec, SliceKey};

/// A p99 that is worse by less than this never counts against the
/// candidate (SPEC 10.2): at a few milliseconds, a histogram bucket and
/// scheduling noise are as large as the difference.
pub const LATENCY_SLACK_MS: f64 = 5.0;

/// A candidate that never gets `min_requests` is rolled back after this
/// many times `for`.
pub const PATIENCE: u32 = 10;

/// Where a canary stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Running,
    Promoted,
    RolledBack,
}

/// What the judge decides at one look.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    KeepRunning,
    Promote,
    RollBack(String),
}

/// A running canary: its policy (the live table's `rollout:` when it
/// started), its slice and both tables' figures.
#[derive(Debug)]
pub struct Canary {
    pub rollout: RolloutSpec,
    /// Mixed into each key's digest, so each change takes a different
    /// slice of the clients, and one client keeps its table for the
    /// length of one canary.
    salt: u64,
    pub live: Figures,
    pub candidate: Figures,
    state: AtomicU8,
    reason: OnceLock<String>,
}

/// Both tables' figures and what was decided, as `GET /candidate` and
/// `/reloads` show them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CanaryReport {
    pub percent: u32,
    pub state: State,
    pub reason: Option<String>,
    pub live: Snapshot,
    pub candidate: Snapshot,
}

impl Canary {
    pub fn new(rollout: RolloutSpec, salt: u64) -> Self {
        Canary {
            rollout,
            salt,
            live: Figures::default(),
            candidate: Figures::default(),
            state: AtomicU8::new(State::Running as u8),
            reason: OnceLock::new(),
        }
    }

    /// Whether the candidate routes a request from `client` with
    /// `headers`. A request without the key's header stays on the live
    /// table: with no key there is nothing to keep stable.
    pub fn takes(&self, headers: &HeaderMap, client: IpAddr) -> bool {
        let mut hasher = foldhash::fast::FixedState::with_seed(self.salt).build_hasher();
        match &self.rollout.key {
            SliceKey::ClientIp => match client {
                IpAddr::V4(ip) => hasher.write(&ip.octets()),
                IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                    Some(v4) => hasher.write(&v4.octets()),
                    None => hasher.write(&ip.octets()),
                },
            },
            SliceKey::Header(name) => match headers.get(name) {
                Some(value) => hasher.write(value.as_bytes()),
                None => return false,
            },
        }
        hasher.finish() % 10_000 < u64::from(self.rollout.percent) * 100
    }

    pub fn state(&self) -> State {
        match self.state.load(Ordering::Acquire) {
            s if s == State::Promoted as u8 => State::Promoted,
            s if s == State::RolledBack as u8 => State::RolledBack,
            _ => State::Running,
        }
    }

    /// Ends the canary once; `false` if it had already ended.
    pub fn end(&self, state: State, reason: String) -> bool {
        let ended = self
            .state
            .compare_exchange(
                State::Running as u8,
                state as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if ended {
            let _ = self.reason.set(reason);
        }
        ended
    }

    pub fn report(&self) -> CanaryReport {
        CanaryReport {
            percent: self.rollout.percent,
            state: self.state(),
            reason: self.reason.get().cloned(),
            live: self.live.snapshot(),
            candidate: self.candidate.snapshot(),
        }
    }

    pub fn judge(&self, running_for: Duration) -> Verdict {
        judge(
            &self.rollout,
            &self.live.snapshot(),
            &self.candidate.snapshot(),
            running_for,
        )
    }
}

/// The judgement of SPEC 10.2. A gate is judged only once the candidate
/// has served `min_requests`; from then on, one broken gate rolls it back
/// at once, and after `for` a candidate that breaks none is promoted. The
/// latency gate needs answers from the live table to compare with.
pub fn judge(
    rollout: &RolloutSpec,
    live: &Snapshot,
    candidate: &Snapshot,
    running_for: Duration,
) -> Verdict {
    if candidate.requests < rollout.min_requests {
        return if running_for >= rollout.duration * PATIENCE {
            Verdict::RollBack(format!(
                "served {} of the {} requests it needed within {}",
                candidate.requests,
                rollout.min_requests,
                humantime::format_duration(rollout.duration * PATIENCE)
            ))
        } else {
            Verdict::KeepRunning
        };
    }
    let allowed_share = live.error_share() + rollout.max_error_increase;
    if candidate.error_share() > allowed_share + f64::EPSILON {
        return Verdict::RollBack(format!(
            "5xx share {:.2}% against the live table's {:.2}% (at most +{}% allowed)",
            candidate.error_share() * 100.0,
            live.error_share() * 100.0,
            rollout.max_error_increase * 100.0
        ));
    }
    let allowed_p99 = live.p99_ms * (1.0 + rollout.max_latency_increase);
    if live.requests > 0
        && candidate.p99_ms > allowed_p99
        && candidate.p99_ms - live.p99_ms >= LATENCY_SLACK_MS
    {
        return Verdict::RollBack(format!(
            "p99 {:.1} ms against the live table's {:.1} ms (at most +{}% allowed)",
            candidate.p99_ms,
            live.p99_ms,
            rollout.max_latency_increase * 100.0
        ));
    }
    if running_for >= rollout.duration {
        Verdict::Promote
    } else {
        Verdict::KeepRunning
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout() -> RolloutSpec {
        RolloutSpec {
            percent: 50,
            duration: Duration::from_secs(2),
            min_requests: 50,
            ..RolloutSpec::default()
        }
    }

    fn figures(requests: u64, errors_5xx: u64, p99_ms: f64) -> Snapshot {
        Snapshot {
            requests,
            errors_5xx,
            p99_ms,
        }
    }

    #[test]
    fn a_candidate_is_not_judged_before_min_requests() {
        let verdict = judge(
            &rollout(),
            &figures(100, 0, 1.0),
            &figures(49, 49, 900.0),
            Duration::from_secs(3),
        );
        assert_eq!(verdict, Verdict::KeepRunning);
    }

    #[test]
    fn one_broken_gate_rolls_back_before_for_has_passed() {
        let errors = judge(
            &rollout(),
            &figures(100, 0, 1.0),
            &figures(50, 2, 1.0),
            Duration::from_millis(10),
        );
        assert!(matches!(errors, Verdict::RollBack(ref r) if r.contains("5xx share 4.00%")));
        let slow = judge(
            &rollout(),
            &figures(100, 0, 1.2),
            &figures(50, 0, 210.0),
            Duration::from_millis(10),
        );
        assert!(matches!(slow, Verdict::RollBack(ref r) if r.contains("p99 210.0 ms")));
    }

    #[test]
    fn a_small_latency_difference_never_counts() {
        let verdict = judge(
            &rollout(),
            &figures(100, 0, 1.0),
            &figures(50, 0, 5.5),
            Duration::from_secs(2),
        );
        assert_eq!(verdict, Verdict::Promote);
    }

    #[test]
    fn a_candidate_that_never_gets_its_requests_is_rolled_back() {
        let verdict = judge(
            &rollout(),
            &figures(100, 0, 1.0),
            &figures(10, 0, 1.0),
            Duration::from_secs(20),
        );
        assert!(matches!(verdict, Verdict::RollBack(ref r) if r.contains("served 10 of the 50")));
    }

    #[test]
    fn the_slice_is_stable_per_key_and_near_its_percent() {
        let canary = Canary::new(rollout(), 7);
        let headers = HeaderMap::new();
        let taken = (0..=255u8)
            .flat_map(|a| (0..16u8).map(move |b| IpAddr::from([10, 0, a, b])))
            .filter(|ip| canary.takes(&headers, *ip))
            .count();
        assert!((1843..=2253).contains(&taken), "{taken} of 4096");
        let ip = IpAddr::from([127, 0, 0, 1]);
        let first = canary.takes(&headers, ip);
        assert!((0..100).all(|_| canary.takes(&headers, ip) == first));
    }
}
