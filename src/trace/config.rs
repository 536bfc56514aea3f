//! What tracing is told at start-up (SPEC 9): where spans go, from
//! `--otlp-endpoint` or OpenTelemetry's own `OTEL_*` variables, how they
//! are batched, how requests are sampled and what the service is called.
//! Read once, before anything is served; the request path never reads the
//! environment.

use std::time::Duration;

use opentelemetry::{Key, Value};
use opentelemetry_sdk::trace::{Config, ShouldSample};
use opentelemetry_sdk::Resource;

/// OTLP/HTTP's path for traces, appended to a base endpoint
/// (`OTEL_EXPORTER_OTLP_ENDPOINT`, `--otlp-endpoint`).
const TRACES_PATH: &str = "/v1/traces";

/// The service name when neither `OTEL_SERVICE_NAME` nor
/// `OTEL_RESOURCE_ATTRIBUTES` names one.
pub const DEFAULT_SERVICE_NAME: &str = "switchyard";

/// How the SDK names a service that names none (`unknown_service:` and
/// the executable's name); replaced by ours.
const SDK_UNKNOWN_SERVICE: &str = "unknown_service";

/// The OpenTelemetry defaults for the batch settings (the SDK's batch span
/// processor reads the same variables with the same defaults).
const DEFAULT_SCHEDULE_DELAY: Duration = Duration::from_millis(5_000);
const DEFAULT_MAX_QUEUE: usize = 2_048;
const DEFAULT_MAX_BATCH: usize = 512;
/// `OTEL_EXPORTER_OTLP_TIMEOUT`'s default: how long one export may take,
/// retries included, before its batch is given up.
const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_millis(10_000);

/// Tracing as configured; its absence means tracing is off.
#[derive(Debug, Clone)]
pub struct TraceConfig {
    /// The full OTLP/HTTP traces URL spans are posted to.
    pub endpoint: String,
    pub sampler: Box<dyn ShouldSample>,
    pub resource: Resource,
    pub batch: BatchConfig,
}

/// How spans wait for export: a bounded queue, emptied in batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// `OTEL_BSP_SCHEDULE_DELAY`: the longest a span waits before export.
    pub schedule_delay: Duration,
    /// `OTEL_BSP_MAX_QUEUE_SIZE`: spans waiting beyond it are dropped.
    pub max_queue: usize,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`: spans per export; a queue this
    /// long is exported without waiting for the delay.
    pub max_batch: usize,
    /// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` or `OTEL_EXPORTER_OTLP_TIMEOUT`.
    pub export_timeout: Duration,
}

/// A tracing setting that cannot be used; the router does not start.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {value:?} is not a usable OTLP endpoint: {reason}")]
pub struct TraceConfigError {
    source_name: &'static str,
    value: String,
    reason: String,
}

impl TraceConfig {
    /// The configuration from `--otlp-endpoint` (or its variable) and the
    /// process's environment; `None` when no endpoint is given.
    pub fn from_env(otlp_endpoint: Option<&str>) -> Result<Option<TraceConfig>, TraceConfigError> {
        Self::from_lookup(otlp_endpoint, |name| std::env::var(name).ok())
    }

