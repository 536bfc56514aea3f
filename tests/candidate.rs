//! Proving a route change before it serves (SPEC 10), through a real router
//! and real upstreams on loopback: shadow tables that count moved requests,
//! canaries promoted or rolled back on their figures, `POST /reload?now=true`,
//! and `check --replay` over an access log the binary itself wrote.

mod support;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use axum::routing::any;
use http::StatusCode;
use serde_json::Value;
use support::{
    eventually, switchyard_command, RouteFile, SwitchyardProcess, TestRouter, Upstream,
    UPSTREAM_HEADER,
};

/// How long a canary test may run before it fails: far above the rollouts'
/// `for`, still short for a real failure.
const CANARY_DEADLINE: Duration = Duration::from_secs(20);

/// Clients of the canary tests: 127.0.0.1 to 127.0.0.20.
const CLIENTS: u8 = 20;

fn client_from(ip: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(IpAddr::V4(ip))
        .build()
        .expect("a client")
}

fn clients() -> Vec<(Ipv4Addr, reqwest::Client)> {
    (1..=CLIENTS)
        .map(|n| {
            let ip = Ipv4Addr::new(127, 0, 0, n);
            (ip, client_from(ip))
        })
        .collect()
}

/// Which upstream answered, by its `x-upstream` header.
async fn upstream_of(client: &reqwest::Client, url: &str) -> (StatusCode, String) {
    let answer = client.get(url).send().await.expect("an answer");
    let upstream = answer
        .headers()
        .get(UPSTREAM_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    (answer.status(), upstream)
}

async fn candidate(router: &TestRouter) -> (StatusCode, Value) {
    router.admin_json("/candidate").await
}

async fn post_candidate(router: &TestRouter, mode: &str, yaml: &str) -> (StatusCode, Value) {
    let answer = reqwest::Client::new()
        .post(router.admin_url(&format!("/candidate?mode={mode}")))
        .body(yaml.to_owned())
        .send()
        .await
        .expect("the admin listener answers");
    (answer.status(), support::json_of(answer).await)
}

/// Waits until the file's edit runs as a canary.
async fn canary_running(router: &TestRouter) -> Value {
    eventually(Duration::from_secs(10), || async {
        let (status, body) = candidate(router).await;
        (status == StatusCode::OK && body["mode"] == "canary").then_some(body)
    })
    .await
}

/// Sends one request from each client, again and again, until `done`
/// holds (checked between rounds) or the deadline; returns the upstreams
/// each client reached.
async fn traffic_until<F, Fut>(
    router: &TestRouter,
    clients: &[(Ipv4Addr, reqwest::Client)],
    mut done: F,
) -> HashMap<Ipv4Addr, Vec<(StatusCode, String)>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let url = router.proxy_url("/api/x");
    let started = Instant::now();
    let mut seen: HashMap<Ipv4Addr, Vec<(StatusCode, String)>> = HashMap::new();
    while !done().await {
        assert!(
            started.elapsed() < CANARY_DEADLINE,
            "no verdict after {CANARY_DEADLINE:?}"
        );
        let round = clients.iter().map(|(ip, client)| {
            let url = url.clone();
            async move { (*ip, upstream_of(client, &url).await) }
        });
        for (ip, answer) in futures_util::future::join_all(round).await {
            seen.entry(ip).or_default().push(answer);
        }
    }
    seen
}

async fn newest_reload(router: &TestRouter) -> Value {
    let (_, reloads) = router.admin_json("/reloads").await;
    reloads["reloads"][0].clone()
}

fn api_route(upstream: &str) -> String {
    format!("  api:\n    prefix: /api\n    upstream: {upstream}\n")
}

