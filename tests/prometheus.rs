//! The monitoring files under `deploy/` checked against the router itself:
//!
//! - `deploy/prometheus/switchyard.rules.yml` passes `promtool check rules`,
//!   and its unit tests (`switchyard.rules.test.yml`) pass `promtool test
//!   rules`;
//! - a real `/metrics` scrape, from a router with a TLS listener,
//!   health-checked upstreams and traffic on several routes, passes
//!   `promtool check metrics`;
//! - every metric that a rule or a panel of `deploy/grafana/switchyard.json`
//!   queries is in that scrape, so renaming a metric breaks the build, and
//!   every recorded series a panel reads is recorded by the rules;
//! - a real Prometheus server scrapes a running router with the rules
//!   loaded, records them, evaluates every rule without error, and accepts
//!   every panel's query.
//!
//! Needs Debian's `prometheus` package (`prometheus` and `promtool`). Where
//! a tool is missing its tests are skipped with a printed reason, except
//! under `CI=true`, where a missing tool is a failure. The checks that need
//! no tool (the scrape against the files) always run.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{client, eventually, Metrics, TestCa, TestRouter, Upstream};
use switchyard::tls::PairPaths;
use tempfile::TempDir;

/// Metrics of SPEC 3 that rules or panels query but the router does not
/// export yet: each comes with a feature still being built (route policy
/// of SPEC 7, tracing of SPEC 9, candidate tables of SPEC 10). Each entry
/// is removed when the router exports it; the test fails while an entry
/// names a metric the scrape has. A metric that only shows once a route
/// uses its feature needs that setting in [`routes_yaml`] as it lands.
const NOT_YET_EXPORTED: [&str; 0] = [];

/// A hung tool fails its test instead of hanging it.
const TOOL_DEADLINE: Duration = Duration::from_secs(60);

/// How long counts may take to show in `/metrics`: generous for a loaded
/// CI machine, short for a failure.
const COUNTED_WITHIN: Duration = Duration::from_secs(10);

/// How long the Prometheus server may take to start, scrape and record:
/// it scrapes and evaluates every second, and a rate needs two scrapes.
const PROMETHEUS_WITHIN: Duration = Duration::from_secs(60);

