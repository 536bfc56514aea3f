//! Spans on their way out (SPEC 9): a bounded queue that request threads
//! put finished spans into, and the task on the control runtime that takes
//! them out in batches and posts them to the collector with
//! OpenTelemetry's OTLP/HTTP exporter.
//!
//! A request never waits for the collector and never wakes the exporter:
//! putting a span in is a `try_send` into a bounded channel whose receiver
//! is never parked on it (the task empties it on its own timer), so there
//! is no cross-thread wake-up per span. The one wake-up is asked for when
//! a full batch waits, once per batch. A span that does not fit is dropped
//! and counted; so is every span of a batch the collector did not take
//! (down, refusing, or silent past the export timeout). Exports run one at
//! a time, so a slow collector holds one batch and the queue fills and
//! drops, which is the bound on memory.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use crate::trace::config::{BatchConfig, TraceConfig};

/// At shutdown, what waits gets this long to reach the collector: long
/// enough for a collector that answers, short against the drain deadline
/// for one that does not.
const FINAL_EXPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where request threads put finished spans.
#[derive(Debug)]
pub struct SpanQueue {
    sender: mpsc::Sender<SpanData>,
    shared: Arc<Shared>,
    max_queue: usize,
    max_batch: usize,
}

/// What the queue's senders and the exporting task share.
#[derive(Debug)]
struct Shared {
    /// Wakes the task early when a full batch waits.
    flush: Notify,
    /// Set by the sender that asked for a flush, cleared by the task, so a
    /// batch is asked for once, not once per span after it.
    flush_asked: AtomicBool,
    /// `switchyard_trace_spans_dropped_total`.
    dropped: Arc<AtomicU64>,
}

impl SpanQueue {
    /// Queues a finished span, or drops and counts it when the queue is
    /// full. Never waits.
    pub fn push(&self, span: SpanData) {
        match self.sender.try_send(span) {
            Ok(()) => {
                let waiting = self.max_queue - self.sender.capacity();
                if waiting >= self.max_batch
                    && !self.shared.flush_asked.load(Ordering::Relaxed)
                    && !self.shared.flush_asked.swap(true, Ordering::AcqRel)
                {
                    self.shared.flush.notify_one();
                }
            }
            Err(_full_or_closed) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the OTLP exporter: {0}")]
pub struct ExporterError(#[from] opentelemetry_otlp::ExporterBuildError);

/// The exporting task; [`Exporting::shutdown`] sends what waits and ends it.
pub struct Exporting {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Exporting {
    /// Exports what is queued (within [`FINAL_EXPORT_TIMEOUT`]) and stops.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the trace exporter task failed");
        }
    }
}

/// Makes the queue and starts the task that empties it, on the runtime
/// this is called from (the control runtime: exports, and the HTTP
/// connections they use, never run on a request thread).
pub fn start(
    config: &TraceConfig,
    dropped: Arc<AtomicU64>,
) -> Result<(SpanQueue, Exporting), ExporterError> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(config.endpoint.clone())
        .with_timeout(config.batch.export_timeout)
        .build()?;
    exporter.set_resource(&config.resource);
    let batch = config.batch;
    let (sender, receiver) = mpsc::channel(batch.max_queue);
    let shared = Arc::new(Shared {
        flush: Notify::new(),
        flush_asked: AtomicBool::new(false),
        dropped,
    });
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(export_loop(
        receiver,
        exporter,
        batch,
        Arc::clone(&shared),
        stopped,
    ));
    let queue = SpanQueue {
        sender,
        shared,
        max_queue: batch.max_queue,
        max_batch: batch.max_batch,
    };
    Ok((queue, Exporting { stop, task }))
}

/// Every `schedule_delay`, or as soon as a full batch waits, sends what
/// waits a batch at a time; at the stop, sends what is left and ends.
async fn export_loop(
    mut receiver: mpsc::Receiver<SpanData>,
    exporter: opentelemetry_otlp::SpanExporter,
    batch: BatchConfig,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut tick = tokio::time::interval(batch.schedule_delay);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut health = Health::default();
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            () = shared.flush.notified() => false,
            _ = &mut stopped => true,
        };
        shared.flush_asked.store(false, Ordering::Release);
        let timeout = if last {
            FINAL_EXPORT_TIMEOUT.min(batch.export_timeout)
        } else {
            batch.export_timeout
        };
        loop {
            let mut spans = Vec::with_capacity(batch.max_batch.min(receiver.len()));
            while spans.len() < batch.max_batch {
                match receiver.try_recv() {
                    Ok(span) => spans.push(span),
                    Err(_) => break,
                }
            }
            if spans.is_empty() {
                break;
            }
            let full = spans.len() == batch.max_batch;
            let count = spans.len() as u64;
            let result = tokio::time::timeout(timeout, exporter.export(spans)).await;
            match result {
                Ok(Ok(())) => health.exported(),
                Ok(Err(error)) => {
                    shared.dropped.fetch_add(count, Ordering::Relaxed);
                    health.failed(&error.to_string());
                }
                Err(_elapsed) => {
                    shared.dropped.fetch_add(count, Ordering::Relaxed);
                    health.failed(&format!("no answer within {timeout:?}"));
                }
            }
            if !full || last {
                break;
            }
        }
        if last {
            // What arrives from now on has nowhere to go.
            receiver.close();
            let left = std::iter::from_fn(|| receiver.try_recv().ok()).count();
            shared.dropped.fetch_add(left as u64, Ordering::Relaxed);
            return;
        }
    }
}

/// Whether the collector takes spans, so the log says when that changes
/// instead of once per batch.
#[derive(Default)]
struct Health {
    failing: bool,
}

impl Health {
    fn exported(&mut self) {
        if std::mem::take(&mut self.failing) {
            tracing::info!("the OTLP collector takes spans again");
        }
    }

    fn failed(&mut self, error: &str) {
        if !std::mem::replace(&mut self.failing, true) {
            tracing::warn!(
                error,
                "the OTLP collector did not take a batch of spans; they are dropped and counted in switchyard_trace_spans_dropped_total"
            );
        }
    }
}
