//! Per-route counters (SPEC 3) that a route table holds: requests by status
//! code, a duration histogram, and upstream errors by kind; and
//! [`InFlight`], a request's place in an in-flight count (a route's
//! `max_in_flight`, an upstream's load).
//!
//! The request path never takes a lock. Each route's [`RouteMetrics`] is
//! created when its table is built and lives inside that table, so a
//! request reaches its counters through the snapshot it already holds and
//! pays a few relaxed atomic increments. prometheus-client's own `Family`
//! (a map behind a lock) and `Histogram` (a mutex per observation) are not
//! used for per-request values for that reason. A route that keeps its name
//! keeps its counters across reloads (see
//! [`RouteTable::carry_state_from`]); `observe::metrics` encodes them at
//! scrape time.
//!
//! [`RouteTable::carry_state_from`]: crate::routes::table::RouteTable::carry_state_from

use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::StatusCode;

/// A request's place in an in-flight count, given back when dropped: at
/// the end of its response body, or when it failed before that.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// Takes a place in `count`.
    pub fn enter(count: &Arc<AtomicUsize>) -> InFlight {
        count.fetch_add(1, Ordering::AcqRel);
        InFlight::taken(count)
    }

    /// The place a caller already added to `count` (to check a cap in the
    /// same atomic step).
    pub fn taken(count: &Arc<AtomicUsize>) -> InFlight {
        InFlight(Arc::clone(count))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Upper bounds of the duration histogram, in microseconds: 1 ms to 10 s in
/// roughly 2.5x steps, which covers a sidecar hop (sub-millisecond, in the
/// first bucket) up to the default 30 s route timeout's useful range; the
/// implicit `+Inf` bucket catches the rest.
const DURATION_BUCKETS_US: [u64; 13] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

/// Status codes 100 to 599 are counted each under their own label; anything
/// else (HTTP allows up to 999) is counted once, as `code="other"`. This
/// bounds the label's cardinality.
const FIRST_CODE: u16 = 100;
const LAST_CODE: u16 = 599;
/// The key `other` is counted under: not a status code, and not 0, which
/// marks a free slot.
const OTHER_KEY: u16 = 1;
/// Distinct codes a route can count in its own slots. Most routes answer
/// with a handful (200, 304, 404, 502...); eight slots are 128 bytes a
/// route, where a counter for every code would be 4 KB (40 MB for a
/// 10,000-route table).
const INLINE_CODES: usize = 8;

/// Counters by status code, lock-free and compact. The first
/// [`INLINE_CODES`] distinct codes claim a slot each with one
/// compare-and-swap; a route that answers with more distinct codes gets a
/// counter for every code, allocated once, the first time it needs it.
#[derive(Debug)]
struct CodeCounts {
    slots: [(AtomicU16, AtomicU64); INLINE_CODES],
    every_code: OnceLock<Box<[AtomicU64]>>,
}

impl CodeCounts {
    fn new() -> Self {
        CodeCounts {
            slots: std::array::from_fn(|_| (AtomicU16::new(0), AtomicU64::new(0))),
            every_code: OnceLock::new(),
        }
    }

    fn add(&self, code: u16) {
        let key = if (FIRST_CODE..=LAST_CODE).contains(&code) {
            code
        } else {
            OTHER_KEY
        };
        for (slot_key, count) in &self.slots {
            let claimed = match slot_key.load(Ordering::Acquire) {
                0 => match slot_key.compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => key,
                    Err(other) => other,
                },
                other => other,
            };
            if claimed == key {
                count.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let every_code = self
            .every_code
            .get_or_init(|| (0..=LAST_CODE).map(|_| AtomicU64::new(0)).collect());
        every_code[usize::from(key)].fetch_add(1, Ordering::Relaxed);
    }

    /// (label, count) for every code seen, in code order, `other` last.
    fn snapshot(&self) -> Vec<(String, u64)> {
        let mut counts = vec![0u64; usize::from(LAST_CODE) + 1];
        for (key, count) in &self.slots {
            let key = key.load(Ordering::Acquire);
            if key != 0 {
                counts[usize::from(key)] += count.load(Ordering::Relaxed);
            }
        }
        if let Some(every_code) = self.every_code.get() {
            for (total, count) in counts.iter_mut().zip(every_code.iter()) {
                *total += count.load(Ordering::Relaxed);
            }
        }
        let label = |key: usize| match u16::try_from(key) {
            Ok(OTHER_KEY) => "other".to_owned(),
            _ => key.to_string(),
        };
        let mut seen: Vec<(String, u64)> = counts
            .iter()
            .enumerate()
            .filter(|(key, count)| **count > 0 && *key != usize::from(OTHER_KEY))
            .map(|(key, count)| (label(key), *count))
            .collect();
        if counts[usize::from(OTHER_KEY)] > 0 {
            seen.push((
                label(usize::from(OTHER_KEY)),
                counts[usize::from(OTHER_KEY)],
            ));
        }
        seen
    }
}

/// Why an upstream exchange failed: the `kind` label of
/// `switchyard_upstream_errors_total`. A closed set, so the label is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    Unavailable,
    Timeout,
    InvalidResponse,
    /// The response body broke off after the headers had been sent.
    BodyAborted,
}

impl UpstreamErrorKind {
    pub const ALL: [UpstreamErrorKind; 4] = [
        UpstreamErrorKind::Unavailable,
        UpstreamErrorKind::Timeout,
        UpstreamErrorKind::InvalidResponse,
        UpstreamErrorKind::BodyAborted,
    ];

    /// The label value; the first three are the JSON `error` of the response.
    pub fn label(self) -> &'static str {
        match self {
            UpstreamErrorKind::Unavailable => "upstream_unavailable",
            UpstreamErrorKind::Timeout => "upstream_timeout",
            UpstreamErrorKind::InvalidResponse => "upstream_invalid_response",
            UpstreamErrorKind::BodyAborted => "upstream_body_aborted",
        }
    }
}