/// How often the Prometheus server is asked again while waiting: it
/// changes once a second at most.
const PROMETHEUS_POLL: Duration = Duration::from_millis(250);

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn rules_path() -> PathBuf {
    repo_path("deploy/prometheus/switchyard.rules.yml")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `name` from `$ENV` or `PATH`, or `None` after saying why `test` is
/// skipped; under `CI=true` a missing tool fails the test instead.
fn tool_or_skip(name: &str, env: &str, test: &str) -> Option<PathBuf> {
    let found = std::env::var_os(env).map(PathBuf::from).or_else(|| {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        let reason = format!("{name} not found (apt-get install -y prometheus, or set {env})");
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true requires {name}: {reason}"
        );
        eprintln!("skipping {test}: {reason}");
    }
    found
}

/// Runs `program` with `args` (and `stdin`, if any) to completion within
/// [`TOOL_DEADLINE`].
async fn run(program: &Path, args: &[&str], dir: &Path, stdin: Option<&str>) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input.write_all(text.as_bytes()).await.expect("write stdin");
    }
    tokio::time::timeout(TOOL_DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{} {args:?} still running", program.display()))
        .expect("wait for the tool")
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn rules_pass_promtool_check_rules() {
    let Some(promtool) = tool_or_skip("promtool", "PROMTOOL", "rules_pass_promtool_check_rules")
    else {
        return;
    };
    let rules = rules_path();
    let rules = rules.to_str().expect("a UTF-8 path");
    let output = run(&promtool, &["check", "rules", rules], &repo_path("."), None).await;
    assert_success(&output, "promtool check rules");
}

#[tokio::test]
async fn rules_pass_their_promtool_unit_tests() {
    let Some(promtool) = tool_or_skip(
        "promtool",
        "PROMTOOL",
        "rules_pass_their_promtool_unit_tests",
    ) else {
        return;
    };
    let dir = repo_path("deploy/prometheus");
    let output = run(
        &promtool,
        &["test", "rules", "switchyard.rules.test.yml"],
        &dir,
        None,
    )
    .await;
    assert_success(&output, "promtool test rules");
}

/// A router showing as many metric families as it has: a TLS listener
/// with a certificate, upstreams with active health checks (one up, one
/// refusing), a `respond` route, and requests to each and to no route.
struct FullRouter {
    router: TestRouter,
    _upstream: Upstream,
    _certificates: TempDir,
}

fn routes_yaml(upstream: &str, refusing: &str) -> String {
    format!(
        "routes:
  hello:
    prefix: /hello
    respond: {{ body: \"hello\\n\" }}
  broken:
    prefix: /broken
    respond: {{ status: 503 }}
  users:
    prefix: /users
    upstreams: [{upstream}, {refusing}]
    health: {{ path: /healthz, interval: 1s, timeout: 1s }}
"
    )
}

impl FullRouter {
    async fn start() -> FullRouter {
        let upstream = Upstream::echo("users").start().await;
        let refusing = support::closed_port_url().await;
        let certificates = tempfile::tempdir().expect("a directory");
        let (cert, key) = TestCa::new()
            .leaf(&["a.test"])
            .write(certificates.path(), "a");
        let router = TestRouter::with_yaml(routes_yaml(&upstream.url(), &refusing))
            .tls(vec![PairPaths { cert, key }])
            .start()
            .await;
        FullRouter {
            router,
            _upstream: upstream,
            _certificates: certificates,
        }
    }

    /// A few requests to every route and to no route.
    async fn traffic(&self) {
        for path in [
            "/hello", "/hello", "/broken", "/users/1", "/users/2", "/none",
        ] {
            self.router
                .get(path)
                .send()
                .await
                .expect("the proxy answers");
        }
    }

    /// `/metrics` once the first round of traffic is counted.
    async fn scrape_after_traffic(&self) -> Metrics {
        self.traffic().await;
        eventually(COUNTED_WITHIN, || async {
            let metrics = self.router.metrics().await;
            let counted = metrics
                .get(r#"switchyard_request_duration_seconds_count{route="_none"}"#)
                == Some(1.0)
                && metrics.get(r#"switchyard_request_duration_seconds_count{route="users"}"#)
                    == Some(2.0);
            counted.then_some(metrics)
        })
        .await
    }
}

#[tokio::test]
async fn a_real_scrape_passes_promtool_check_metrics() {
    let Some(promtool) = tool_or_skip(
        "promtool",
        "PROMTOOL",
        "a_real_scrape_passes_promtool_check_metrics",
    ) else {
        return;
    };
    let router = FullRouter::start().await;
    let scrape = router.scrape_after_traffic().await;
    for family in [
        "switchyard_tls_certificate_expiry_timestamp_seconds",
        "switchyard_upstream_healthy",
        "switchyard_request_duration_seconds",
    ] {
        assert!(
            scrape.0.contains(&format!("\n{family}")),
            "{family} has no sample:\n{}",
            scrape.0
        );
    }
    let output = run(
        &promtool,
        &["check", "metrics"],
        &repo_path("."),
        Some(&scrape.0),
    )
    .await;
    assert_success(&output, "promtool check metrics");
}

/// Metric families of a scrape by name, as its `# TYPE` lines give them.
fn families(scrape: &str) -> BTreeMap<String, String> {
    scrape
        .lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("# TYPE ")?.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.to_owned()))
        })
        .collect()
}

/// Whether the series name `name` belongs to one of `families`: exactly,
/// as a histogram's `_bucket`/`_sum`/`_count` series, or as the `_total`
/// series of a counter family written without it.
fn exported(name: &str, families: &BTreeMap<String, String>) -> bool {
    if families.contains_key(name) {
        return true;
    }
    let family_of = |suffix: &str, types: &[&str]| {
        name.strip_suffix(suffix)
            .and_then(|base| families.get(base))
            .is_some_and(|kind| types.contains(&kind.as_str()))
    };
    family_of("_bucket", &["histogram"])
        || family_of("_sum", &["histogram", "summary"])
        || family_of("_count", &["histogram", "summary"])
        || family_of("_total", &["counter"])
}

/// The `switchyard` names in a PromQL expression (or a Grafana
/// `label_values(...)` query): metric names, and recorded series
/// (`level:metric:operations`), told apart by their colons. Label values
/// are quoted and never start with `switchyard_`, so plain tokens do.
fn names_in(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|token| token.starts_with("switchyard_") || token.contains(":switchyard_"))
        .map(str::to_owned)
        .collect()
}

