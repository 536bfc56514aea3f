//! The state a route's protection keeps (SPEC 7.4, 7.5): rate-limit
//! buckets, the in-flight count of `max_in_flight`, and the retry budget.
//! Each belongs to the route's name and setting, as health belongs to an
//! upstream URL: a table takes it over from the one before when both state
//! the same setting (`RouteTable::carry_state_from`), and a changed
//! setting starts afresh.
//!
//! Everything here is atomics and a lock-free map: shared by every worker,
//! so a limit holds for the process, never per thread, and the request path
//! takes no lock.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use url::Url;

use crate::routes::config::{
    http_twin, MirrorSpec, RateLimitSpec, RetrySpec, RouteSpec, UpstreamProtocol,
};
use crate::routes::counters::InFlight;
use crate::routes::upstreams::Connect;

/// Nanoseconds on the process's monotonic clock: what buckets count in.
pub fn clock_ns() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    // The first reading is one interval of any rate past zero, so a new
    // bucket (zero) starts full.
    u64::try_from(START.elapsed().as_nanos()).unwrap_or(u64::MAX) + 1
}

/// One token bucket as one atomic word, by the generic cell rate
/// algorithm: the word holds the time at which the bucket will be full
/// again (the "theoretical arrival time"); a request takes a token by
/// moving it one interval later, and may do so while it is at most the
/// burst's worth of intervals ahead of now. Zero is a full bucket.
#[derive(Debug, Default)]
pub struct Bucket(AtomicU64);

impl Bucket {
    /// Takes a token at `now`, or says how long until one comes.
    fn take(&self, now: u64, interval: u64, tolerance: u64) -> Result<(), Duration> {
        let mut full_at = self.0.load(Ordering::Relaxed);
        loop {
            let from = full_at.max(now);
            let ahead = from - now;
            if ahead > tolerance {
                return Err(Duration::from_nanos(ahead - tolerance));
            }
            match self.0.compare_exchange_weak(
                full_at,
                from + interval,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => full_at = actual,
            }
        }
    }

    /// Whether the bucket has refilled completely: forgetting it changes
    /// nothing a request could see.
    fn is_full(&self, now: u64) -> bool {
        self.0.load(Ordering::Relaxed) <= now
    }
}

/// What a keyed bucket is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BucketKey {
    Ip(IpAddr),
    Header(Bytes),
}

/// A route's rate limit: one bucket, or one per key, bounded.
#[derive(Debug)]
pub struct RateLimiter {
    pub spec: RateLimitSpec,
    interval: u64,
    tolerance: u64,
    /// The route's bucket, or the one that requests without the keyed
    /// header share.
    shared: Bucket,
    keyed: papaya::HashMap<BucketKey, Bucket, foldhash::fast::RandomState>,
    /// Taken by new keys while every keyed bucket is still refilling and
    /// the map holds `max_keys` (SPEC 7.4).
    overflow: Bucket,
    pub limited: AtomicU64,
    pub overflowed: AtomicU64,
}

/// A request the limit turned away, and when a token will be there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
}

impl RateLimiter {
    pub fn new(spec: RateLimitSpec) -> Self {
        let interval = spec.interval_ns();
        RateLimiter {
            tolerance: interval.saturating_mul(spec.burst.saturating_sub(1)),
            interval,
            shared: Bucket::default(),
            keyed: papaya::HashMap::builder()
                .hasher(foldhash::fast::RandomState::default())
                .build(),
            overflow: Bucket::default(),
            limited: AtomicU64::new(0),
            overflowed: AtomicU64::new(0),
            spec,
        }
    }

