//! The last 15 minutes, a sample a second, for the dashboard's charts
//! (`GET /history`): each route's request rate, 5xx share and p99, and each
//! upstream's state.
//!
//! Nothing here runs on the request path. A task on the control runtime
//! ([`spawn`]) reads the live table's counters once a second, the same
//! atomics `/metrics` reads, and turns the difference from the previous
//! reading into a sample. The rings sit behind one `std::sync::Mutex`,
//! taken by that task once a second to append and by the admin handler to
//! copy them out; neither holds it across an `.await` (both critical
//! sections are plain synchronous code), and a request never touches it,
//! so a lock is simpler than a lock-free ring and costs the proxy nothing.
//!
//! Everything is bounded: [`SAMPLES`] per series, [`MAX_ROUTES`] routes
//! and [`MAX_UPSTREAMS`] upstreams charted. Series follow the live table by
//! name: a route a reload removes drops out at the next tick, one it adds
//! starts with its first full second.
//!
//! p99 is estimated as Prometheus's `histogram_quantile` does, from the
//! increase of each duration bucket over the second: the bucket where the
//! 99th percentile's rank falls, interpolated linearly between its bounds
//! (and the highest finite bound when the rank falls above them all). With
//! a handful of requests in a second it is close to the slowest of them;
//! its precision is that of the buckets (1 ms to 10 s, ~2.5x steps).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::observe::metrics::NO_ROUTE;
use crate::routes::counters::RouteMetrics;
use crate::routes::table::RouteTable;
use crate::routes::upstreams::{now_ms, UpstreamState};

/// One sample a second: as fine as a person reads a 15-minute chart, and
/// what the dashboard's rates used to need two polls for.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// 15 minutes of one-second samples per series.
pub const SAMPLES: usize = 900;

/// Routes charted, in table order (requests with no route are always
/// charted besides). A sample is 12 bytes, so this caps the rings near
/// 2.8 MB; a table with more routes is read in Prometheus, not here.
pub const MAX_ROUTES: usize = 256;

/// Upstreams charted, in table order: one byte a sample, under 1 MB.
pub const MAX_UPSTREAMS: usize = 1024;

/// The quantile of the latency chart.
const QUANTILE: f64 = 0.99;

/// The recent history of the live table's routes and upstreams.
#[derive(Debug, Default)]
pub struct History {
    rings: Mutex<Rings>,
}

#[derive(Debug, Default)]
struct Rings {
    /// When each tick was taken (Unix ms), oldest first, at most
    /// [`SAMPLES`]. Every series is aligned to its newest end: the last
    /// sample of a series is from the last tick.
    at: VecDeque<u64>,
    routes: Vec<RouteRing>,
    upstreams: Vec<UpstreamRing>,
}

#[derive(Debug)]
struct RouteRing {
    name: Box<str>,
    /// The counters last read: a route whose counters are replaced (a
    /// reload that drops and re-adds the name) starts from zero again.
    metrics: Arc<RouteMetrics>,
    last: Reading,
    samples: VecDeque<RouteSample>,
}

#[derive(Debug)]
struct UpstreamRing {
    route: Box<str>,
    url: Box<str>,
    states: VecDeque<UpstreamState>,
}

/// A route's counters as read at one tick.
#[derive(Debug, Clone, Default, PartialEq)]
struct Reading {
    requests: u64,
    server_errors: u64,
    /// Non-cumulative bucket counts with their upper bounds in seconds.
    buckets: Vec<(f64, u64)>,
}

impl Reading {
    fn of(metrics: &RouteMetrics) -> Reading {
        let (requests, server_errors) =
            metrics
                .codes()
                .fold((0, 0), |(requests, errors), (code, count)| {
                    let error = if code.starts_with('5') { count } else { 0 };
                    (requests + count, errors + error)
                });
        let (_, _, buckets) = metrics.durations();
        Reading {
            requests,
            server_errors,
            buckets,
        }
    }

