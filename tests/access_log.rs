//! The real binary's logs: one access-log event per request with the fields
//! operators search by, in JSON with `--log-format json` and as readable
//! lines by default; start-up and reloads are logged the same way.

mod observe_support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use observe_support::{client, Upstream, EVENTUALLY_DEADLINE};
use serde_json::Value;

/// The binary, its log lines as they arrive, and where it listens.
struct Binary {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    config: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Binary {
    fn start(yaml: &str, args: &[&str]) -> Binary {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = dir.path().join("routes.yaml");
        std::fs::write(&config, yaml).expect("writable");
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("--config")
            .arg(&config)
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(args)
            .env_remove("SWITCHYARD_LOG")
            .env_remove("SWITCHYARD_LOG_FORMAT")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Binary {
            child,
            lines,
            seen: Vec::new(),
            config,
            _dir: dir,
        }
    }

    /// Waits for a log line that satisfies `pick`, failing with `what`.
    fn wait_line<T>(&mut self, what: &str, pick: impl Fn(&str) -> Option<T>) -> T {
        if let Some(found) = self.seen.iter().find_map(|l| pick(l)) {
            return found;
        }
        let deadline = Instant::now() + EVENTUALLY_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = pick(&line);
                    self.seen.push(line);
                    if let Some(found) = found {
                        return found;
                    }
                }
                Err(_) => panic!("no log line for: {what}; got:\n{}", self.seen.join("\n")),
            }
        }
    }

    fn wait_json(&mut self, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
        self.wait_line(what, |line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
            pick(&value).then_some(value)
        })
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let upstream = Upstream::start().await;
    let yaml = format!(
        "routes:\n  hello:\n    prefix: /hello\n    respond: {{ body: \"hello\\n\" }}\n  echo:\n    prefix: /echo\n    upstream: {}\n",
        upstream.url()
    );
    let mut binary = Binary::start(&yaml, &["--log-format", "json"]);
    let started = binary.wait_json("start-up", |v| v["message"] == "switchyard listening");
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
    let line = binary.wait_json("the /hello access line", by_id("access-1"));
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

    let line = binary.wait_json("the /echo access line", by_id("access-2"));
    assert_eq!(line["route"], "echo");
    assert_eq!(line["path"], "/echo/a", "the query is left out of the log");
    assert_eq!(line["upstream"], format!("{}/", upstream.url()));
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes"], echo_body.len());

    let line = binary.wait_json("the unrouted access line", by_id("access-3"));
    assert_eq!(line["route"], "_none");
    assert_eq!(line["status"], 404);
    assert_eq!(line["error"], "no_route");

    // Reloads, rejected and accepted, are logged as JSON events too.
    std::fs::write(&binary.config, "routes:\n  hello:\n    prefx: /hello\n").expect("writable");
    let reload = client()
        .post(format!("http://{admin}/reload"))
        .send()
        .await
        .expect("the admin API answers");
    assert_eq!(reload.status(), 422);
    let rejected = binary.wait_json("the rejected reload", |v| v["level"] == "ERROR");
    assert!(
        rejected["error"]
            .as_str()
            .is_some_and(|e| e.contains("prefx") && e.contains("line 3")),
        "{rejected}"
    );
    std::fs::write(
        &binary.config,
        format!("{yaml}  more:\n    prefix: /more\n    respond: {{}}\n"),
    )
    .expect("writable");
    let reload = client()
        .post(format!("http://{admin}/reload"))
        .send()
        .await
        .expect("the admin API answers");
    assert_eq!(reload.status(), 200);
    let reloaded = binary.wait_json("the accepted reload", |v| {
        v["message"] == "route table reloaded"
    });
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
    let mut binary = Binary::start(yaml, &[]);
    let proxy = binary.wait_line("start-up", |line| {
        let (_, rest) = line.split_once("proxy=")?;
        Some(rest.split_whitespace().next()?.to_owned())
    });
    let response = get(format!("http://{proxy}/hello"), "pretty-1").await;
    assert_eq!(response.status(), 201);
    let line = binary.wait_line("the access line", |line| {
        line.contains("pretty-1").then(|| line.to_owned())
    });
    for part in [
        "INFO",
        "switchyard::access",
        "GET",
        "/hello",
        "hello",
        "status=201",
    ] {
        assert!(line.contains(part), "{part} missing from {line:?}");
    }
}