#[tokio::test]
async fn a_shadow_table_counts_exactly_the_requests_it_would_move() {
    let (a, b) = (
        Upstream::echo("a").start().await,
        Upstream::echo("b").start().await,
    );
    let live = format!("routes:\n{}", api_route(&a.url()));
    let router = TestRouter::with_yaml(live.clone()).start().await;
    assert_eq!(
        candidate(&router).await,
        (
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": "no_candidate" })
        )
    );
    let shadow = format!(
        "routes:\n{}  users:\n    prefix: /api/users\n    upstream: {}\n",
        api_route(&a.url()),
        b.url()
    );
    let (status, body) = post_candidate(&router, "shadow", &shadow).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["mode"], "shadow");
    assert_eq!(body["version"], 2);
    let (status, body) = post_candidate(&router, "shadow", &shadow).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "one candidate at a time: {body}"
    );

    let client = reqwest::Client::new();
    for i in 0..200 {
        let path = if i % 5 < 2 {
            format!("/api/users/{i}")
        } else {
            format!("/api/orders/{i}")
        };
        let (status, upstream) = upstream_of(&client, &router.proxy_url(&path)).await;
        assert_eq!(
            (status, upstream.as_str()),
            (StatusCode::OK, "a"),
            "the live table serves"
        );
    }
    let (status, body) = candidate(&router).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["compared"], 200);
    assert_eq!(body["moved"], 80);
    let moves = body["moves"].as_array().expect("a list of moves");
    assert_eq!(moves.len(), 1, "{body}");
    assert_eq!(moves[0]["from"], "api");
    assert_eq!(moves[0]["to"], "users");
    assert_eq!(moves[0]["count"], 80);
    let examples = moves[0]["examples"].as_array().expect("examples");
    assert_eq!(examples.len(), 5);
    assert_eq!(examples[0]["method"], "GET");
    assert_eq!(examples[0]["path"], "/api/users/0");
    assert!(router.healthz().await["candidate"]["moved"] == 80);
    let metrics = router.metrics().await;
    assert_eq!(metrics.value("switchyard_candidate_moves_total"), 80.0);
    assert_eq!(a.requests(), 200);
    assert_eq!(b.requests(), 0, "a shadow table sends nothing anywhere");

    let discarded = reqwest::Client::new()
        .delete(router.admin_url("/candidate"))
        .send()
        .await
        .expect("answers");
    assert_eq!(discarded.status(), StatusCode::OK);
    assert_eq!(candidate(&router).await.0, StatusCode::NOT_FOUND);
    assert_eq!(router.version().await, 1, "the live table never changed");
}

#[tokio::test]
async fn a_candidate_with_errors_is_refused_with_line_and_column() {
    let a = Upstream::echo("a").start().await;
    let router = TestRouter::with_yaml(format!("routes:\n{}", api_route(&a.url())))
        .start()
        .await;
    let (status, body) =
        post_candidate(&router, "shadow", "routes:\n  api:\n    prefx: /api\n").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let message = body["message"].as_str().expect("a message");
    assert!(
        message.contains("prefx") && message.contains("line 3"),
        "{message}"
    );
    let (status, _) = post_candidate(&router, "sideways", "routes: {}\n").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(candidate(&router).await.0, StatusCode::NOT_FOUND);
}

fn rollout_file(rollout: &str, upstream: &str) -> String {
    format!("rollout: {rollout}\nroutes:\n{}", api_route(upstream))
}

#[tokio::test]
async fn a_good_canary_splits_clients_by_key_then_goes_live() {
    let (a, b) = (
        Upstream::echo("a").start().await,
        Upstream::echo("b").start().await,
    );
    let rollout = "{ percent: 50, for: 2s, min_requests: 50 }";
    let router = TestRouter::with_yaml(rollout_file(rollout, &a.url()))
        .start()
        .await;
    router.write_config(&rollout_file(rollout, &b.url()));
    let running = canary_running(&router).await;
    assert_eq!(running["version"], 2);
    assert_eq!(running["canary"]["state"], "running");
    let started = newest_reload(&router).await;
    assert_eq!(started["result"], "canary", "{started}");
    assert_eq!(router.version().await, 1, "the edit is not live yet");

    let clients = clients();
    // While the canary runs: each client stays on one table.
    let during = traffic_until(&router, &clients, {
        let mut rounds = 0;
        move || {
            rounds += 1;
            std::future::ready(rounds > 5)
        }
    })
    .await;
    let mut sides = HashMap::new();
    for (ip, answers) in &during {
        let first = &answers[0].1;
        assert!(
            answers
                .iter()
                .all(|(s, u)| *s == StatusCode::OK && u == first),
            "{ip} moved between tables: {answers:?}"
        );
        *sides.entry(first.clone()).or_insert(0) += 1;
    }
    assert!(
        sides.contains_key("a") && sides.contains_key("b"),
        "both tables serve a slice: {sides:?}"
    );

    traffic_until(&router, &clients, || async {
        candidate(&router).await.0 == StatusCode::NOT_FOUND
    })
    .await;
    let promoted = newest_reload(&router).await;
    assert_eq!(promoted["trigger"], "canary", "{promoted}");
    assert_eq!(promoted["result"], "ok");
    assert_eq!(promoted["version"], 2);
    assert!(promoted["canary"]["candidate"]["requests"].as_u64() >= Some(50));
    assert_eq!(router.version().await, 2);
    for (_, client) in &clients {
        let (_, upstream) = upstream_of(client, &router.proxy_url("/api/x")).await;
        assert_eq!(upstream, "b", "the candidate is the live table");
    }
}