    /// [`TraceConfig::from_env`] reading variables through `var`. The
    /// sampler and resource are read by the SDK from the process's own
    /// environment, as every OpenTelemetry SDK does.
    fn from_lookup(
        otlp_endpoint: Option<&str>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<TraceConfig>, TraceConfigError> {
        let var = |name: &str| var(name).filter(|value| !value.trim().is_empty());
        let endpoint = match (
            otlp_endpoint.filter(|value| !value.trim().is_empty()),
            var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            var("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(base), _, _) => traces_url("--otlp-endpoint", base, true)?,
            (None, Some(full), _) => {
                traces_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &full, false)?
            }
            (None, None, Some(base)) => traces_url("OTEL_EXPORTER_OTLP_ENDPOINT", &base, true)?,
            (None, None, None) => return Ok(None),
        };
        let millis = |name: &str| {
            var(name)
                .and_then(|value| value.trim().parse::<u64>().ok())
                .map(Duration::from_millis)
        };
        let count = |name: &str| {
            var(name)
                .and_then(|value| value.trim().parse::<usize>().ok())
                .filter(|&n| n > 0)
        };
        let max_queue = count("OTEL_BSP_MAX_QUEUE_SIZE").unwrap_or(DEFAULT_MAX_QUEUE);
        let batch = BatchConfig {
            schedule_delay: millis("OTEL_BSP_SCHEDULE_DELAY").unwrap_or(DEFAULT_SCHEDULE_DELAY),
            max_queue,
            max_batch: count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
                .unwrap_or(DEFAULT_MAX_BATCH)
                .min(max_queue),
            export_timeout: millis("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
                .or_else(|| millis("OTEL_EXPORTER_OTLP_TIMEOUT"))
                .unwrap_or(DEFAULT_EXPORT_TIMEOUT),
        };
        // The SDK's default configuration reads OTEL_TRACES_SAMPLER and
        // OTEL_TRACES_SAMPLER_ARG (default: parent-based, always on, which
        // is ratio 1.0) and the resource variables.
        let Config { sampler, .. } = Config::default();
        Ok(Some(TraceConfig {
            endpoint,
            sampler,
            resource: resource(),
            batch,
        }))
    }
}

/// The service's resource: `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`
/// as the SDK reads them, with `switchyard` for a service named nowhere.
fn resource() -> Resource {
    let detected = Resource::builder().build();
    let service_name = detected.get(&Key::from_static_str("service.name"));
    match service_name {
        Some(Value::String(name)) if !name.as_str().starts_with(SDK_UNKNOWN_SERVICE) => detected,
        _ => Resource::builder()
            .with_service_name(DEFAULT_SERVICE_NAME)
            .build(),
    }
}

/// The URL spans are posted to: a base URL gets OTLP's `/v1/traces` (unless
/// it already ends so), a traces URL is used as it is.
fn traces_url(
    source_name: &'static str,
    value: &str,
    base: bool,
) -> Result<String, TraceConfigError> {
    let error = |reason: &str| TraceConfigError {
        source_name,
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    let url = url::Url::parse(value.trim()).map_err(|e| error(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(error("OTLP/HTTP needs an http:// or https:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(error("no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(error("a query or fragment has no place in an endpoint"));
    }
    let mut text = url.to_string();
    if base && !url.path().ends_with(TRACES_PATH) {
        while text.ends_with('/') {
            text.pop();
        }
        text.push_str(TRACES_PATH);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(flag: Option<&str>, vars: &[(&str, &str)]) -> Option<TraceConfig> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        TraceConfig::from_lookup(flag, |name| vars.get(name).cloned()).expect("valid")
    }

    #[test]
    fn off_without_an_endpoint() {
        assert!(config(None, &[]).is_none());
        assert!(config(Some(" "), &[("OTEL_EXPORTER_OTLP_ENDPOINT", "")]).is_none());
    }

    #[test]
    fn a_base_endpoint_gets_the_traces_path_and_a_traces_endpoint_is_kept() {
        let endpoint = |flag, vars: &[(&str, &str)]| config(flag, vars).expect("on").endpoint;
        assert_eq!(
            endpoint(Some("http://collector:4318"), &[]),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            endpoint(Some("http://collector:4318/otlp/"), &[]),
            "http://collector:4318/otlp/v1/traces"
        );
        assert_eq!(
            endpoint(Some("http://collector:4318/v1/traces"), &[]),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            endpoint(None, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318")]),
            "https://c:4318/v1/traces"
        );
        // The signal's own variable is used as it is, and wins over the base.
        assert_eq!(
            endpoint(
                None,
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318"),
                    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:9/custom")
                ]
            ),
            "http://t:9/custom"
        );
        // The command line wins over both.
        assert_eq!(
            endpoint(
                Some("http://flag:1"),
                &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:9/custom")]
            ),
            "http://flag:1/v1/traces"
        );
    }

    #[test]
    fn bad_endpoints_are_refused_with_their_source() {
        for bad in ["collector:4318", "grpc://c:4317", "http://c:4318/?x=1"] {
            let error = TraceConfig::from_lookup(Some(bad), |_| None).expect_err(bad);
            assert!(error.to_string().contains("--otlp-endpoint"), "{error}");
        }
    }

    #[test]
    fn batch_settings_follow_the_bsp_variables() {
        let batch = config(
            Some("http://c:4318"),
            &[
                ("OTEL_BSP_SCHEDULE_DELAY", "200"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "1500"),
            ],
        )
        .expect("on")
        .batch;
        assert_eq!(batch.schedule_delay, Duration::from_millis(200));
        assert_eq!(batch.max_queue, 100);
        // A batch is never larger than the queue.
        assert_eq!(batch.max_batch, 100);
        assert_eq!(batch.export_timeout, Duration::from_millis(1500));
        let defaults = config(Some("http://c:4318"), &[]).expect("on").batch;
        assert_eq!(defaults.max_queue, 2048);
        assert_eq!(defaults.max_batch, 512);
        assert_eq!(defaults.schedule_delay, Duration::from_secs(5));
    }
}
