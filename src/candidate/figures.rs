//! What one table's answers looked like while a canary ran: how many, how
//! many were 5xx, and their latency as a histogram fine enough for a p99
//! (SPEC 10.2). Written by the request path with relaxed atomic adds,
//! read by the judge on the control runtime.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Four buckets for each power of two of microseconds: a bucket's upper
/// bound is at most 19% above its lower, and 2^36 µs (19 hours) is the
/// last bound. Counting one answer is a `leading_zeros` and a shift.
const SUB_BUCKETS: u32 = 4;
const BUCKETS: usize = 37 * SUB_BUCKETS as usize;

/// Answers of one table.
#[derive(Debug)]
pub struct Figures {
    /// By class: 1xx to 5xx.
    classes: [AtomicU64; 5],
    latency: [AtomicU64; BUCKETS],
}

impl Default for Figures {
    fn default() -> Self {
        Figures {
            classes: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// The figures `GET /candidate`, `/healthz` and `/reloads` show, and the
/// judge compares.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Snapshot {
    pub requests: u64,
    pub errors_5xx: u64,
    /// The 99th percentile of time to the answer's head, in milliseconds
    /// (the upper bound of its histogram bucket); 0 with no answers.
    pub p99_ms: f64,
}

impl Snapshot {
    /// The share of 5xx answers, 0 with none.
    pub fn error_share(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors_5xx as f64 / self.requests as f64
        }
    }
}

/// The class index of a status: 0 for 1xx up to 4 for 5xx.
pub fn class_of(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

/// The class label Prometheus shows for an index.
pub const CLASS_LABELS: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn bucket_of(elapsed: Duration) -> usize {
    let micros = u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    let power = 63 - micros.leading_zeros();
    let sub = if power >= 2 {
        (micros >> (power - 2)) & u64::from(SUB_BUCKETS - 1)
    } else {
        0
    };
    ((power * SUB_BUCKETS) as usize + sub as usize).min(BUCKETS - 1)
}

/// The upper bound of a bucket, in microseconds.
fn upper_bound_micros(bucket: usize) -> u64 {
    let power = bucket as u32 / SUB_BUCKETS;
    let sub = u64::from(bucket as u32 % SUB_BUCKETS);
    if power < 2 {
        return 1 << (power + 1);
    }
    let step = 1u64 << (power - 2);
    (1u64 << power) + (sub + 1) * step
}

impl Figures {
    pub fn record(&self, status: u16, elapsed: Duration) {
        self.classes[class_of(status)].fetch_add(1, Ordering::Relaxed);
        self.latency[bucket_of(elapsed)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let counts: Vec<u64> = self
            .latency
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let requests: u64 = self.classes.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        let total: u64 = counts.iter().sum();
        let p99_ms = if total == 0 {
            0.0
        } else {
            // The smallest bucket under which at least 99% of answers fall.
            let wanted = total - total / 100;
            let mut seen = 0;
            let bucket = counts
                .iter()
                .position(|&count| {
                    seen += count;
                    seen >= wanted
                })
                .unwrap_or(BUCKETS - 1);
            upper_bound_micros(bucket) as f64 / 1000.0
        };
        Snapshot {
            requests,
            errors_5xx: self.classes[4].load(Ordering::Relaxed),
            p99_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_latency_falls_under_its_buckets_bound_within_a_fifth() {
        for micros in [
            1u64,
            2,
            3,
            5,
            99,
            100,
            1_000,
            1_234,
            50_000,
            200_000,
            3_600_000_000,
        ] {
            let bucket = bucket_of(Duration::from_micros(micros));
            let bound = upper_bound_micros(bucket);
            assert!(bound > micros, "{micros} µs: bound {bound}");
            // Under 8 µs a bucket is a whole microsecond or two wide.
            let slack = if micros < 8 { 2.0 } else { 1.25 };
            assert!(
                bound as f64 <= micros as f64 * slack,
                "{micros} µs: bound {bound}"
            );
        }
    }

    #[test]
    fn the_p99_and_the_error_share_follow_the_answers() {
        let figures = Figures::default();
        for _ in 0..990 {
            figures.record(200, Duration::from_millis(1));
        }
        for _ in 0..10 {
            figures.record(503, Duration::from_millis(200));
        }
        let snapshot = figures.snapshot();
        assert_eq!(snapshot.requests, 1000);
        assert_eq!(snapshot.errors_5xx, 10);
        assert!((snapshot.error_share() - 0.01).abs() < 1e-9);
        assert!(
            snapshot.p99_ms >= 1.0 && snapshot.p99_ms < 1.25,
            "{snapshot:?}"
        );
        figures.record(503, Duration::from_millis(200));
        assert!(figures.snapshot().p99_ms >= 200.0);
    }
}
