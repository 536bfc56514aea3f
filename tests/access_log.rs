//! The real binary's logs: one access-log event per request with the fields
//! operators search by, in JSON with `--log-format json` and as readable
//! lines by default; start-up and reloads are logged the same way.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{client, eventually, SwitchyardProcess, Upstream};

/// How long a log line may take to appear: generous for a loaded CI
/// machine, still short for a real failure.
const LOGGED_WITHIN: Duration = Duration::from_secs(10);

/// Waits for a log line that satisfies `pick`; the first such line, in the
/// order they were logged.
async fn wait_line<T>(binary: &SwitchyardProcess, pick: impl Fn(&str) -> Option<T>) -> T {
    eventually(LOGGED_WITHIN, || async {
        binary.logs().iter().find_map(|line| pick(line))
    })
    .await
}

/// Waits for a JSON log line that satisfies `pick`; every line must be JSON.
async fn wait_json(binary: &SwitchyardProcess, pick: impl Fn(&Value) -> bool) -> Value {
    wait_line(binary, |line| {
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        pick(&value).then_some(value)
    })
    .await
}

fn addr(value: &Value, field: &str) -> String {
    value[field].as_str().expect("an address field").to_owned()
}

async fn get(url: String, request_id: &str) -> reqwest::Response {
    client()
        .get(url)
        .header("x-request-id", request_id)
        .send()
        .await
        .expect("the router answers")
}

#[tokio::test]
async fn json_logs_carry_every_access_field_and_reloads() {
    let upstream = Upstream::echo("echo").start().await;
    let yaml = format!(
        "routes:\n  hello:\n    prefix: /hello\n    respond: {{ body: \"hello\\n\" }}\n  echo:\n    prefix: /echo\n    upstream: {}\n",
        upstream.url()
    );
    let binary = SwitchyardProcess::start_with_defaults(&yaml, &["--log-format", "json"]).await;
    // Start-up.
    let started = wait_json(&binary, |v| v["message"] == "switchyard listening").await;
    assert_eq!(started["level"], "INFO");
    assert_eq!(started["routes"], 2);
    assert_eq!(started["version"], 1);
    let (proxy, admin) = (addr(&started, "proxy"), addr(&started, "admin"));

    let hello = get(format!("http://{proxy}/hello"), "access-1").await;
    assert_eq!(hello.text().await.expect("a body"), "hello\n");
    let echo = get(format!("http://{proxy}/echo/a?token=secret"), "access-2").await;
    let echo_body = echo.text().await.expect("a body");
    let none = get(format!("http://{proxy}/nowhere"), "access-3").await;
    assert_eq!(none.status(), 404);

    let by_id = |id: &'static str| {
        move |v: &Value| v["target"] == "switchyard::access" && v["request_id"] == id
    };
    // The /hello access line.
    let line = wait_json(&binary, by_id("access-1")).await;
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["message"], "request");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["host"], proxy.as_str());
    assert_eq!(line["path"], "/hello");
    assert_eq!(line["route"], "hello");
    assert_eq!(line["upstream"], "-");
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes"], 6);
    assert_eq!(line["outcome"], "complete");
    assert!(
        line["duration_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
        "{line}"
    );
    assert!(line["timestamp"].is_string());

    // The /echo access line.
    let line = wait_json(&binary, by_id("access-2")).await;
    assert_eq!(line["route"], "echo");
    assert_eq!(
        line["path"], "/echo/a",
        "the path is logged without the query"
    );
    assert_eq!(
        line["query"], "token=secret",
        "and the query on its own (SPEC 10.3)"
    );
    assert_eq!(line["upstream"], format!("{}/", upstream.url()));
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes"], echo_body.len());

    // The unrouted access line.
    let line = wait_json(&binary, by_id("access-3")).await;
    assert_eq!(line["route"], "_none");
    assert_eq!(line["status"], 404);
    assert_eq!(line["error"], "no_route");

    // Reloads, rejected and accepted, are logged as JSON events too.
    binary
        .route_file()
        .write("routes:\n  hello:\n    prefx: /hello\n");
    let reload = client()
        .post(format!("http://{admin}/reload"))
        .send()
        .await
        .expect("the admin API answers");
    assert_eq!(reload.status(), 422);
    // The rejected reload.
    let rejected = wait_json(&binary, |v| v["level"] == "ERROR").await;
    assert!(
        rejected["error"]
            .as_str()
            .is_some_and(|e| e.contains("prefx") && e.contains("line 3")),
        "{rejected}"
    );
    binary.route_file().write(&format!(
        "{yaml}  more:\n    prefix: /more\n    respond: {{}}\n"
    ));
    let reload = client()
        .post(format!("http://{admin}/reload"))
        .send()
        .await
        .expect("the admin API answers");
    assert_eq!(reload.status(), 200);
    // The accepted reload.
    let reloaded = wait_json(&binary, |v| v["message"] == "route table reloaded").await;
    assert_eq!(reloaded["version"], 2);
    assert!(
        reloaded["added"]
            .as_str()
            .is_some_and(|a| a.contains("more")),
        "{reloaded}"
    );
}

