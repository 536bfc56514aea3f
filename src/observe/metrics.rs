//! Metrics (SPEC 3): the registry that `GET /metrics` encodes in the
//! Prometheus text format, and the collector that reads the live table's
//! per-route counters ([`crate::routes::counters`]) at scrape time.
//!
//! prometheus-client's registry, its text encoder and its `Collector` trait
//! are used so the exposition follows the official client exactly. Per-route
//! series are encoded from whatever table is live, so a route that is removed
//! drops out of `/metrics`.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::routes::config::TargetSpec;
use crate::routes::limits::Protection;
use crate::routes::table::{Generations, RouteTable};
use crate::routes::upstreams::{now_ms, UpstreamState};

/// The `route` label of requests that no route matched.
pub const NO_ROUTE: &str = "_none";

/// The `Content-Type` of `GET /metrics`.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

type ResultLabel = [(&'static str, &'static str); 1];

/// What is open right now, counted by the listeners and the tunnels that
/// own it and read at scrape time: gauges that must come back to their
/// idle values once clients are gone.
#[derive(Debug, Default)]
pub struct OpenCounts {
    pub proxy_connections: Arc<AtomicUsize>,
    pub admin_connections: Arc<AtomicUsize>,
    pub tls_connections: Arc<AtomicUsize>,
    pub tunnels: Arc<AtomicUsize>,
}

/// Whether the router should receive traffic: set once the proxy listener
/// is bound, cleared the moment a shutdown signal arrives. `/readyz` answers
/// from it, and `switchyard_ready` shows it, so an alert sees what a probe
/// sees. It lives here, below the admin API, because the registry encodes it.
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Collectors of parts that start after the registry exists: the TLS
/// listener's certificates and the candidate table, with room for two more.
const LATE_COLLECTORS: usize = 4;

/// The process's metrics: the registry `/metrics` encodes, and the reload
/// counters. Everything per route is read from the live table at scrape time.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    open: Arc<OpenCounts>,
    readiness: Arc<Readiness>,
    /// Whether the last reload attempt that read new bytes put them live.
    /// A counter of errors cannot say that an error is still the latest
    /// word on the file; this gauge can (an alert fires on it until a good
    /// file is loaded).
    last_reload_ok: Arc<AtomicBool>,
    /// Series of parts that start after the registry exists (the TLS
    /// listener's certificates, the candidate table), one per slot;
    /// encoded once attached.
    attached: [Arc<OnceLock<Box<dyn Collector>>>; LATE_COLLECTORS],
    /// Spans tracing dropped (SPEC 9), counted by its exporter; 0 with
    /// tracing off, so the alert's series exists either way.
    trace_spans_dropped: Arc<AtomicU64>,
    reloads_ok: Counter,
    reloads_error: Counter,
}

impl Metrics {
    pub fn new(live: Arc<ArcSwap<RouteTable>>, generations: Generations) -> Self {
        let mut registry = Registry::default();
        let reloads = Family::<ResultLabel, Counter>::default();
        // Both results exist from the start at 0, so `increase()` and alerts
        // on errors work before the first failure. Created here, never on a
        // request path.
        let reloads_ok = reloads.get_or_create(&[("result", "ok")]).clone();
        let reloads_error = reloads.get_or_create(&[("result", "error")]).clone();
        registry.register(
            "switchyard_config_reloads",
            "Reload attempts that put a new table live (ok) or were rejected (error)",
            reloads,
        );
        let open = Arc::new(OpenCounts::default());
        let readiness = Arc::new(Readiness::default());
        let last_reload_ok = Arc::new(AtomicBool::new(true));
        let trace_spans_dropped = Arc::new(AtomicU64::new(0));
        registry.register_collector(Box::new(LiveCollector {
            live,
            generations,
            open: Arc::clone(&open),
            readiness: Arc::clone(&readiness),
            last_reload_ok: Arc::clone(&last_reload_ok),
            trace_spans_dropped: Arc::clone(&trace_spans_dropped),
        }));
        let attached: [Arc<OnceLock<Box<dyn Collector>>>; LATE_COLLECTORS] =
            std::array::from_fn(|_| Arc::new(OnceLock::new()));
        for slot in &attached {
            registry.register_collector(Box::new(Attached(Arc::clone(slot))));
        }
        Metrics {
            registry,
            open,
            readiness,
            last_reload_ok,
            attached,
            trace_spans_dropped,
            reloads_ok,
            reloads_error,
        }
    }

    /// The count of spans tracing dropped, for its exporter to add to.
    pub fn trace_spans_dropped(&self) -> &Arc<AtomicU64> {
        &self.trace_spans_dropped
    }

    pub fn open(&self) -> &OpenCounts {
        &self.open
    }

    /// What `/readyz` answers and `switchyard_ready` shows.
    pub fn readiness(&self) -> &Arc<Readiness> {
        &self.readiness
    }