#[tokio::test]
async fn a_canary_that_fails_is_rolled_back_and_not_tried_again() {
    let a = Upstream::echo("a").start().await;
    let failing = Upstream::status(500).start().await;
    let fixed = Upstream::echo("fixed").start().await;
    let rollout = "{ percent: 50, for: 30s, min_requests: 50 }";
    let router = TestRouter::with_yaml(rollout_file(rollout, &a.url()))
        .start()
        .await;
    let bad = rollout_file(rollout, &failing.url());
    router.write_config(&bad);
    canary_running(&router).await;
    // When the candidate was first seen with `min_requests` answers.
    let judged_from = std::sync::Mutex::new(None);
    traffic_until(&router, &clients(), || async {
        let (status, body) = candidate(&router).await;
        let served = body["canary"]["candidate"]["requests"].as_u64();
        if served >= Some(50) {
            judged_from.lock().unwrap().get_or_insert_with(Instant::now);
        }
        status == StatusCode::NOT_FOUND
    })
    .await;
    let judged_from = judged_from.lock().unwrap().unwrap_or_else(Instant::now);
    assert!(
        judged_from.elapsed() < Duration::from_secs(1),
        "rolled back {:?} after reaching min_requests, not within a second",
        judged_from.elapsed()
    );
    let rolled_back = newest_reload(&router).await;
    assert_eq!(rolled_back["result"], "rolled_back", "{rolled_back}");
    assert_eq!(rolled_back["trigger"], "canary");
    assert_eq!(rolled_back["version"], 1, "the live table never changed");
    let figures = &rolled_back["canary"];
    assert_eq!(figures["live"]["errors_5xx"], 0, "{figures}");
    let candidate_errors = figures["candidate"]["errors_5xx"]
        .as_u64()
        .expect("a count");
    assert!(candidate_errors >= 50, "{figures}");
    assert!(rolled_back["error"]
        .as_str()
        .is_some_and(|e| e.contains("5xx share 100.00%")));
    let metrics = router.metrics().await;
    assert!(
        metrics.value("switchyard_candidate_requests_total{table=\"candidate\",class=\"5xx\"}")
            >= 50.0
    );
    assert_eq!(router.version().await, 1);

    // The same bytes again are not tried again...
    router.write_config(&bad);
    let (status, body) = router.reload().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["reload"]["result"], "unchanged", "{body}");
    assert!(body["reload"]["note"]
        .as_str()
        .is_some_and(|n| n.contains("rolled back")));
    assert_eq!(candidate(&router).await.0, StatusCode::NOT_FOUND);
    // ...and a fixed file is.
    router.write_config(&rollout_file(rollout, &fixed.url()));
    canary_running(&router).await;
}

#[tokio::test]
async fn a_slower_canary_is_rolled_back_on_its_p99() {
    let a = Upstream::echo("a").start().await;
    let slow = Upstream::handler(axum::Router::new().fallback(any(|| async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        ([(UPSTREAM_HEADER, "slow")], "slow")
    })))
    .start()
    .await;
    let rollout = "{ percent: 50, for: 30s, min_requests: 20, max_latency_increase: 50% }";
    let router = TestRouter::with_yaml(rollout_file(rollout, &a.url()))
        .start()
        .await;
    router.write_config(&rollout_file(rollout, &slow.url()));
    canary_running(&router).await;
    traffic_until(&router, &clients(), || async {
        candidate(&router).await.0 == StatusCode::NOT_FOUND
    })
    .await;
    let rolled_back = newest_reload(&router).await;
    assert_eq!(rolled_back["result"], "rolled_back", "{rolled_back}");
    let reason = rolled_back["error"].as_str().expect("a reason");
    assert!(reason.contains("p99"), "{reason}");
    let p99 = rolled_back["canary"]["candidate"]["p99_ms"]
        .as_f64()
        .expect("a p99");
    assert!(p99 >= 200.0, "{rolled_back}");
    assert_eq!(router.version().await, 1);
}

#[tokio::test]
async fn reload_now_puts_a_file_live_past_its_rollout() {
    let (a, b) = (
        Upstream::echo("a").start().await,
        Upstream::echo("b").start().await,
    );
    let rollout = "{ percent: 10, for: 1h }";
    let router = TestRouter::with_yaml(rollout_file(rollout, &a.url()))
        .start()
        .await;
    router.write_config(&rollout_file(rollout, &b.url()));
    let answer = reqwest::Client::new()
        .post(router.admin_url("/reload?now=true"))
        .send()
        .await
        .expect("answers");
    assert_eq!(answer.status(), StatusCode::OK);
    let body = support::json_of(answer).await;
    assert_eq!(body["reload"]["result"], "ok", "{body}");
    assert_eq!(router.version().await, 2);
    assert_eq!(candidate(&router).await.0, StatusCode::NOT_FOUND);
    let (_, upstream) = upstream_of(&reqwest::Client::new(), &router.proxy_url("/api/x")).await;
    assert_eq!(upstream, "b");
}