    /// Takes a token for a request with `key` (`None`: the shared bucket).
    pub fn admit(&self, key: Option<BucketKey>) -> Result<(), Limited> {
        let now = clock_ns();
        let taken = match key {
            None => self.take(&self.shared, now),
            Some(key) => {
                let keyed = self.keyed.pin();
                match keyed.get(&key) {
                    Some(bucket) => self.take(bucket, now),
                    None if keyed.len() < self.spec.max_keys => {
                        // Two requests of a new key may race to insert:
                        // the map keeps one bucket, and both take from it.
                        let bucket = keyed.get_or_insert_with(key, Bucket::default);
                        self.take(bucket, now)
                    }
                    None => {
                        self.overflowed.fetch_add(1, Ordering::Relaxed);
                        self.take(&self.overflow, now)
                    }
                }
            }
        };
        if taken.is_err() {
            self.limited.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    fn take(&self, bucket: &Bucket, now: u64) -> Result<(), Limited> {
        bucket
            .take(now, self.interval, self.tolerance)
            .map_err(|retry_after| Limited { retry_after })
    }

    /// Forgets the keyed buckets that have refilled completely, which is
    /// all a bound on keys may forget (SPEC 7.4: a limit is never lifted).
    /// Run off the request path, now and then.
    pub fn forget_full(&self) -> usize {
        let now = clock_ns();
        let keyed = self.keyed.pin();
        let before = keyed.len();
        keyed.retain(|_, bucket| !bucket.is_full(now));
        before - keyed.len()
    }

    pub fn keys(&self) -> usize {
        self.keyed.len()
    }

    pub fn is_keyed(&self) -> bool {
        self.spec.key != crate::routes::config::LimitKey::Route
    }
}

/// `max_in_flight` (SPEC 7.4): a count of the route's requests between
/// routing and the end of their response, across all workers.
#[derive(Debug)]
pub struct InFlightCap {
    pub max: u32,
    count: Arc<AtomicUsize>,
    pub overloaded: AtomicU64,
}

impl InFlightCap {
    pub fn new(max: u32) -> Self {
        InFlightCap {
            max,
            count: Arc::default(),
            overloaded: AtomicU64::new(0),
        }
    }

    /// Counts one more request, or refuses it at once when `max` are in
    /// flight: nothing queues.
    pub fn enter(&self) -> Option<InFlight> {
        let before = self.count.fetch_add(1, Ordering::AcqRel);
        if before >= self.max as usize {
            self.count.fetch_sub(1, Ordering::AcqRel);
            self.overloaded.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(InFlight::taken(&self.count))
    }

    pub fn current(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

/// The window a retry budget counts over (SPEC 7.5), in one-second slots.
const BUDGET_SLOTS: usize = 10;

/// Retries allowed each second whatever the share says, so a route with
/// little traffic may still retry (SPEC 7.5).
const BUDGET_FLOOR_PER_SECOND: u64 = 10;

/// One second of a retry budget's window.
#[derive(Debug, Default)]
struct Slot {
    second: AtomicU64,
    firsts: AtomicU64,
    retries: AtomicU64,
}

/// A route's retry budget: over the last ten seconds, retries may be at
/// most `percent` of first tries, plus ten a second.
#[derive(Debug)]
pub struct RetryBudget {
    pub spec: RetrySpec,
    slots: [Slot; BUDGET_SLOTS],
    pub exhausted: AtomicU64,
}

impl RetryBudget {
    pub fn new(spec: RetrySpec) -> Self {
        RetryBudget {
            spec,
            slots: std::array::from_fn(|_| Slot::default()),
            exhausted: AtomicU64::new(0),
        }
    }

    /// The slot of `second`, emptied if it last counted an older second.
    /// Two threads crossing into a new second together may each count one
    /// request into the old count before it is emptied: the budget is
    /// approximate at slot edges by design, never by a wide margin.
    fn slot(&self, second: u64) -> &Slot {
        let slot = &self.slots[second as usize % BUDGET_SLOTS];
        let seen = slot.second.load(Ordering::Acquire);
        if seen != second
            && slot
                .second
                .compare_exchange(seen, second, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            slot.firsts.store(0, Ordering::Relaxed);
            slot.retries.store(0, Ordering::Relaxed);
        }
        slot
    }

    /// Counts a request's first try.
    pub fn first_try(&self) {
        let second = clock_ns() / 1_000_000_000;
        self.slot(second).firsts.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a retry if the budget has room for it; `false` (and counted
    /// as exhausted) if not.
    pub fn try_retry(&self) -> bool {
        let second = clock_ns() / 1_000_000_000;
        let (mut firsts, mut retries) = (0u64, 0u64);
        for slot in &self.slots {
            let at = slot.second.load(Ordering::Acquire);
            if at + (BUDGET_SLOTS as u64) > second {
                firsts += slot.firsts.load(Ordering::Relaxed);
                retries += slot.retries.load(Ordering::Relaxed);
            }
        }
        let allowed = firsts * u64::from(self.spec.budget_percent) / 100
            + BUDGET_FLOOR_PER_SECOND * BUDGET_SLOTS as u64;
        if retries >= allowed {
            self.exhausted.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.slot(second).retries.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// A route's `mirror` (SPEC 7.6): which requests are copied, and what
/// became of the copies.
#[derive(Debug)]
pub struct Mirror {
    pub spec: MirrorSpec,
    /// The URL a copy's path and query are set on (`http://` for an
    /// `h2c://` target) and the client that sends it, worked out once per
    /// table; `None` if the target has no usable origin (checked when the
    /// file was read, so never in practice).
    pub destination: Option<(Url, Connect)>,
    /// Requests seen: the copied share is taken from this count, so that
    /// exactly `percent` in every hundred are copied, spread over them.
    seen: AtomicU64,
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

impl Mirror {
    pub fn new(spec: MirrorSpec) -> Self {
        let target = &spec.to;
        let destination = match UpstreamProtocol::of(target) {
            UpstreamProtocol::H2c => http_twin(target).ok().map(|url| (url, Connect::H2c)),
            UpstreamProtocol::Https => Some((target.clone(), Connect::Https)),
            UpstreamProtocol::Http1 => Some((target.clone(), Connect::Http1)),
        };
        Mirror {
            spec,
            destination,
            seen: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Whether this request is one of the copied share: the n-th request
    /// is when `n * percent` crosses a multiple of a hundred.
    pub fn selects(&self) -> bool {
        let percent = u64::from(self.spec.percent);
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        (n + 1) * percent / 100 > n * percent / 100
    }
}

/// A route's protection state, each part kept while its setting is.
#[derive(Debug, Default)]
pub struct Protection {
    pub rate_limit: Option<Arc<RateLimiter>>,
    pub in_flight: Option<Arc<InFlightCap>>,
    pub retry: Option<Arc<RetryBudget>>,
    pub mirror: Option<Arc<Mirror>>,
}

impl Protection {
    /// Whether a request must be admitted (a rate limit or an in-flight
    /// cap) before it goes anywhere.
    pub fn guards_admission(&self) -> bool {
        self.rate_limit.is_some() || self.in_flight.is_some()
    }

    pub fn new(spec: &RouteSpec) -> Self {
        Protection {
            rate_limit: spec
                .rate_limit
                .clone()
                .map(|s| Arc::new(RateLimiter::new(s))),
            in_flight: spec
                .max_in_flight
                .map(|max| Arc::new(InFlightCap::new(max))),
            retry: spec.retry.clone().map(|s| Arc::new(RetryBudget::new(s))),
            mirror: spec.mirror.clone().map(|s| Arc::new(Mirror::new(s))),
        }
    }

    /// Takes over each part of `previous` whose setting is the same.
    pub fn carry_from(&mut self, previous: &Protection) {
        fn keep<T>(
            ours: &mut Option<Arc<T>>,
            theirs: &Option<Arc<T>>,
            same: impl Fn(&T, &T) -> bool,
        ) {
            if let (Some(new), Some(old)) = (ours.as_ref(), theirs.as_ref()) {
                if same(new, old) {
                    *ours = Some(Arc::clone(old));
                }
            }
        }
        keep(&mut self.rate_limit, &previous.rate_limit, |a, b| {
            a.spec == b.spec
        });
        keep(&mut self.in_flight, &previous.in_flight, |a, b| {
            a.max == b.max
        });
        keep(&mut self.retry, &previous.retry, |a, b| a.spec == b.spec);
        keep(&mut self.mirror, &previous.mirror, |a, b| a.spec == b.spec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::config::{LimitKey, RetryOn};

    fn limit(tokens: u64, burst: u64, key: LimitKey, max_keys: usize) -> RateLimiter {
        RateLimiter::new(RateLimitSpec {
            tokens,
            per: Duration::from_secs(1),
            burst,
            key,
            max_keys,
        })
    }

    #[test]
    fn a_bucket_lets_its_burst_through_then_one_token_an_interval() {
        let bucket = Bucket::default();
        let (interval, tolerance) = (10, 40); // burst 5
        let now = 1_000;
        for _ in 0..5 {
            assert_eq!(bucket.take(now, interval, tolerance), Ok(()));
        }
        assert_eq!(
            bucket.take(now, interval, tolerance),
            Err(Duration::from_nanos(10))
        );
        assert_eq!(bucket.take(now + 10, interval, tolerance), Ok(()));
        assert!(!bucket.is_full(now + 10));
        assert!(bucket.is_full(now + 60));
    }

    #[test]
    fn keyed_buckets_are_separate_and_new_keys_overflow_past_max_keys() {
        let limiter = limit(1, 1, LimitKey::ClientIp, 2);
        let ip = |n: u8| Some(BucketKey::Ip(IpAddr::from([127, 0, 0, n])));
        assert!(limiter.admit(ip(1)).is_ok());
        assert!(limiter.admit(ip(1)).is_err(), "key 1 spent its burst");
        assert!(limiter.admit(ip(2)).is_ok(), "key 2 has its own");
        // The map is full and nothing has refilled: keys 3 and 4 share.
        assert!(limiter.admit(ip(3)).is_ok());
        assert!(limiter.admit(ip(4)).is_err());
        assert_eq!(limiter.overflowed.load(Ordering::Relaxed), 2);
        assert_eq!(limiter.forget_full(), 0, "nothing has refilled");
        assert_eq!(limiter.keys(), 2);
    }

    #[test]
    fn an_in_flight_cap_refuses_at_once_and_counts_down_on_drop() {
        let cap = InFlightCap::new(2);
        let first = cap.enter().expect("room");
        let _second = cap.enter().expect("room");
        assert!(cap.enter().is_none());
        drop(first);
        assert!(cap.enter().is_some());
        assert_eq!(cap.overloaded.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_mirror_selects_exactly_its_share_spread_out() {
        let mirror = Mirror::new(MirrorSpec {
            to: url::Url::parse("http://127.0.0.1:9").expect("a URL"),
            percent: 30,
        });
        let picks: Vec<bool> = (0..100).map(|_| mirror.selects()).collect();
        assert_eq!(picks.iter().filter(|p| **p).count(), 30);
        assert!(
            !picks[..3].iter().all(|p| *p),
            "spread, not the first thirty"
        );
    }

    #[test]
    fn a_retry_budget_allows_its_share_plus_the_floor() {
        let budget = RetryBudget::new(RetrySpec {
            on: RetryOn::default(),
            attempts: 3,
            per_try_timeout: None,
            budget_percent: 20,
        });
        for _ in 0..1_000 {
            budget.first_try();
        }
        let allowed = (0..1_000).filter(|_| budget.try_retry()).count();
        assert_eq!(allowed, 200 + 100);
        assert_eq!(budget.exhausted.load(Ordering::Relaxed), 700);
    }
}
