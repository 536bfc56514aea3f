//! Each route's upstreams as the request path sees them: the smooth
//! weighted round robin that picks one, and the health state that decides
//! which are eligible (SPEC 4.10).
//!
//! Health belongs to the upstream URL, not to a table: every table that
//! names a URL holds the same [`UpstreamHealth`], handed from one table to
//! the next at build time (see `RouteTable::carry_state_from`), so a reload
//! keeps an ejected upstream ejected and a removed one's state goes with the
//! last table that named it. The request path reads and updates it with
//! atomics only; the common case (healthy, never failed) is a few loads and
//! no store, so worker threads do not bounce a cache line between them.

use std::hash::Hasher;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use url::Url;

use crate::routes::config::{http_twin, UpstreamProtocol, UpstreamSpec};
use crate::routes::counters::InFlight;
use crate::routes::upstream_tls::{Redirected, TlsTarget, UpstreamTls};

/// Consecutive connect failures or timeouts that eject an upstream.
pub const EJECT_AFTER_FAILURES: u32 = 3;
/// The first ejection's length; each ejection in a row doubles it.
pub const FIRST_EJECTION: Duration = Duration::from_secs(5);
pub const MAX_EJECTION: Duration = Duration::from_secs(60);
/// How long the one request let through after an ejection has before
/// another may try: as long as a connect may take, so a trial whose client
/// went away does not keep the upstream out for good.
pub const TRIAL_WINDOW: Duration = Duration::from_secs(5);
/// Tries per request after connect failures, each to a different upstream
/// (SPEC 4.10).
pub const MAX_TRIES: usize = 3;

/// Milliseconds on a monotonic clock shared by the process; never 0, so 0
/// can mean "not set" in the atomics below.
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

fn ms(duration: Duration) -> u64 {
    duration.as_millis() as u64
}

/// What active checks last said about an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckVerdict {
    /// No check has decided yet, or none runs.
    Unknown = 0,
    Healthy = 1,
    Unhealthy = 2,
}

/// The state an upstream is shown in (`GET /upstreams`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamState {
    Healthy,
    Ejected,
    /// Its ejection has run out, or its trial request is under way, and
    /// nothing has answered since it failed: never shown as healthy
    /// (SPEC 4.10).
    Recovering,
    Unhealthy,
    Unknown,
}

/// The health of one upstream URL, shared by every route and table that
/// names it.
#[derive(Debug, Default)]
pub struct UpstreamHealth {
    consecutive_failures: AtomicU32,
    /// When the current ejection ends (see [`now_ms`]); 0 when in.
    ejected_until: AtomicU64,
    ejections_in_row: AtomicU32,
    /// When the one request let through after an ejection started; 0 when
    /// no trial runs.
    trial_started: AtomicU64,
    verdict: AtomicU8,
    /// Whether an active check runs for this URL now.
    checked: AtomicBool,
    /// Unix time of the last finished check, in milliseconds; 0 if none.
    last_check_unix_ms: AtomicU64,
}

impl UpstreamHealth {
    pub fn verdict(&self) -> CheckVerdict {
        match self.verdict.load(Ordering::Relaxed) {
            1 => CheckVerdict::Healthy,
            2 => CheckVerdict::Unhealthy,
            _ => CheckVerdict::Unknown,
        }
    }

    /// Whether a request may go here now, for display: reads only.
    pub fn eligible(&self, now: u64) -> bool {
        self.verdict() != CheckVerdict::Unhealthy
            && now >= self.ejected_until.load(Ordering::Relaxed)
    }