/// The rules file: recorded names, and every expression with where it is.
struct Rules {
    recorded: BTreeSet<String>,
    expressions: Vec<(String, String)>,
}

fn rules() -> Rules {
    let file: serde_yaml::Value =
        serde_yaml::from_str(&read(&rules_path())).expect("the rules file is YAML");
    let mut recorded = BTreeSet::new();
    let mut expressions = Vec::new();
    let groups = file["groups"].as_sequence().expect("a list of groups");
    for rule in groups
        .iter()
        .flat_map(|group| group["rules"].as_sequence().expect("a list of rules"))
    {
        let expr = rule["expr"].as_str().expect("every rule has an expr");
        let name = match (rule["record"].as_str(), rule["alert"].as_str()) {
            (Some(record), _) => {
                recorded.insert(record.to_owned());
                format!("record {record}")
            }
            (None, Some(alert)) => format!("alert {alert}"),
            (None, None) => panic!("a rule that neither records nor alerts: {expr}"),
        };
        expressions.push((name, expr.to_owned()));
    }
    Rules {
        recorded,
        expressions,
    }
}

fn dashboard() -> Value {
    serde_json::from_str(&read(&repo_path("deploy/grafana/switchyard.json")))
        .expect("the dashboard is JSON")
}

/// Every panel, those inside rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    let mut pending: Vec<&Value> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    while let Some(panel) = pending.pop() {
        pending.extend(panel["panels"].as_array().into_iter().flatten());
        all.push(panel);
    }
    all
}

/// Every query of the dashboard with where it is: panel targets,
/// variables and annotations.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                queries.push((format!("panel {}", panel["title"]), expr.to_owned()));
            }
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let query = &variable["query"];
        if variable["type"] == "query" {
            let text = query["query"]
                .as_str()
                .or(query.as_str())
                .unwrap_or_default();
            queries.push((format!("variable {}", variable["name"]), text.to_owned()));
        }
    }
    for annotation in dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(expr) = annotation["expr"].as_str() {
            queries.push((
                format!("annotation {}", annotation["name"]),
                expr.to_owned(),
            ));
        }
    }
    queries
}

#[test]
fn the_dashboard_is_grafana_json_on_a_prometheus_data_source_variable() {
    let dashboard = dashboard();
    assert!(
        dashboard["schemaVersion"].as_u64() >= Some(30),
        "schemaVersion"
    );
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    assert!(
        variables.iter().any(|v| v["type"] == "datasource"
            && v["name"] == "datasource"
            && v["query"] == "prometheus"),
        "no Prometheus data source variable"
    );
    let mut ids = BTreeSet::new();
    for panel in panels(&dashboard) {
        let title = &panel["title"];
        assert!(
            ids.insert(panel["id"].as_u64().expect("a panel id")),
            "id of {title} taken"
        );
        for field in ["x", "y", "w", "h"] {
            assert!(panel["gridPos"][field].is_u64(), "{title}: gridPos.{field}");
        }
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{title}'s data source"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} queries nothing");
        for target in targets {
            assert!(
                target["expr"]
                    .as_str()
                    .is_some_and(|e| !e.trim().is_empty()),
                "{title}: a target without an expr"
            );
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
        }
    }
    // What the dashboard is for: each part of the router has its panels.
    let queries: String = dashboard_queries(&dashboard)
        .into_iter()
        .map(|(_, q)| q + "\n")
        .collect();
    for needed in [
        "job_route:switchyard_requests:rate5m",
        "job_route:switchyard_requests_5xx:ratio_rate5m",
        "job_route:switchyard_request_duration_seconds:p99_5m",
        "switchyard_upstream_healthy",
        "switchyard_upstream_in_flight",
        "switchyard_config_reloads_total",
        "switchyard_tls_certificate_expiry_timestamp_seconds",
    ] {
        assert!(queries.contains(needed), "no panel reads {needed}");
    }
}