#[tokio::test]
async fn replay_reports_the_moves_of_a_logged_day() {
    let (a, b) = (
        Upstream::echo("a").start().await,
        Upstream::echo("b").start().await,
    );
    let live = format!(
        "routes:\n{}  beta:\n    prefix: /beta\n    headers: {{ x-beta: \"on\" }}\n    upstream: {}\n  \
         rest:\n    prefix: /\n    upstream: {}\n",
        api_route(&a.url()),
        b.url(),
        b.url()
    );
    let binary = SwitchyardProcess::run_with_yaml(&live, &[]).await;
    let client = reqwest::Client::new();
    let mut sent = 0;
    for path in [
        "/api/users/1",
        "/api/users/2?expand=true",
        "/api/orders/1",
        "/beta/x",
        "/home",
        "/home?q=1",
    ] {
        let answer = client
            .get(binary.proxy_url(path))
            .header("x-beta", "on")
            .send()
            .await
            .expect("answers");
        assert_eq!(answer.status(), StatusCode::OK);
        sent += 1;
    }
    let logged = eventually(Duration::from_secs(10), || async {
        let lines: Vec<String> = binary
            .logs()
            .into_iter()
            .filter(|line| line.contains("\"message\":\"request\""))
            .collect();
        (lines.len() == sent).then_some(lines)
    })
    .await;
    assert!(
        logged[1].contains("\"query\":\"expand=true\""),
        "{}",
        logged[1]
    );
    let log = RouteFile::with_yaml(&binary.logs().join("\n"));

    // The new file sends /api/users to a route of its own.
    let moved = RouteFile::with_yaml(&format!(
        "{live}  users:\n    prefix: /api/users\n    upstream: {}\n  unused:\n    prefix: /never\n    upstream: {}\n",
        a.url(),
        a.url()
    ));
    let output = switchyard_command()
        .args([
            "check",
            "--config",
            moved.path_str(),
            "--replay",
            log.path_str(),
        ])
        .output()
        .await
        .expect("check runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("replayed 6 requests") && text.contains("3 stay, 2 move, 1 undecidable"),
        "{text}"
    );
    assert!(
        text.contains("api -> users: 2 (e.g. GET /api/users/1, GET /api/users/2?expand=true)"),
        "{text}"
    );
    assert!(text.contains("  beta: 1"), "{text}");
    assert!(
        text.contains("routes no logged request reaches: unused"),
        "{text}"
    );

    let failing = switchyard_command()
        .args([
            "check",
            "--config",
            moved.path_str(),
            "--replay",
            log.path_str(),
            "--fail-on-move",
        ])
        .output()
        .await
        .expect("check runs");
    assert_eq!(failing.status.code(), Some(1));
    let unchanged = RouteFile::with_yaml(&live);
    let same = switchyard_command()
        .args([
            "check",
            "--config",
            unchanged.path_str(),
            "--replay",
            log.path_str(),
            "--fail-on-move",
        ])
        .output()
        .await
        .expect("check runs");
    assert!(
        same.status.success(),
        "{}",
        String::from_utf8_lossy(&same.stdout)
    );
}

#[tokio::test]
async fn an_edit_while_a_canary_runs_replaces_it_and_a_revert_ends_it() {
    let (a, b, c) = (
        Upstream::echo("a").start().await,
        Upstream::echo("b").start().await,
        Upstream::echo("c").start().await,
    );
    let rollout = "{ percent: 50, for: 1h }";
    let live = rollout_file(rollout, &a.url());
    let router = TestRouter::with_yaml(live.clone()).start().await;
    router.write_config(&rollout_file(rollout, &b.url()));
    let first = canary_running(&router).await;
    router.write_config(&rollout_file(rollout, &c.url()));
    let second = eventually(Duration::from_secs(10), || async {
        let (_, body) = candidate(&router).await;
        (body["sha256"] != first["sha256"] && body["mode"] == "canary").then_some(body)
    })
    .await;
    assert_eq!(second["version"], 2, "still numbered after the live table");
    let replaced = newest_reload(&router).await;
    assert_eq!(replaced["result"], "canary");
    assert!(
        replaced["note"]
            .as_str()
            .is_some_and(|n| n.contains("replaces the candidate of version 2")),
        "{replaced}"
    );
    assert_eq!(
        router.admin_json("/readyz").await.0,
        StatusCode::OK,
        "a candidate never makes the router unready"
    );
    // Saving the live bytes again ends the canary.
    router.write_config(&live);
    eventually(Duration::from_secs(10), || async {
        candidate(&router).await.0 == StatusCode::NOT_FOUND
    })
    .await;
    let reverted = newest_reload(&router).await;
    assert!(
        reverted["note"]
            .as_str()
            .is_some_and(|n| n.contains("back to the live bytes")),
        "{reverted}"
    );
    assert_eq!(router.version().await, 1);
}