    /// Takes this upstream for a request if it is eligible. After an
    /// ejection has run out, only the first request to ask gets it (a
    /// trial); the others keep away until that one succeeds or fails.
    pub fn try_take(&self, now: impl FnOnce() -> u64) -> bool {
        if self.verdict() == CheckVerdict::Unhealthy {
            return false;
        }
        let until = self.ejected_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = now();
        if now < until {
            return false;
        }
        let claimed = self
            .ejected_until
            .compare_exchange(
                until,
                now + ms(TRIAL_WINDOW),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok();
        if claimed {
            self.trial_started.store(now, Ordering::Release);
        }
        claimed
    }

    /// An exchange got response headers: the upstream is there. Stores only
    /// when something changes.
    pub fn succeeded(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        if self.ejected_until.load(Ordering::Relaxed) != 0 {
            self.ejected_until.store(0, Ordering::Release);
            self.ejections_in_row.store(0, Ordering::Relaxed);
            self.trial_started.store(0, Ordering::Relaxed);
        }
    }

    /// A connect failed or the upstream did not answer in time. Returns
    /// whether this failure ejected the upstream.
    pub fn failed(&self, now: u64) -> bool {
        if self.trial_started.swap(0, Ordering::AcqRel) != 0 {
            self.eject(now);
            return true;
        }
        // Requests that were already under way when it was ejected fail
        // too; they say nothing new.
        if self.ejected_until.load(Ordering::Acquire) != 0 {
            return false;
        }
        let failures = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures == EJECT_AFTER_FAILURES {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            self.eject(now);
            return true;
        }
        false
    }

    fn eject(&self, now: u64) {
        let in_row = self.ejections_in_row.fetch_add(1, Ordering::AcqRel).min(16);
        let length = (ms(FIRST_EJECTION) << in_row).min(ms(MAX_EJECTION));
        self.ejected_until.store(now + length, Ordering::Release);
    }

    /// Records an active check's verdict once it has flipped.
    pub fn set_verdict(&self, verdict: CheckVerdict) {
        self.verdict.store(verdict as u8, Ordering::Relaxed);
    }

    pub fn set_checked(&self, checked: bool) {
        self.checked.store(checked, Ordering::Relaxed);
        if !checked {
            self.set_verdict(CheckVerdict::Unknown);
        }
    }

    pub fn checked_at(&self, unix_ms: u64) {
        self.last_check_unix_ms.store(unix_ms, Ordering::Relaxed);
    }

    /// Whether a request may go here now, without claiming the trial of
    /// an ejection that ran out: for a balancer weighing candidates, which
    /// then takes the one it picks with [`UpstreamHealth::try_take`].
    pub fn available(&self, now: u64) -> bool {
        self.eligible(now)
    }

    /// The state to show, as of `now`.
    pub fn state(&self, now: u64) -> UpstreamState {
        let until = self.ejected_until.load(Ordering::Relaxed);
        if until != 0 {
            // Ejected, and nothing has answered since: `succeeded` is what
            // clears `ejected_until`.
            let trial = self.trial_started.load(Ordering::Relaxed) != 0;
            return if now < until && !trial {
                UpstreamState::Ejected
            } else {
                UpstreamState::Recovering
            };
        }
        match self.verdict() {
            CheckVerdict::Unhealthy => UpstreamState::Unhealthy,
            CheckVerdict::Healthy => UpstreamState::Healthy,
            CheckVerdict::Unknown if self.checked.load(Ordering::Relaxed) => UpstreamState::Unknown,
            CheckVerdict::Unknown => UpstreamState::Healthy,
        }
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    /// How long the ejection has left, if the upstream is out.
    pub fn ejected_for(&self, now: u64) -> Option<Duration> {
        let until = self.ejected_until.load(Ordering::Relaxed);
        (until > now).then(|| Duration::from_millis(until - now))
    }

    pub fn last_check_unix_ms(&self) -> Option<u64> {
        Some(self.last_check_unix_ms.load(Ordering::Relaxed)).filter(|&t| t != 0)
    }
}

/// One route's counts for one of its upstreams; they follow the route name
/// and URL across reloads, like the route's own counters.
#[derive(Debug, Default)]
pub struct UpstreamCounters {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub ejections: AtomicU64,
}

/// Which of a worker's upstream clients sends an upstream's requests.
#[derive(Debug, Clone)]
pub enum Connect {
    /// `http://`: HTTP/1.1 only.
    Http1,
    /// `h2c://`: cleartext HTTP/2 with prior knowledge.
    H2c,
    /// `https://`: ALPN, the system's trust anchors, no client certificate.
    Https,
    /// `https://` with the route's `upstream_tls`: a client of its own.
    Tls(Arc<TlsTarget>),
}

/// One upstream of one route, as a table holds it.
#[derive(Debug)]
pub struct RouteUpstream {
    pub spec: UpstreamSpec,
    /// `scheme://host:port/`: the URL a request's path and query are set
    /// on, parsed once per table. `http://` for an `h2c://` upstream, and
    /// the `server_name` in place of the host where `upstream_tls` names
    /// one.
    pub origin: Url,
    pub connect: Connect,
    /// `host:port`, the metrics label.
    pub label: Box<str>,
    pub health: Arc<UpstreamHealth>,
    pub counters: Arc<UpstreamCounters>,
    /// Requests sent here and not yet answered to their end, shared by
    /// every route and table that names the URL, like health (SPEC 7.6).
    pub in_flight: Arc<AtomicUsize>,
    /// Of the URL, for rendezvous hashing: fixed by the URL alone, so a
    /// key's scores do not move when other upstreams come or go.
    pub key_hash: u64,
}

/// The digest of a hash key (a client address, a header or cookie value),
/// the same in every process: a key stays on its upstream across restarts.
pub fn key_digest(key: &[u8]) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    hasher.write(key);
    hasher.finish()
}

impl RouteUpstream {
    /// Counts a request sent here until the returned place is dropped.
    pub fn start(&self) -> InFlight {
        InFlight::enter(&self.in_flight)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

impl RouteUpstream {
    /// `tls` is the route's `upstream_tls`, which only `https://` upstreams
    /// use.
    pub fn new(spec: UpstreamSpec, tls: Option<&Arc<UpstreamTls>>) -> Self {
        let mut origin = spec.url.clone();
        origin.set_path("/");
        origin.set_query(None);
        let connect = match spec.protocol() {
            UpstreamProtocol::Http1 => Connect::Http1,
            UpstreamProtocol::H2c => {
                // Checked when the file was read.
                if let Ok(twin) = http_twin(&spec.url) {
                    origin = twin;
                }
                Connect::H2c
            }
            UpstreamProtocol::Https => match tls {
                None => Connect::Https,
                Some(tls) => {
                    let redirect = tls.spec.server_name.as_ref().and_then(|name| {
                        let redirect = Redirected {
                            server_name: name.clone(),
                            host: spec.url.host_str()?.to_owned(),
                            port: spec.url.port_or_known_default()?,
                        };
                        origin.set_host(Some(name)).ok()?;
                        Some(redirect)
                    });
                    Connect::Tls(Arc::new(TlsTarget::new(Arc::clone(tls), redirect)))
                }
            },
        };
        let label = spec.url[url::Position::BeforeHost..url::Position::AfterPort].into();
        let key_hash = key_digest(spec.url.as_str().as_bytes());
        RouteUpstream {
            spec,
            origin,
            connect,
            label,
            in_flight: Arc::default(),
            key_hash,
            health: Arc::default(),
            counters: Arc::default(),
        }
    }
}

impl RouteUpstream {
    /// Takes over `previous`'s TLS target when both state the same
    /// setting for the same URL, so the clients (and their connections)
    /// that workers keep for it survive the reload; the target's setting
    /// is the one the file watcher keeps current.
    pub fn keep_tls_target(&mut self, previous: &RouteUpstream) {
        if let (Connect::Tls(ours), Connect::Tls(theirs)) = (&self.connect, &previous.connect) {
            if ours.tls.spec == theirs.tls.spec && ours.redirect == theirs.redirect {
                self.connect = Connect::Tls(Arc::clone(theirs));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_failures_eject_and_a_trial_decides() {
        let health = UpstreamHealth::default();
        let t = 1_000;
        assert!(!health.failed(t));
        assert!(!health.failed(t));
        assert!(health.failed(t), "the third failure ejects");
        assert!(!health.try_take(|| t + 4_999));
        assert_eq!(health.state(t + 1), UpstreamState::Ejected);
        // In-flight requests that fail now say nothing new.
        assert!(!health.failed(t + 10));
        // The ejection ends: one request gets a trial, the next does not.
        assert!(health.try_take(|| t + 5_000));
        assert!(!health.try_take(|| t + 5_001));
        // The trial fails: out again, for twice as long.
        assert!(health.failed(t + 5_010));
        assert!(!health.try_take(|| t + 5_010 + 9_999));
        assert!(health.try_take(|| t + 5_010 + 10_000));
        health.succeeded();
        assert!(health.try_take(|| unreachable!("no clock read when healthy")));
        assert_eq!(health.state(t + 20_000), UpstreamState::Healthy);
    }

    #[test]
    fn ejections_in_a_row_double_up_to_a_minute() {
        let health = UpstreamHealth::default();
        let mut t = 1;
        let mut lengths = Vec::new();
        for _ in 0..6 {
            for _ in 0..EJECT_AFTER_FAILURES {
                health.failed(t);
            }
            let length = health.ejected_for(t).expect("ejected").as_secs();
            lengths.push(length);
            t += length * 1_000;
            assert!(health.try_take(|| t));
            // Fails as the trial: ejected again at once.
            health.failed(t);
            health.succeeded();
            // A success between ejections resets the doubling...
        }
        assert!(lengths.iter().all(|&l| l == 5), "{lengths:?}");

        let health = UpstreamHealth::default();
        for _ in 0..EJECT_AFTER_FAILURES {
            health.failed(1);
        }
        let mut t = 1;
        let mut lengths = vec![health.ejected_for(t).expect("ejected").as_secs()];
        for _ in 0..5 {
            t += lengths.last().copied().unwrap_or(0) * 1_000;
            assert!(health.try_take(|| t));
            assert!(health.failed(t));
            lengths.push(health.ejected_for(t).expect("ejected").as_secs());
        }
        // ...failed trials in a row do not.
        assert_eq!(lengths, [5, 10, 20, 40, 60, 60]);
    }
}