#[tokio::test]
async fn every_metric_the_rules_and_the_dashboard_query_is_exported() {
    let router = FullRouter::start().await;
    let scrape = router.scrape_after_traffic().await;
    let families = families(&scrape.0);
    let rules = rules();
    let dashboard = dashboard();
    let queries: Vec<(String, String)> = rules
        .expressions
        .iter()
        .cloned()
        .chain(dashboard_queries(&dashboard))
        .collect();

    let mut queried = BTreeSet::new();
    let mut wrong = Vec::new();
    for (place, expr) in &queries {
        for name in names_in(expr) {
            if name.contains(':') {
                if !rules.recorded.contains(&name) {
                    wrong.push(format!("{place} reads {name}, which no rule records"));
                }
            } else if !exported(&name, &families) && !NOT_YET_EXPORTED.contains(&name.as_str()) {
                wrong.push(format!(
                    "{place} queries {name}, which the router does not export (renamed?)"
                ));
            }
            queried.insert(name);
        }
    }
    for name in NOT_YET_EXPORTED {
        if exported(name, &families) {
            wrong.push(format!(
                "{name} is exported now: remove it from NOT_YET_EXPORTED"
            ));
        }
        if !queried.contains(name) {
            wrong.push(format!(
                "{name} is in NOT_YET_EXPORTED but no rule or panel queries it"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{wrong:#?}\nfamilies in the scrape: {:#?}",
        families.keys()
    );
    assert!(
        queried.len() > 15,
        "the parser found too little: {queried:?}"
    );
}

/// Grafana's variables as a test sets them, so a panel's query is PromQL.
fn without_variables(query: &str, job: &str) -> String {
    let query = query
        .replace("$__rate_interval", "1m")
        .replace("$job", job)
        .replace("$instance", ".*")
        .replace("$route", ".*");
    // A variable's `label_values(SELECTOR, label)` asks for SELECTOR's series.
    match query.strip_prefix("label_values(") {
        Some(rest) => rest
            .rsplit_once(',')
            .map_or(rest, |(selector, _)| selector)
            .to_owned(),
        None => query,
    }
}

/// A Prometheus server on a free loopback port, with the rules loaded,
/// scraping `target` every second. Killed on drop.
struct PrometheusServer {
    child: tokio::process::Child,
    url: String,
    _dir: TempDir,
}

const JOB: &str = "switchyard";

impl PrometheusServer {
    async fn start(prometheus: &Path, target: std::net::SocketAddr) -> PrometheusServer {
        let dir = tempfile::tempdir().expect("a directory");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}
rule_files: [{rules:?}]
scrape_configs:
  - job_name: {JOB}
    static_configs: [{{ targets: ['{target}'] }}]
",
                rules = rules_path(),
            ),
        )
        .expect("write prometheus.yml");
        // A free port: bound, read and released. Another process could
        // take it in between; on a test machine's loopback none does.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        let mut config_arg = std::ffi::OsString::from("--config.file=");
        config_arg.push(&config);
        let mut storage_arg = std::ffi::OsString::from("--storage.tsdb.path=");
        storage_arg.push(dir.path().join("data"));
        let child = tokio::process::Command::new(prometheus)
            .arg(config_arg)
            .arg(storage_arg)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start prometheus");
        PrometheusServer {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// GETs an API path with query parameters; `None` while the server
    /// does not answer yet.
    async fn get(&self, path: &str, params: &[(&str, &str)]) -> Option<(u16, Value)> {
        let url =
            url::Url::parse_with_params(&format!("{}{path}", self.url), params).expect("a URL");
        let response = client().get(url.as_str()).send().await.ok()?;
        let status = response.status().as_u16();
        let body = response.text().await.ok()?;
        Some((status, serde_json::from_str(&body).ok()?))
    }

    /// Asks until `check` returns a value, for up to [`PROMETHEUS_WITHIN`];
    /// `step` runs before each try (to send traffic). Panics with the
    /// server's log after the deadline, or at once if the server exited.
    async fn until<T>(
        &mut self,
        what: &str,
        mut step: impl AsyncFnMut(),
        mut check: impl AsyncFnMut(&PrometheusServer) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + PROMETHEUS_WITHIN;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited ({status}) before {what}");
            }
            step().await;
            if let Some(value) = check(self).await {
                return value;
            }
            tokio::time::sleep(PROMETHEUS_POLL).await;
        }
        let _ = self.child.start_kill();
        let log = match self.child.stderr.take() {
            Some(mut stderr) => {
                use tokio::io::AsyncReadExt;
                let mut text = String::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), stderr.read_to_string(&mut text))
                        .await;
                text
            }
            None => String::new(),
        };
        panic!("no {what} within {PROMETHEUS_WITHIN:?}; prometheus said:\n{log}");
    }

    /// An instant query's result list, if the query succeeded.
    async fn query(&self, expr: &str) -> Option<Vec<Value>> {
        let (_, body) = self.get("/api/v1/query", &[("query", expr)]).await?;
        (body["status"] == "success").then(|| {
            body["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_router_and_records_the_rules() {
    let Some(prometheus) = tool_or_skip(
        "prometheus",
        "PROMETHEUS",
        "prometheus_scrapes_the_router_and_records_the_rules",
    ) else {
        return;
    };
    let router = FullRouter::start().await;
    let mut server = PrometheusServer::start(&prometheus, router.router.admin_addr()).await;
    server
        .until(
            "readiness",
            async || {},
            async |server: &PrometheusServer| {
                let url = format!("{}/-/ready", server.url);
                let ready = client().get(url).send().await.ok()?;
                ready.status().is_success().then_some(())
            },
        )
        .await;

    // Traffic between scrapes, until the recorded rate of `hello` is
    // above zero: scraped twice at least, and the rules evaluated on it.
    let rate = r#"job_route:switchyard_requests:rate5m{route="hello"}"#;
    let recorded = server
        .until(
            "recorded rate for route hello",
            async || router.traffic().await,
            async |server: &PrometheusServer| {
                let result = server.query(rate).await?;
                let value: f64 = result.first()?["value"][1].as_str()?.parse().ok()?;
                (value > 0.0).then_some(value)
            },
        )
        .await;
    assert!(recorded.is_finite());

    // Every rule has been evaluated on real data, none with an error.
    let rules = server
        .until(
            "every rule evaluated",
            async || {},
            async |server: &PrometheusServer| {
                let (_, body) = server.get("/api/v1/rules", &[]).await?;
                let rules: Vec<Value> = body["data"]["groups"]
                    .as_array()?
                    .iter()
                    .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
                    .collect();
                let evaluated = !rules.is_empty() && rules.iter().all(|r| r["health"] != "unknown");
                evaluated.then_some(rules)
            },
        )
        .await;
    let unhealthy: Vec<String> = rules
        .iter()
        .filter(|rule| rule["health"] != "ok")
        .map(|rule| format!("{}: {}", rule["name"], rule["lastError"]))
        .collect();
    assert!(unhealthy.is_empty(), "rules failing: {unhealthy:#?}");
    assert_eq!(rules.len(), self::rules().expressions.len(), "rules loaded");

    // Every panel's query is PromQL the server accepts.
    let mut refused = Vec::new();
    for (place, query) in dashboard_queries(&dashboard()) {
        let promql = without_variables(&query, JOB);
        if server.query(&promql).await.is_none() {
            refused.push(format!("{place}: {promql}"));
        }
    }
    assert!(refused.is_empty(), "queries refused: {refused:#?}");
    // The recorded p99 and 5xx share of a route with traffic exist too.
    for recorded in [
        r#"job_route:switchyard_requests_5xx:ratio_rate5m{route="broken"}"#,
        r#"job_route:switchyard_request_duration_seconds:p99_5m{route="hello"}"#,
    ] {
        let result = server.query(recorded).await.expect("the query runs");
        assert_eq!(result.len(), 1, "{recorded}: {result:?}");
    }
}
