//! Tracing (SPEC 9): OpenTelemetry spans for sampled requests, W3C Trace
//! Context in and out, and their export over OTLP/HTTP. Off unless an
//! endpoint is given; off, nothing here runs per request (the handler
//! branches once on whether there is a [`Tracer`]).
//!
//! - [`config`]: the endpoint, sampler, resource and batch settings, from
//!   `--otlp-endpoint` and the `OTEL_*` variables.
//! - [`span`]: the server span of a request and the client span of each
//!   upstream try; `traceparent` for the upstream.
//! - [`export`]: the bounded queue and the task on the control runtime
//!   that posts batches to the collector, counting what it drops.
//!
//! OpenTelemetry's SDK supplies the pieces that must behave as in every
//! other SDK: the `traceparent`/`tracestate` parser, the samplers
//! `OTEL_TRACES_SAMPLER` names, trace and span ids, the resource, the
//! span record (`SpanData`) and the OTLP exporter. Its `Tracer` is not used
//! on the request path: an SDK span keeps a clone of its tracer and
//! provider, a parent is reached through a `Context` (an allocation and a
//! mutex per span), and its batch processor runs a thread of its own and
//! counts drops only in a log line at shutdown. Here a sampled request
//! records a few plain fields and builds its `SpanData` once, as it ends.
//!
//! Part of the layering's ground floor: it imports no other part, so the
//! access log (`observe`) can end the server span with the response body,
//! and the proxy can start spans, both without a cycle.

pub mod config;
pub mod export;
pub mod span;

use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{SpanContext, SpanKind, TraceContextExt as _};
use opentelemetry::{Context, InstrumentationScope};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    IdGenerator as _, RandomIdGenerator, SamplingDecision, ShouldSample,
};

pub use self::config::{TraceConfig, TraceConfigError};
use self::export::SpanQueue;
pub use self::export::{ExporterError, Exporting};
pub use self::span::{ServerEnd, ServerSpan, SpanIds, TryEnd, TrySpan, TRACEPARENT};

/// Everything a request thread needs to trace: shared by every worker.
#[derive(Debug)]
pub struct Tracer {
    sampler: Box<dyn ShouldSample>,
    ids: RandomIdGenerator,
    propagator: TraceContextPropagator,
    scope: InstrumentationScope,
    queue: SpanQueue,
}

impl Tracer {
    /// Starts exporting on the runtime this is called from (the control
    /// runtime) and returns the tracer the request threads share. Spans
    /// dropped are counted in `dropped`.
    pub fn start(
        config: TraceConfig,
        dropped: Arc<AtomicU64>,
    ) -> Result<(Arc<Tracer>, Exporting), ExporterError> {
        let (queue, exporting) = export::start(&config, dropped)?;
        let tracer = Tracer {
            sampler: config.sampler,
            ids: RandomIdGenerator::default(),
            propagator: TraceContextPropagator::new(),
            scope: InstrumentationScope::builder(env!("CARGO_PKG_NAME"))
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            queue,
        };
        Ok((Arc::new(tracer), exporting))
    }

    /// At a request's arrival: the server span if the request is sampled.
    ///
    /// A valid `traceparent` makes the span its child, in its trace; an
    /// absent or invalid one starts a trace. A request that is not sampled
    /// records nothing: with a valid `traceparent` the upstream gets it as
    /// it came (the caller's decision stands), and without one the router
    /// starts the trace unsampled and says so in a `traceparent` of its
    /// own, so the services behind it do not sample it either.
    pub fn start_request(
        self: &Arc<Self>,
        headers: &mut HeaderMap,
        scheme: &'static str,
        client: IpAddr,
    ) -> Option<ServerSpan> {
        // From an empty context, not the thread's current one: a request
        // inherits nothing from whatever ran on its worker before it.
        // Most requests come without one: no propagator, no context to build.
        let parent = if headers.contains_key(TRACEPARENT) {
            self.propagator
                .extract_with_context(&Context::new(), &Headers(headers))
        } else {
            Context::new()
        };
        let parent_span = parent.span();
        let parent_context = parent_span.span_context();
        let trace_id = if parent_context.is_valid() {
            parent_context.trace_id()
        } else {
            self.ids.new_trace_id()
        };
        // The name is the method until the route is known; the sampler
        // sees no attributes, as an SDK's tracer gives it none it was
        // not started with.
        let sampled =
            self.sampler
                .should_sample(Some(&parent), trace_id, "", &SpanKind::Server, &[], &[]);
        let span_id = self.ids.new_span_id();
        let flags = parent_context.trace_flags();
        match sampled.decision {
            SamplingDecision::RecordAndSample => {
                let context = SpanContext::new(
                    trace_id,
                    span_id,
                    flags.with_sampled(true),
                    false,
                    sampled.trace_state,
                );
                Some(ServerSpan::new(
                    Arc::clone(self),
                    context,
                    parent_context.span_id(),
                    scheme,
                    client,
                ))
            }
            // Recorded but not sampled spans are never exported; none of
            // the SDK's samplers decides so.
            SamplingDecision::RecordOnly | SamplingDecision::Drop => {
                if !parent_context.is_valid() {
                    let context = SpanContext::new(
                        trace_id,
                        span_id,
                        flags.with_sampled(false),
                        false,
                        sampled.trace_state,
                    );
                    headers.insert(TRACEPARENT, span::traceparent(&context));
                }
                None
            }
        }
    }
}

/// A request's headers as the propagator reads them.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}
