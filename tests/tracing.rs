//! Tracing through the real binary (SPEC 9): an OTLP/HTTP collector in the
//! test decodes what the router exports with OpenTelemetry's own protobuf
//! types, and real upstreams report the `traceparent` and `tracestate`
//! they receive.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;
use serde_json::Value;
use support::{client, closed_port_url, eventually, Echoed, SwitchyardProcess, Upstream};
use tokio::net::TcpListener;

/// How long exported spans may take to arrive: the router is told to
/// export every 50 ms; generous for a loaded CI machine.
const EXPORTED_WITHIN: Duration = Duration::from_secs(15);

/// The caller's span in the requests that carry one.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A `tracestate` with the spacing W3C allows, which a re-serializing
/// proxy would change.
const TRACESTATE: &str = "rojo=00f067aa0ba902b7, congo=t61rcWkgMzE";

fn caller_traceparent(flags: &str) -> String {
    format!("00-{CALLER_TRACE}-{CALLER_SPAN}-{flags}")
}

/// One span as the collector received it.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    /// 2 server, 3 client (OTLP's `SpanKind`).
    kind: i32,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: BTreeMap<String, String>,
    /// 0 unset, 2 error (OTLP's `StatusCode`).
    status: i32,
    start: u64,
    duration: Duration,
}

impl Received {
    fn attribute(&self, key: &str) -> &str {
        self.attributes
            .get(key)
            .unwrap_or_else(|| panic!("no attribute {key} in {self:#?}"))
    }
}

/// One trace as a table, the server span first, then its tries in the
/// order they started; printed by the first test (run it with
/// `--nocapture`), as the README shows it.
fn render(spans: &[Received]) -> String {
    let mut ordered: Vec<&Received> = spans.iter().collect();
    ordered.sort_by_key(|s| (s.kind, s.start));
    let mut out = String::from(
        "| span | kind | id | parent | duration | attributes |\n|---|---|---|---|---|---|\n",
    );
    for span in ordered {
        let attributes: Vec<String> = span
            .attributes
            .iter()
            .map(|(k, v)| format!("`{k}={v}`"))
            .collect();
        let status = if span.status == 2 { " (error)" } else { "" };
        out.push_str(&format!(
            "| {}{status} | {} | {} | {} | {:.2} ms | {} |\n",
            span.name,
            if span.kind == 2 { "server" } else { "client" },
            span.span_id,
            if span.parent_span_id.is_empty() {
                "-"
            } else {
                &span.parent_span_id
            },
            span.duration.as_secs_f64() * 1000.0,
            attributes.join(" ")
        ));
    }
    out
}

/// An OTLP/HTTP collector on `127.0.0.1:0`: every `POST /v1/traces`
/// decoded and kept.
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Received>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Collector {
    async fn start() -> Collector {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&spans);
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |body: Bytes| {
                let kept = Arc::clone(&kept);
                async move {
                    let request = ExportTraceServiceRequest::decode(body)
                        .expect("an OTLP protobuf export request");
                    kept.lock().unwrap().extend(received(request));
                    (
                        [("content-type", "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the collector");
        let addr = listener.local_addr().expect("the collector's address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Collector {
            addr,
            spans,
            _task: task,
        }
    }

    /// The base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` and `--otlp-endpoint`
    /// take it.
    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }

    /// The spans of `trace_id`, once at least `count` have arrived.
    async fn trace(&self, trace_id: &str, count: usize) -> Vec<Received> {
        eventually(EXPORTED_WITHIN, || async {
            let spans: Vec<Received> = self
                .spans()
                .into_iter()
                .filter(|span| span.trace_id == trace_id)
                .collect();
            (spans.len() >= count).then_some(spans)
        })
        .await
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn received(request: ExportTraceServiceRequest) -> Vec<Received> {
    let mut all = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                all.push(Received {
                    service: service.clone(),
                    name: span.name,
                    kind: span.kind,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| {
                            let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
                            (kv.key.clone(), text(value))
                        })
                        .collect(),
                    status: span.status.map_or(0, |s| s.code),
                    start: span.start_time_unix_nano,
                    duration: Duration::from_nanos(
                        span.end_time_unix_nano
                            .saturating_sub(span.start_time_unix_nano),
                    ),
                });
            }
        }
    }
    all
}