/// Why a request was tried again: the `reason` label of
/// `switchyard_upstream_retries_total` (SPEC 3, 7.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// The connect failed: nothing reached the upstream (SPEC 4.10).
    Connect,
    /// The upstream closed or reset before a complete response head.
    Reset,
    /// `per_try_timeout` passed with no response head.
    Timeout,
    /// The upstream answered with a status `retry.on` names.
    Status,
}

impl RetryReason {
    pub const ALL: [RetryReason; 4] = [
        RetryReason::Connect,
        RetryReason::Reset,
        RetryReason::Timeout,
        RetryReason::Status,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RetryReason::Connect => "connect",
            RetryReason::Reset => "reset",
            RetryReason::Timeout => "timeout",
            RetryReason::Status => "status",
        }
    }
}

/// A histogram made of atomics. The `+Inf` count is the sum of the bucket
/// counts when encoded, so a scrape never shows a count that disagrees with
/// its buckets.
#[derive(Debug)]
struct DurationHistogram {
    /// Non-cumulative: `buckets[i]` counts observations in
    /// `(bound[i-1], bound[i]]`; the last slot is above every bound.
    buckets: [AtomicU64; DURATION_BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl DurationHistogram {
    fn new() -> Self {
        DurationHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }

    fn observe(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let slot = DURATION_BUCKETS_US.partition_point(|&bound| bound < us);
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// (sum in seconds, count, per-bucket counts with upper bounds in
    /// seconds). The encoder makes the buckets cumulative.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut count = 0;
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for (slot, observed) in self.buckets.iter().enumerate() {
            let observed = observed.load(Ordering::Relaxed);
            count += observed;
            let bound = DURATION_BUCKETS_US
                .get(slot)
                .map_or(f64::INFINITY, |&us| us as f64 / 1e6);
            buckets.push((bound, observed));
        }
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        (sum, count, buckets)
    }
}

/// One route's counters (or those of requests with no route). Created only
/// when a table is built; the request path reaches it through its snapshot.
#[derive(Debug)]
pub struct RouteMetrics {
    codes: CodeCounts,
    duration: DurationHistogram,
    upstream_errors: [AtomicU64; UpstreamErrorKind::ALL.len()],
    /// Tries after a request's first (SPEC 4.10, 7.5), by reason.
    retries: [AtomicU64; RetryReason::ALL.len()],
}

impl Default for RouteMetrics {
    fn default() -> Self {
        RouteMetrics {
            codes: CodeCounts::new(),
            duration: DurationHistogram::new(),
            upstream_errors: std::array::from_fn(|_| AtomicU64::new(0)),
            retries: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl RouteMetrics {
    /// Counts a finished request: its status and how long it took.
    pub fn record(&self, status: StatusCode, elapsed: Duration) {
        self.codes.add(status.as_u16());
        self.duration.observe(elapsed);
    }

    pub fn upstream_error(&self, kind: UpstreamErrorKind) {
        self.upstream_errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn retried(&self, reason: RetryReason) {
        self.retries[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Retries so far, by reason.
    pub fn retries(&self) -> impl Iterator<Item = (RetryReason, u64)> + '_ {
        RetryReason::ALL.iter().map(|&reason| {
            (
                reason,
                self.retries[reason as usize].load(Ordering::Relaxed),
            )
        })
    }

    /// Requests counted so far, by status code label, codes never seen left out.
    /// (sum in seconds, count, per-bucket counts with upper bounds in
    /// seconds) of the request durations seen so far.
    pub fn durations(&self) -> (f64, u64, Vec<(f64, u64)>) {
        self.duration.snapshot()
    }

    pub fn codes(&self) -> impl Iterator<Item = (String, u64)> {
        self.codes.snapshot().into_iter()
    }

    pub fn upstream_errors(&self) -> impl Iterator<Item = (UpstreamErrorKind, u64)> + '_ {
        UpstreamErrorKind::ALL.iter().map(|&kind| {
            (
                kind,
                self.upstream_errors[kind as usize].load(Ordering::Relaxed),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn codes_are_counted_exactly_past_the_inline_slots() {
        let counts = CodeCounts::new();
        // More distinct codes than inline slots, each a different number
        // of times, plus codes outside 100-599.
        let codes: Vec<u16> = (200..200 + INLINE_CODES as u16 + 4).collect();
        for (times, &code) in codes.iter().enumerate() {
            for _ in 0..=times {
                counts.add(code);
            }
        }
        counts.add(600);
        counts.add(999);
        let mut expected: Vec<(String, u64)> = codes
            .iter()
            .enumerate()
            .map(|(times, code)| (code.to_string(), times as u64 + 1))
            .collect();
        expected.push(("other".to_owned(), 2));
        assert_eq!(counts.snapshot(), expected);
    }

    #[test]
    fn concurrent_first_uses_of_a_code_count_every_request() {
        let counts = Arc::new(CodeCounts::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let counts = Arc::clone(&counts);
                std::thread::spawn(move || {
                    for i in 0..1000u16 {
                        counts.add(200 + i % 12);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("counting thread");
        }
        let total: u64 = counts.snapshot().iter().map(|(_, n)| n).sum();
        assert_eq!(total, 4000);
        assert_eq!(counts.snapshot().len(), 12);
    }

    #[test]
    fn histogram_bounds_are_inclusive() {
        let histogram = DurationHistogram::new();
        histogram.observe(Duration::from_micros(1_000));
        histogram.observe(Duration::from_micros(1_001));
        histogram.observe(Duration::from_secs(60));
        let (sum, count, buckets) = histogram.snapshot();
        assert_eq!(count, 3);
        assert_eq!(
            buckets[0],
            (0.001, 1),
            "the bound itself is inside its bucket"
        );
        assert_eq!(buckets[1], (0.0025, 1));
        assert_eq!(buckets[buckets.len() - 2].1, 0);
        assert_eq!(buckets[buckets.len() - 1], (f64::INFINITY, 1));
        assert!((sum - 60.002001).abs() < 1e-9);
    }
}