    /// What was counted since `before`; `None` if a counter went down
    /// (they never do, short of a reset).
    fn since(&self, before: &Reading) -> Option<Reading> {
        let buckets = self
            .buckets
            .iter()
            .zip(
                before
                    .buckets
                    .iter()
                    .map(|(_, count)| *count)
                    .chain(std::iter::repeat(0)),
            )
            .map(|(&(bound, now), then)| now.checked_sub(then).map(|count| (bound, count)))
            .collect::<Option<Vec<_>>>()?;
        Some(Reading {
            requests: self.requests.checked_sub(before.requests)?,
            server_errors: self.server_errors.checked_sub(before.server_errors)?,
            buckets,
        })
    }
}

/// One second of one route. NaN where there is nothing to say (no
/// requests: no share, no latency), which JSON shows as `null`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct RouteSample {
    rate: f32,
    error_share: f32,
    p99_ms: f32,
}

impl RouteSample {
    fn from_delta(delta: &Reading, elapsed: Duration) -> RouteSample {
        let seconds = elapsed.as_secs_f64().max(f64::EPSILON);
        let (error_share, p99_ms) = if delta.requests == 0 {
            (f32::NAN, f32::NAN)
        } else {
            let share = delta.server_errors as f64 / delta.requests as f64;
            let p99 = quantile(QUANTILE, &delta.buckets).map_or(f64::NAN, |s| s * 1e3);
            (round(share, 4), round(p99, 2))
        };
        RouteSample {
            rate: round(delta.requests as f64 / seconds, 3),
            error_share,
            p99_ms,
        }
    }
}

/// `value` to `digits` decimals, as an `f32`: the charts need no more, and
/// the JSON stays short.
fn round(value: f64, digits: i32) -> f32 {
    let scale = 10f64.powi(digits);
    ((value * scale).round() / scale) as f32
}

/// The `q` quantile of observations counted in non-cumulative `buckets`
/// (upper bound, count), as Prometheus's `histogram_quantile` estimates it:
/// linear within the bucket the rank falls in, the first bucket starting
/// at 0, and the highest finite bound when the rank is in the `+Inf`
/// bucket. `None` with no observations.
fn quantile(q: f64, buckets: &[(f64, u64)]) -> Option<f64> {
    let total: u64 = buckets.iter().map(|(_, count)| count).sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    let mut lower = 0.0;
    for &(upper, count) in buckets {
        if count > 0 && (below + count) as f64 >= rank {
            if upper.is_infinite() {
                return Some(lower);
            }
            let within = (rank - below as f64) / count as f64;
            return Some(lower + (upper - lower) * within);
        }
        below += count;
        if upper.is_finite() {
            lower = upper;
        }
    }
    Some(lower)
}

impl History {
    /// Takes one tick's sample of `table`. `elapsed` is the time since
    /// the previous tick (`None` for the first): rates are per second of
    /// it. Runs on the control runtime, never on a request thread.
    pub fn record(&self, table: &RouteTable, at: SystemTime, elapsed: Option<Duration>) {
        // Counters and states are read before the lock is taken, so the
        // admin handler never waits on the reads.
        let routes: Vec<(&str, &Arc<RouteMetrics>, Reading)> = table
            .routes()
            .iter()
            .take(MAX_ROUTES)
            .map(|route| (route.name(), &route.metrics))
            .chain(std::iter::once((NO_ROUTE, &table.unrouted)))
            .map(|(name, metrics)| (name, metrics, Reading::of(metrics)))
            .collect();
        let now = now_ms();
        let upstreams: Vec<(&str, &str, UpstreamState)> = table
            .routes()
            .iter()
            .flat_map(|route| {
                route
                    .upstreams()
                    .iter()
                    .map(move |u| (route.name(), u.spec.url.as_str(), u.health.state(now)))
            })
            .take(MAX_UPSTREAMS)
            .collect();
        let at_ms = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);

        let mut rings = self.lock();
        let rings = &mut *rings;
        push_bounded(&mut rings.at, at_ms);