#[tokio::test]
async fn pretty_logs_are_one_readable_line_per_request() {
    let yaml = "routes:\n  hello:\n    prefix: /hello\n    respond: { status: 201 }\n";
    // Starts once its pretty start-up line has shown `proxy=ADDR`.
    let binary = SwitchyardProcess::start_with_defaults(yaml, &[]).await;
    let response = get(binary.proxy_url("/hello"), "pretty-1").await;
    assert_eq!(response.status(), 201);
    // The access line.
    let line = wait_line(&binary, |line| {
        line.contains("pretty-1").then(|| line.to_owned())
    })
    .await;
    for part in [
        "INFO",
        "switchyard::access",
        "GET",
        "path=/hello",
        "route=hello",
        "status=201",
        "request_id=pretty-1",
        "outcome=complete",
    ] {
        assert!(line.contains(part), "{part} missing from {line:?}");
    }
}

#[tokio::test]
async fn the_access_line_names_every_upstream_tried() {
    let down = support::closed_port_url().await;
    let up = Upstream::echo("up").start().await;
    // The refusing upstream first in the rotation: the first request tries
    // it, then goes on to the one that answers.
    let yaml = format!("routes:\n  all:\n    upstreams: [{down}, {}]\n", up.url());
    let binary = SwitchyardProcess::start_with_defaults(&yaml, &["--log-format", "json"]).await;
    let response = get(binary.proxy_url("/"), "tried-1").await;
    assert_eq!(response.status(), 200);
    let line = wait_json(&binary, |v| {
        v["target"] == "switchyard::access" && v["request_id"] == "tried-1"
    })
    .await;
    assert_eq!(line["upstream"], format!("{down}/,{}/", up.url()));
    assert_eq!(line["status"], 200);
}

#[tokio::test]
async fn the_log_filter_turns_access_lines_off_and_keeps_the_rest() {
    let yaml = "routes:\n  hello:\n    prefix: /hello\n    respond: { status: 201 }\n";
    let env = [("SWITCHYARD_LOG", "info,switchyard::access=off")];
    let mut binary = SwitchyardProcess::run_with_yaml_and_env(yaml, &[], &env).await;
    for id in ["quiet-1", "quiet-2"] {
        assert_eq!(get(binary.proxy_url("/hello"), id).await.status(), 201);
    }
    binary.signal("TERM").await;
    assert!(binary.exit_status().await.success());
    // Logged after both requests ended, so flushed with or after their lines.
    wait_json(&binary, |v| v["message"] == "stopped").await;
    let access: Vec<String> = binary
        .logs()
        .into_iter()
        .filter(|line| line.contains("switchyard::access") || line.contains("quiet-"))
        .collect();
    assert!(access.is_empty(), "access lines written: {access:?}");
}