    /// Adds `collector`'s series to `/metrics`, after those already there.
    pub fn attach(&self, collector: Box<dyn Collector>) {
        let mut collector = Some(collector);
        for slot in &self.attached {
            if let Some(next) = collector.take() {
                if let Err(refused) = slot.set(next) {
                    collector = Some(refused);
                }
            }
        }
        if collector.is_some() {
            tracing::warn!("no slot left for a late metrics collector; its series are not shown");
        }
    }

    pub fn reload_ok(&self) {
        self.reloads_ok.inc();
        self.last_reload_ok.store(true, Ordering::Relaxed);
    }

    pub fn reload_error(&self) {
        self.reloads_error.inc();
        self.last_reload_ok.store(false, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

#[derive(Debug)]
struct Attached(Arc<OnceLock<Box<dyn Collector>>>);

impl Collector for Attached {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        match self.0.get() {
            Some(collector) => collector.encode(encoder),
            None => Ok(()),
        }
    }
}

/// Encodes everything that belongs to the live table at scrape time.
#[derive(Debug)]
struct LiveCollector {
    live: Arc<ArcSwap<RouteTable>>,
    generations: Generations,
    open: Arc<OpenCounts>,
    readiness: Arc<Readiness>,
    last_reload_ok: Arc<AtomicBool>,
    trace_spans_dropped: Arc<AtomicU64>,
}

impl Collector for LiveCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let table = self.live.load_full();
        let routes = || {
            table
                .routes()
                .iter()
                .map(|route| (route.name(), &*route.metrics, Some(&route.spec.target)))
                .chain(std::iter::once((NO_ROUTE, &*table.unrouted, None)))
        };

        let gauges: [(&str, &str, u64); 5] = [
            (
                "switchyard_ready",
                "Whether the router takes traffic (1, /readyz answers 200) or not yet or no longer (0, draining)",
                u64::from(self.readiness.get()),
            ),
            (
                "switchyard_config_last_reload_successful",
                "Whether the last reload attempt that read new bytes put them live (1) or was rejected (0)",
                u64::from(self.last_reload_ok.load(Ordering::Relaxed)),
            ),
            (
                "switchyard_config_version",
                "Version of the live route table; grows by one per table put live",
                table.meta.version,
            ),
            (
                "switchyard_routes",
                "Routes in the live table",
                table.routes().len() as u64,
            ),
            (
                "switchyard_config_generations_live",
                "Route tables still alive: the live one plus old ones held by in-flight requests",
                self.generations.live() as u64,
            ),
        ];
        for (name, help, value) in gauges {
            encoder
                .encode_descriptor(name, help, None, MetricType::Gauge)?
                .encode_gauge(&value)?;
        }

        let mut connections = encoder.encode_descriptor(
            "switchyard_connections_open",
            "Client connections open now, by listener",
            None,
            MetricType::Gauge,
        )?;
        for (listener, count) in [
            ("proxy", &self.open.proxy_connections),
            ("tls", &self.open.tls_connections),
            ("admin", &self.open.admin_connections),
        ] {
            let value = count.load(Ordering::Relaxed) as u64;
            connections
                .encode_family(&[("listener", listener)])?
                .encode_gauge(&value)?;
        }
        encoder
            .encode_descriptor(
                "switchyard_tunnels_open",
                "Upgraded connections (WebSocket and others) being relayed now",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&(self.open.tunnels.load(Ordering::Relaxed) as u64))?;
        encoder
            .encode_descriptor(
                "switchyard_trace_spans_dropped",
                "Spans that never reached the OTLP collector: no room in the export queue, or in a batch it did not take",
                None,
                MetricType::Counter,
            )?
            .encode_counter::<NoLabelSet, _, u64>(
                &self.trace_spans_dropped.load(Ordering::Relaxed),
                None,
            )?;

        let mut requests = encoder.encode_descriptor(
            "switchyard_requests",
            "Requests answered, by route and status code",
            None,
            MetricType::Counter,
        )?;
        for (route, metrics, _) in routes() {
            for (code, count) in metrics.codes() {
                let labels = [("route", route), ("code", code.as_str())];
                requests
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
            }
        }

        let mut durations = encoder.encode_descriptor(
            "switchyard_request_duration",
            "Time from receiving a request to the end of its response body",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (route, metrics, _) in routes() {
            let (sum, count, buckets) = metrics.durations();
            durations
                .encode_family(&[("route", route)])?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }

        let mut errors = encoder.encode_descriptor(
            "switchyard_upstream_errors",
            "Upstream exchanges that failed, by route and kind",
            None,
            MetricType::Counter,
        )?;
        // Every kind of every upstream route is shown, zeros included, so a
        // rate over it exists before the first error.
        for (route, metrics, target) in routes() {
            if !matches!(target, Some(TargetSpec::Upstreams(_))) {
                continue;
            }
            for (kind, count) in metrics.upstream_errors() {
                let labels = [("route", route), ("kind", kind.label())];
                errors
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
            }
        }

        let upstream_routes = || table.routes().iter().filter(|r| !r.upstreams().is_empty());
        let mut retries = encoder.encode_descriptor(
            "switchyard_upstream_retries",
            "Tries after a request's first, by why: connect, reset, timeout or status",
            None,
            MetricType::Counter,
        )?;
        for route in upstream_routes() {
            for (reason, count) in route.metrics.retries() {
                retries
                    .encode_family(&[("route", route.name()), ("reason", reason.label())])?
                    .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
            }
        }
        encode_protection(&table, &mut encoder)?;

        // Series follow the live table: an upstream a reload removes is
        // gone from here with it.
        let now = now_ms();
        let mut healthy = encoder.encode_descriptor(
            "switchyard_upstream_healthy",
            "Whether the upstream takes requests now (1) or is ejected or unhealthy (0)",
            None,
            MetricType::Gauge,
        )?;
        for route in upstream_routes() {
            for upstream in route.upstreams() {
                let labels = [("route", route.name()), ("upstream", &*upstream.label)];
                // Never 1 for an upstream that failed and has not answered
                // since (SPEC 4.10), though a request may try it again.
                let state = upstream.health.state(now);
                let value = u64::from(!matches!(
                    state,
                    UpstreamState::Ejected | UpstreamState::Recovering | UpstreamState::Unhealthy
                ));
                healthy.encode_family(&labels)?.encode_gauge(&value)?;
            }
        }
        let mut ejections = encoder.encode_descriptor(
            "switchyard_upstream_ejections",
            "Times the upstream was taken out after failing in a row",
            None,
            MetricType::Counter,
        )?;
        for route in upstream_routes() {
            for upstream in route.upstreams() {
                let labels = [("route", route.name()), ("upstream", &*upstream.label)];
                let count = upstream.counters.ejections.load(Ordering::Relaxed);
                ejections
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
            }
        }
        let mut in_flight = encoder.encode_descriptor(
            "switchyard_upstream_in_flight",
            "Requests sent to the upstream and not answered to their end, over every route",
            None,
            MetricType::Gauge,
        )?;
        for route in upstream_routes() {
            for upstream in route.upstreams() {
                let labels = [("route", route.name()), ("upstream", &*upstream.label)];
                let count = upstream.in_flight() as u64;
                in_flight.encode_family(&labels)?.encode_gauge(&count)?;
            }
        }
        Ok(())
    }
}

/// The counters of the routes' protection (SPEC 7.4 to 7.6), one series
/// per route that has the setting.
fn encode_protection(
    table: &RouteTable,
    encoder: &mut DescriptorEncoder,
) -> Result<(), fmt::Error> {
    let routes = table.routes();
    /// A family's name, its help, and how a route's count is read.
    type Counted = (&'static str, &'static str, fn(&Protection) -> Option<u64>);
    let counters: [Counted; 4] = [
        ("switchyard_rate_limited", "Requests refused 429 by the route's rate limit", |p| {
            p.rate_limit.as_ref().map(|l| l.limited.load(Ordering::Relaxed))
        }),
        (
            "switchyard_rate_limit_overflow",
            "Requests of new keys that took the shared overflow bucket, every bucket still refilling",
            |p| p.rate_limit.as_ref().map(|l| l.overflowed.load(Ordering::Relaxed)),
        ),
        ("switchyard_overloaded", "Requests refused 503 by the route's max_in_flight", |p| {
            p.in_flight.as_ref().map(|c| c.overloaded.load(Ordering::Relaxed))
        }),
        (
            "switchyard_retry_budget_exhausted",
            "Retries the route's retry budget did not allow",
            |p| p.retry.as_ref().map(|b| b.exhausted.load(Ordering::Relaxed)),
        ),
    ];
    for (name, help, read) in counters {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for route in routes {
            if let Some(count) = read(&route.protection) {
                family
                    .encode_family(&[("route", route.name())])?
                    .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
            }
        }
    }
    let mut mirrored = encoder.encode_descriptor(
        "switchyard_mirror_requests",
        "Mirrored copies: sent (answered), failed, or dropped (not made, or abandoned)",
        None,
        MetricType::Counter,
    )?;
    for route in routes {
        if let Some(mirror) = &route.protection.mirror {
            let results = [
                ("sent", &mirror.sent),
                ("failed", &mirror.failed),
                ("dropped", &mirror.dropped),
            ];
            for (result, count) in results {
                mirrored
                    .encode_family(&[("route", route.name()), ("result", result)])?
                    .encode_counter::<NoLabelSet, _, u64>(&count.load(Ordering::Relaxed), None)?;
            }
        }
    }
    Ok(())
}