        let mut old: HashMap<Box<str>, RouteRing> = rings
            .routes
            .drain(..)
            .map(|ring| (ring.name.clone(), ring))
            .collect();
        rings.routes = routes
            .into_iter()
            .map(|(name, metrics, reading)| match old.remove(name) {
                Some(mut ring) => {
                    let before = if Arc::ptr_eq(&ring.metrics, metrics) {
                        ring.last.clone()
                    } else {
                        ring.metrics = Arc::clone(metrics);
                        Reading::default()
                    };
                    // A counter that went backwards was reset: count what
                    // it has now as this second's.
                    let delta = reading
                        .since(&before)
                        .or_else(|| reading.since(&Reading::default()))
                        .unwrap_or_default();
                    if let Some(elapsed) = elapsed {
                        push_bounded(&mut ring.samples, RouteSample::from_delta(&delta, elapsed));
                    }
                    ring.last = reading;
                    ring
                }
                // A new series starts with this reading as its baseline: what
                // was counted before it has no known duration.
                None => RouteRing {
                    name: name.into(),
                    metrics: Arc::clone(metrics),
                    last: reading,
                    samples: VecDeque::new(),
                },
            })
            .collect();

        let mut old: HashMap<(Box<str>, Box<str>), UpstreamRing> = rings
            .upstreams
            .drain(..)
            .map(|ring| ((ring.route.clone(), ring.url.clone()), ring))
            .collect();
        rings.upstreams = upstreams
            .into_iter()
            .map(|(route, url, state)| {
                let mut ring = old
                    .remove(&(Box::from(route), Box::from(url)))
                    .unwrap_or_else(|| UpstreamRing {
                        route: route.into(),
                        url: url.into(),
                        states: VecDeque::new(),
                    });
                push_bounded(&mut ring.states, state);
                ring
            })
            .collect();
    }

    /// The samples as `GET /history` shows them.
    pub fn snapshot(&self) -> Snapshot {
        let rings = self.lock();
        let routes = rings
            .routes
            .iter()
            .map(|ring| RouteHistory {
                route: ring.name.to_string(),
                rate: ring.samples.iter().map(|s| s.rate).collect(),
                error_share: ring.samples.iter().map(|s| s.error_share).collect(),
                p99_ms: ring.samples.iter().map(|s| s.p99_ms).collect(),
            })
            .collect();
        let upstreams = rings
            .upstreams
            .iter()
            .map(|ring| UpstreamHistory {
                route: ring.route.to_string(),
                url: ring.url.to_string(),
                states: runs(&ring.states),
            })
            .collect();
        Snapshot {
            interval_ms: SAMPLE_INTERVAL.as_millis() as u64,
            capacity: SAMPLES,
            at: rings.at.iter().copied().collect(),
            routes,
            upstreams,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rings> {
        // Every update leaves the rings whole, so a panicked holder leaves
        // nothing half-done to fear.
        self.rings.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn push_bounded<T>(ring: &mut VecDeque<T>, value: T) {
    if ring.len() == SAMPLES {
        ring.pop_front();
    }
    ring.push_back(value);
}

/// States as runs, oldest first: `[("healthy", 840), ("ejected", 60)]`.
fn runs(states: &VecDeque<UpstreamState>) -> Vec<(UpstreamState, usize)> {
    let mut runs: Vec<(UpstreamState, usize)> = Vec::new();
    for &state in states {
        match runs.last_mut() {
            Some((last, count)) if *last == state => *count += 1,
            _ => runs.push((state, 1)),
        }
    }
    runs
}

/// `GET /history`: every series is aligned to the newest end of `at`, so
/// a series with fewer samples started later (its route is newer).
#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub interval_ms: u64,
    pub capacity: usize,
    /// When each sample was taken, Unix ms, oldest first.
    pub at: Vec<u64>,
    pub routes: Vec<RouteHistory>,
    pub upstreams: Vec<UpstreamHistory>,
}

#[derive(Debug, Serialize)]
pub struct RouteHistory {
    pub route: String,
    /// Requests per second.
    pub rate: Vec<f32>,
    /// 5xx answers over all answers; `null` in a second without requests.
    pub error_share: Vec<f32>,
    /// Estimated 99th percentile of the request duration, in ms; `null` in
    /// a second without requests.
    pub p99_ms: Vec<f32>,
}

#[derive(Debug, Serialize)]
pub struct UpstreamHistory {
    pub route: String,
    pub url: String,
    /// Runs of one state, oldest first, as `[state, samples]`.
    pub states: Vec<(UpstreamState, usize)>,
}

/// Samples the live table every [`SAMPLE_INTERVAL`] until aborted. Spawn
/// it on the control runtime: it must never compete with request threads.
pub fn spawn(live: Arc<ArcSwap<RouteTable>>, history: Arc<History>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(SAMPLE_INTERVAL);
        // A late tick is taken late, not twice: rates divide by the time
        // that really passed.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut previous: Option<Instant> = None;
        loop {
            ticks.tick().await;
            let now = Instant::now();
            let table = live.load_full();
            history.record(&table, SystemTime::now(), previous.map(|at| now - at));
            previous = Some(now);
        }
    })
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;
    use crate::routes::config;
    use crate::routes::table::TableMeta;

    const SECOND: Option<Duration> = Some(Duration::from_secs(1));

    fn table(yaml: &str) -> RouteTable {
        let meta = TableMeta {
            version: 1,
            sha256: String::new(),
            loaded_at: SystemTime::UNIX_EPOCH,
        };
        RouteTable::build(config::parse(yaml).expect("valid YAML"), meta).expect("a table")
    }

    const TWO_ROUTES: &str = "
routes:
  a:
    prefix: /a
    respond: {}
  b:
    prefix: /b
    upstream: http://127.0.0.1:9
";

    fn route<'t>(snapshot: &'t Snapshot, name: &str) -> &'t RouteHistory {
        snapshot
            .routes
            .iter()
            .find(|r| r.route == name)
            .unwrap_or_else(|| panic!("no series for {name}"))
    }

    #[test]
    fn rates_shares_and_p99_come_from_the_increase_since_the_last_tick() {
        let table = table(TWO_ROUTES);
        let history = History::default();
        let a = &table.routes()[0].metrics;
        // Counted before the first tick: part of no sample.
        a.record(StatusCode::OK, Duration::from_millis(1));
        history.record(&table, SystemTime::UNIX_EPOCH, None);
        for _ in 0..3 {
            a.record(StatusCode::OK, Duration::from_millis(20));
        }
        a.record(StatusCode::BAD_GATEWAY, Duration::from_millis(20));
        history.record(&table, SystemTime::UNIX_EPOCH, Some(Duration::from_secs(2)));

        let snapshot = history.snapshot();
        assert_eq!(snapshot.at.len(), 2);
        let a = route(&snapshot, "a");
        assert_eq!(a.rate, [2.0], "4 requests over 2 s");
        assert_eq!(a.error_share, [0.25]);
        // All four in (10 ms, 25 ms]: rank 3.96 of 4, 99% of the way.
        assert_eq!(a.p99_ms, [24.85]);
        let b = route(&snapshot, "b");
        assert_eq!(b.rate, [0.0]);
        assert!(b.error_share[0].is_nan() && b.p99_ms[0].is_nan());
        let json = serde_json::to_value(&snapshot).expect("serializes");
        assert!(
            json["routes"][1]["p99_ms"][0].is_null(),
            "no requests, no latency: {json}"
        );
        assert_eq!(json["routes"][2]["route"], NO_ROUTE);
    }

    #[test]
    fn quantile_matches_histogram_quantile() {
        let close = |got: Option<f64>, want: f64| {
            let got = got.expect("a value");
            assert!((got - want).abs() < 1e-12, "{got} != {want}");
        };
        let buckets = [(0.001, 0), (0.01, 50), (0.1, 50), (f64::INFINITY, 0)];
        close(quantile(0.5, &buckets), 0.01);
        close(quantile(0.99, &buckets), 0.01 + 0.09 * 0.98);
        assert_eq!(quantile(0.99, &[(0.001, 0), (f64::INFINITY, 0)]), None);
        // Above every bound: the highest finite one, as Prometheus says.
        close(
            quantile(0.99, &[(0.001, 1), (1.0, 0), (f64::INFINITY, 9)]),
            1.0,
        );
        // The first bucket starts at 0.
        close(quantile(0.5, &[(0.002, 2), (f64::INFINITY, 0)]), 0.001);
    }

    #[test]
    fn every_series_keeps_at_most_fifteen_minutes() {
        let table = table(TWO_ROUTES);
        let history = History::default();
        for _ in 0..SAMPLES + 25 {
            table.routes()[0]
                .metrics
                .record(StatusCode::OK, Duration::from_millis(3));
            history.record(&table, SystemTime::UNIX_EPOCH, SECOND);
        }
        let snapshot = history.snapshot();
        assert_eq!(snapshot.at.len(), SAMPLES);
        assert_eq!(route(&snapshot, "a").rate.len(), SAMPLES);
        assert!(route(&snapshot, "a").rate.iter().all(|&r| r == 1.0));
        let upstream = &snapshot.upstreams[0];
        assert_eq!(upstream.states, [(UpstreamState::Healthy, SAMPLES)]);
    }

    #[test]
    fn series_follow_the_live_table_by_name() {
        let first = table(TWO_ROUTES);
        let history = History::default();
        history.record(&first, SystemTime::UNIX_EPOCH, None);
        history.record(&first, SystemTime::UNIX_EPOCH, SECOND);

        // `a` goes, `c` comes, `b` stays (with new counters, as a table
        // built without carrying state has): its sample is what they hold.
        let second = table(
            "
routes:
  b:
    prefix: /b
    upstream: http://127.0.0.1:9
  c:
    prefix: /c
    respond: {}
",
        );
        second.routes()[0]
            .metrics
            .record(StatusCode::OK, Duration::from_millis(1));
        history.record(&second, SystemTime::UNIX_EPOCH, SECOND);

        let snapshot = history.snapshot();
        let names: Vec<&str> = snapshot.routes.iter().map(|r| r.route.as_str()).collect();
        assert_eq!(names, ["b", "c", NO_ROUTE]);
        assert_eq!(route(&snapshot, "b").rate, [0.0, 1.0]);
        assert!(route(&snapshot, "c").rate.is_empty(), "c starts next tick");
        assert_eq!(snapshot.upstreams.len(), 1);
        assert_eq!(snapshot.upstreams[0].states.len(), 1);
        assert_eq!(snapshot.upstreams[0].states[0].1, 3);
    }

    #[test]
    fn an_ejection_shows_as_a_run_of_its_own() {
        let table = table(TWO_ROUTES);
        let history = History::default();
        history.record(&table, SystemTime::UNIX_EPOCH, None);
        let health = &table.routes()[1].upstreams()[0].health;
        // Three failures in a row eject it (SPEC 4.10) for 5 s, far longer
        // than the two ticks below take.
        assert!((0..3).any(|_| health.failed(now_ms())), "not ejected");
        history.record(&table, SystemTime::UNIX_EPOCH, SECOND);
        history.record(&table, SystemTime::UNIX_EPOCH, SECOND);
        let snapshot = history.snapshot();
        assert_eq!(
            snapshot.upstreams[0].states,
            [(UpstreamState::Healthy, 1), (UpstreamState::Ejected, 2)]
        );
        let json = serde_json::to_value(&snapshot).expect("serializes");
        assert_eq!(json["upstreams"][0]["states"][1][0], "ejected");
    }

    #[test]
    fn routes_past_the_cap_are_left_out() {
        let yaml: String = std::iter::once("routes:\n".to_owned())
            .chain(
                (0..MAX_ROUTES + 3)
                    .map(|i| format!("  r{i}:\n    prefix: /r{i}\n    respond: {{}}\n")),
            )
            .collect();
        let table = table(&yaml);
        let history = History::default();
        history.record(&table, SystemTime::UNIX_EPOCH, None);
        let snapshot = history.snapshot();
        assert_eq!(snapshot.routes.len(), MAX_ROUTES + 1, "and `_none`");
    }
}