fn text(value: Option<&AnyValue>) -> String {
    match value {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// The router with tracing on, exporting to `endpoint` every 50 ms, plus
/// `env`.
async fn traced_router(yaml: &str, endpoint: &str, env: &[(&str, &str)]) -> SwitchyardProcess {
    let mut all = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ];
    all.extend_from_slice(env);
    SwitchyardProcess::run_with_yaml_and_env(yaml, &[], &all).await
}

/// The echo upstream's view of one request through `router`.
async fn echoed(router: &SwitchyardProcess, path: &str, headers: &[(&str, &str)]) -> Echoed {
    let mut request = client().get(router.proxy_url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the router answers");
    assert_eq!(response.status(), 200);
    Echoed::from_response(response).await
}

/// The trace and span id of a `traceparent`.
fn ids_of(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    (parts[1].to_owned(), parts[2].to_owned())
}

#[tokio::test]
async fn a_callers_traceparent_makes_the_server_span_its_child_with_a_client_span_per_try() {
    let collector = Collector::start().await;
    let echo = Upstream::echo("echo").start().await;
    let closed = closed_port_url().await;
    // The heavy upstream is picked first; it refuses, and the try after it
    // goes to the echo upstream: two tries, two client spans.
    let yaml = format!(
        "routes:
  api:
    prefix: /api
    upstreams:
      - {{ url: {closed}, weight: 100 }}
      - {{ url: {echo}, weight: 1 }}
  broken:
    prefix: /broken
    respond: {{ status: 503 }}
",
        echo = echo.url()
    );
    let router = traced_router(&yaml, &collector.endpoint(), &[]).await;

    let parent = caller_traceparent("01");
    let seen = echoed(
        &router,
        "/api/users/7?q=1",
        &[("traceparent", &parent), ("tracestate", TRACESTATE)],
    )
    .await;
    let sent = seen.header("traceparent").expect("a traceparent upstream");
    let (trace_id, try_span) = ids_of(sent);
    assert_eq!(trace_id, CALLER_TRACE);
    assert!(sent.ends_with("-01"), "{sent}");
    assert_eq!(seen.header("tracestate"), Some(TRACESTATE));

    let spans = collector.trace(CALLER_TRACE, 3).await;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    eprintln!("{}", render(&spans));
    let server = spans.iter().find(|s| s.kind == 2).expect("a server span");
    assert_eq!(server.name, "GET api");
    assert_eq!(server.service, "switchyard");
    assert_eq!(server.parent_span_id, CALLER_SPAN);
    assert_eq!(server.status, 0);
    let proxy = router.proxy_url("");
    let proxy_addr = proxy.trim_start_matches("http://");
    for (key, value) in [
        ("http.request.method", "GET"),
        ("url.path", "/api/users/7"),
        ("url.scheme", "http"),
        ("http.route", "/api"),
        ("server.address", "127.0.0.1"),
        ("client.address", "127.0.0.1"),
        ("http.response.status_code", "200"),
        ("network.protocol.version", "1.1"),
        ("switchyard.route", "api"),
        ("switchyard.config.version", "1"),
    ] {
        assert_eq!(server.attribute(key), value, "{key} on {server:#?}");
    }
    assert!(proxy_addr.starts_with("127.0.0.1:"));

    let mut tries: Vec<&Received> = spans.iter().filter(|s| s.kind == 3).collect();
    assert_eq!(tries.len(), 2, "{spans:#?}");
    tries.sort_by_key(|s| s.attributes.contains_key("http.response.status_code"));
    let (refused, answered) = (tries[0], tries[1]);
    for span in [refused, answered] {
        assert_eq!(span.parent_span_id, server.span_id);
        assert_eq!(span.name, "GET");
        assert_eq!(span.attribute("server.address"), "127.0.0.1");
    }
    assert_eq!(refused.attribute("error.type"), "connect");
    assert_eq!(refused.status, 2);
    assert_eq!(
        refused.attribute("server.port"),
        closed.rsplit(':').next().expect("a port")
    );
    assert_eq!(answered.attribute("http.response.status_code"), "200");
    assert_eq!(
        answered.attribute("server.port"),
        echo.addr().port().to_string()
    );
    assert!(!answered.attributes.contains_key("error.type"));
    // The upstream was told the answering try's span, not the server's.
    assert_eq!(try_span, answered.span_id);
    assert!(server.duration >= answered.duration);

    // A 5xx makes the server span an error.
    let broken = client()
        .get(router.proxy_url("/broken"))
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .send()
        .await
        .expect("the router answers");
    assert_eq!(broken.status(), 503);
    let spans = collector.trace("0af7651916cd43dd8448eb211c80319c", 1).await;
    assert_eq!(spans[0].name, "GET broken");
    assert_eq!(spans[0].status, 2);
    assert_eq!(spans[0].attribute("error.type"), "503");
    assert_eq!(spans[0].attribute("http.response.status_code"), "503");
}

#[tokio::test]
async fn a_request_without_a_valid_traceparent_starts_a_trace() {
    let collector = Collector::start().await;
    let echo = Upstream::echo("echo").start().await;
    let yaml = format!("routes:\n  all:\n    upstream: {}\n", echo.url());
    let router = traced_router(
        &yaml,
        &collector.endpoint(),
        &[("OTEL_SERVICE_NAME", "edge-router")],
    )
    .await;
    for headers in [
        vec![],
        // Upper-case hex, an all-zero trace id, garbage: all invalid.
        vec![(
            "traceparent",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        )],
        vec![(
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        )],
        vec![("traceparent", "not a traceparent")],
    ] {
        let seen = echoed(&router, "/x", &headers).await;
        let sent = seen.header("traceparent").expect("a traceparent upstream");
        let (trace_id, try_span) = ids_of(sent);
        assert_ne!(trace_id, CALLER_TRACE.to_owned());
        assert_ne!(trace_id, "0".repeat(32));
        assert!(sent.ends_with("-01"), "{sent}");
        let spans = collector.trace(&trace_id, 2).await;
        let server = spans.iter().find(|s| s.kind == 2).expect("a server span");
        assert_eq!(server.parent_span_id, "", "a new trace has no parent");
        assert_eq!(server.service, "edge-router");
        let answered = spans.iter().find(|s| s.kind == 3).expect("a client span");
        assert_eq!(answered.span_id, try_span);
        assert_eq!(answered.parent_span_id, server.span_id);
    }
}

/// Sends `requests` requests with `headers`, stops the router (which sends
/// what waits to the collector), and returns what the upstream saw of each
/// with the spans the collector got.
async fn sampled(
    env: &[(&str, &str)],
    headers: &[(&str, &str)],
    requests: usize,
) -> (Vec<Echoed>, Vec<Received>) {
    let collector = Collector::start().await;
    let echo = Upstream::echo("echo").start().await;
    let yaml = format!("routes:\n  all:\n    upstream: {}\n", echo.url());
    let mut router = traced_router(&yaml, &collector.endpoint(), env).await;
    let mut seen = Vec::new();
    for _ in 0..requests {
        seen.push(echoed(&router, "/s", headers).await);
    }
    // The shutdown exports what is queued: after it, the collector has
    // every span the router recorded.
    router.signal("TERM").await;
    assert!(router.exit_status().await.success());
    (seen, collector.spans())
}

#[tokio::test]
async fn ratio_sampling_follows_otel_traces_sampler() {
    let ratio = |arg| {
        [
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", arg),
        ]
    };

    // Ratio 0: nothing recorded; the upstream is told the trace is not
    // sampled, so it does not sample it either.
    let (seen, spans) = sampled(&ratio("0"), &[], 20).await;
    assert!(spans.is_empty(), "{spans:#?}");
    for echo in &seen {
        let sent = echo.header("traceparent").expect("a traceparent");
        assert!(sent.ends_with("-00"), "{sent}");
    }

    // Ratio 1: every request, a server and a client span each.
    let (seen, spans) = sampled(&ratio("1"), &[], 20).await;
    assert_eq!(spans.len(), 40);
    for echo in &seen {
        let sent = echo.header("traceparent").expect("a traceparent");
        assert!(sent.ends_with("-01"), "{sent}");
        let (trace_id, _) = ids_of(sent);
        assert_eq!(spans.iter().filter(|s| s.trace_id == trace_id).count(), 2);
    }

    // A plain ratio sampler ignores the caller's flag: sampled anyway.
    let unsampled_parent = caller_traceparent("00");
    let (_, spans) = sampled(&ratio("1"), &[("traceparent", &unsampled_parent)], 3).await;
    assert_eq!(spans.len(), 6);
}

#[tokio::test]
async fn parent_based_sampling_follows_the_callers_flag() {
    let parent_based = [
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0"),
    ];
    // A sampled caller: its trace is recorded, though the ratio is 0.
    let sampled_parent = caller_traceparent("01");
    let (seen, spans) = sampled(&parent_based, &[("traceparent", &sampled_parent)], 5).await;
    assert_eq!(spans.len(), 10);
    assert!(spans.iter().all(|s| s.trace_id == CALLER_TRACE));
    for echo in &seen {
        let (trace_id, span_id) = ids_of(echo.header("traceparent").expect("traceparent"));
        assert_eq!(trace_id, CALLER_TRACE);
        assert_ne!(span_id, CALLER_SPAN);
    }

    // A caller that did not sample: nothing recorded, and the upstream gets
    // the caller's own traceparent, unchanged.
    let unsampled_parent = caller_traceparent("00");
    let (seen, spans) = sampled(
        &parent_based,
        &[
            ("traceparent", &unsampled_parent),
            ("tracestate", TRACESTATE),
        ],
        5,
    )
    .await;
    assert!(spans.is_empty(), "{spans:#?}");
    for echo in &seen {
        assert_eq!(echo.header("traceparent"), Some(unsampled_parent.as_str()));
        assert_eq!(echo.header("tracestate"), Some(TRACESTATE));
    }

    // No caller: the root's ratio (0) decides.
    let (_, spans) = sampled(&parent_based, &[], 5).await;
    assert!(spans.is_empty(), "{spans:#?}");

    // The default sampler is parent-based at ratio 1.
    let (_, spans) = sampled(&[], &[("traceparent", &unsampled_parent)], 3).await;
    assert!(spans.is_empty(), "{spans:#?}");
    let (_, spans) = sampled(&[], &[], 3).await;
    assert_eq!(spans.len(), 6);
}

#[tokio::test]
async fn with_tracing_off_trace_context_reaches_the_upstream_byte_for_byte() {
    let echo = Upstream::echo("echo").start().await;
    let yaml = format!("routes:\n  all:\n    upstream: {}\n", echo.url());
    let router = SwitchyardProcess::run_with_yaml(&yaml, &[]).await;
    for traceparent in [
        caller_traceparent("01").as_str(),
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-09",
        "not a traceparent",
    ] {
        let seen = echoed(
            &router,
            "/x",
            &[("traceparent", traceparent), ("tracestate", TRACESTATE)],
        )
        .await;
        assert_eq!(seen.header("traceparent"), Some(traceparent));
        assert_eq!(seen.header("tracestate"), Some(TRACESTATE));
    }
    let seen = echoed(&router, "/x", &[]).await;
    assert_eq!(seen.header("traceparent"), None);
    // No trace fields in the access lines either.
    let line = eventually(EXPORTED_WITHIN, || async {
        router
            .logs()
            .into_iter()
            .find(|line| line.contains("switchyard::access"))
    })
    .await;
    assert!(!line.contains("trace_id"), "{line}");
}

#[tokio::test]
async fn access_lines_carry_the_server_spans_ids() {
    let collector = Collector::start().await;
    let echo = Upstream::echo("echo").start().await;
    let yaml = format!("routes:\n  all:\n    upstream: {}\n", echo.url());
    let router = traced_router(&yaml, &collector.endpoint(), &[]).await;
    let parent = caller_traceparent("01");
    echoed(
        &router,
        "/logged",
        &[("traceparent", &parent), ("x-request-id", "traced-1")],
    )
    .await;
    let line: Value = eventually(EXPORTED_WITHIN, || async {
        router.logs().iter().find_map(|line| {
            let value: Value = serde_json::from_str(line).ok()?;
            (value["request_id"] == "traced-1").then_some(value)
        })
    })
    .await;
    let spans = collector.trace(CALLER_TRACE, 2).await;
    let server = spans.iter().find(|s| s.kind == 2).expect("a server span");
    assert_eq!(line["trace_id"], CALLER_TRACE);
    assert_eq!(line["span_id"], server.span_id.as_str());

    // The default (pretty) format, with the endpoint on the command line.
    let pretty =
        SwitchyardProcess::start_with_defaults(&yaml, &["--otlp-endpoint", &collector.endpoint()])
            .await;
    let other = "00-11111111111111111111111111111111-2222222222222222-01";
    let response = client()
        .get(pretty.proxy_url("/pretty"))
        .header("traceparent", other)
        .send()
        .await
        .expect("the router answers");
    assert_eq!(response.status(), 200);
    let line = eventually(EXPORTED_WITHIN, || async {
        pretty
            .logs()
            .into_iter()
            .find(|line| line.contains("path=/pretty"))
    })
    .await;
    assert!(
        line.contains(" trace_id=11111111111111111111111111111111 span_id="),
        "{line}"
    );
    let span_id = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("span_id="))
        .expect("a span_id field");
    let spans = collector.trace("11111111111111111111111111111111", 2).await;
    let server = spans.iter().find(|s| s.kind == 2).expect("a server span");
    assert_eq!(server.span_id, span_id);
}

#[tokio::test]
async fn grpc_calls_to_h2c_upstreams_get_the_same_spans() {
    let collector = Collector::start().await;
    let server = switchyard_grpc_fixture::serve_h2c().await;
    let yaml = format!(
        "routes:\n  grpc:\n    host: grpc.test\n    upstream: {}\n",
        server.h2c_url()
    );
    let router = traced_router(&yaml, &collector.endpoint(), &[]).await;
    let addr: SocketAddr = router
        .proxy_url("")
        .trim_start_matches("http://")
        .parse()
        .expect("the proxy address");
    let mut grpc = switchyard_grpc_fixture::connect_h2c(addr, "grpc.test").await;
    let mut call = tonic::Request::new(switchyard_grpc_fixture::Message {
        seq: 1,
        payload: vec![1; 8],
        text: "traced".to_owned(),
    });
    call.metadata_mut().insert(
        "traceparent",
        caller_traceparent("01").parse().expect("ASCII"),
    );
    grpc.unary(call).await.expect("the call answers");
    let sent = server
        .seen
        .last_header("traceparent")
        .expect("a traceparent");
    let (trace_id, try_span) = ids_of(&sent);
    assert_eq!(trace_id, CALLER_TRACE);

    let spans = collector.trace(CALLER_TRACE, 2).await;
    let server_span = spans.iter().find(|s| s.kind == 2).expect("a server span");
    assert_eq!(server_span.name, "POST grpc");
    assert_eq!(server_span.parent_span_id, CALLER_SPAN);
    assert_eq!(server_span.attribute("network.protocol.version"), "2");
    assert_eq!(server_span.attribute("server.address"), "grpc.test");
    assert_eq!(server_span.attribute("http.response.status_code"), "200");
    let try_span_received = spans.iter().find(|s| s.kind == 3).expect("a client span");
    assert_eq!(try_span_received.span_id, try_span);
    assert_eq!(try_span_received.parent_span_id, server_span.span_id);
    assert_eq!(
        try_span_received.attribute("server.port"),
        server.addr.port().to_string()
    );
}

/// The 99th percentile of `durations`.
fn p99(mut durations: Vec<Duration>) -> Duration {
    durations.sort();
    durations[(durations.len() * 99 / 100).min(durations.len() - 1)]
}

/// Requests sent to each router in the collector-failure test, by this many
/// clients at once.
const LOAD_REQUESTS: usize = 2_000;
const LOAD_CLIENTS: usize = 8;

/// Sends [`LOAD_REQUESTS`] GETs through `router`; every one must succeed.
/// Returns their durations.
async fn load(router: &SwitchyardProcess) -> Vec<Duration> {
    let url = router.proxy_url("/load");
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..LOAD_CLIENTS {
        let url = url.clone();
        clients.spawn(async move {
            let client = client();
            let mut durations = Vec::with_capacity(LOAD_REQUESTS / LOAD_CLIENTS);
            for _ in 0..LOAD_REQUESTS / LOAD_CLIENTS {
                let started = Instant::now();
                let response = client.get(&url).send().await.expect("the router answers");
                assert_eq!(response.status(), 200);
                response.bytes().await.expect("the whole body");
                durations.push(started.elapsed());
            }
            durations
        });
    }
    let mut all = Vec::with_capacity(LOAD_REQUESTS);
    while let Some(durations) = clients.join_next().await {
        all.extend(durations.expect("a load client"));
    }
    assert_eq!(all.len(), LOAD_REQUESTS);
    all
}

async fn dropped_spans(router: &SwitchyardProcess) -> f64 {
    let text = client()
        .get(router.admin_url("/metrics"))
        .send()
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("a body");
    text.lines()
        .find_map(|line| line.strip_prefix("switchyard_trace_spans_dropped_total "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no switchyard_trace_spans_dropped_total in {text}"))
}

#[tokio::test]
async fn a_collector_that_is_down_or_silent_costs_requests_nothing() {
    let upstream = Upstream::handler(axum::Router::new().fallback(|| async { "ok" }))
        .start()
        .await;
    let yaml = format!("routes:\n  all:\n    upstream: {}\n", upstream.url());

    let off = SwitchyardProcess::run_with_yaml(&yaml, &[]).await;
    assert_eq!(dropped_spans(&off).await, 0.0);
    let off_p99 = p99(load(&off).await);
    drop(off);

    // A collector that accepts connections and never reads from them.
    let silent = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the silent collector");
    let silent_url = format!("http://{}", silent.local_addr().expect("its address"));
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let down = closed_port_url().await;
    for (what, endpoint) in [("down", down.as_str()), ("silent", silent_url.as_str())] {
        let router = traced_router(
            &yaml,
            endpoint,
            &[
                // A request held by an export would wait this long.
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "5000"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "256"),
            ],
        )
        .await;
        let p99_on = p99(load(&router).await);
        eprintln!(
            "collector {what}: p99 {p99_on:?} with tracing on, {off_p99:?} with tracing off ({LOAD_REQUESTS} requests, {LOAD_CLIENTS} clients)"
        );
        // Generous: what must not happen is a request waiting for an export.
        assert!(
            p99_on < Duration::from_secs(1),
            "collector {what}: p99 {p99_on:?} (tracing off: {off_p99:?})"
        );
        let dropped = eventually(EXPORTED_WITHIN, || async {
            let dropped = dropped_spans(&router).await;
            (dropped > 0.0).then_some(dropped)
        })
        .await;
        eprintln!("collector {what}: {dropped} spans dropped and counted");
    }
    held.abort();
}
