//! Upstream failures (SPEC 4.10) through the wire: retries to the next
//! upstream, passive ejection, active checks, smooth weights, and health
//! state across reloads, with real upstream servers on 127.0.0.1.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::get;
use reqwest::StatusCode;
use serde_json::Value;
use support::{
    closed_port_url, eventually, json_of, read_request_head, Echoed, TestRouter, Upstream,
};

/// Long enough for an ejection (5 s) to end and a trial to go through.
const EJECTION_DEADLINE: Duration = Duration::from_secs(15);
const STATE_DEADLINE: Duration = Duration::from_secs(5);

fn route_to(upstreams: &[String]) -> String {
    let list: Vec<String> = upstreams.iter().map(|u| format!("      - {u}\n")).collect();
    format!("routes:\n  all:\n    upstreams:\n{}", list.concat())
}

/// The `/upstreams` entry of `url` on route `all`.
async fn upstream_view(router: &TestRouter, url: &str) -> Option<Value> {
    let (status, body) = router.admin_json("/upstreams").await;
    assert_eq!(status, StatusCode::OK);
    let routes = body["routes"].as_array().expect("routes").clone();
    let all = routes.into_iter().find(|r| r["route"] == "all")?;
    all["upstreams"]
        .as_array()
        .expect("upstreams")
        .iter()
        .find(|u| u["url"].as_str().map(|s| s.trim_end_matches('/')) == Some(url))
        .cloned()
}

async fn state_of(router: &TestRouter, url: &str) -> String {
    let view = upstream_view(router, url)
        .await
        .expect("the upstream is listed");
    view["state"].as_str().expect("a state").to_owned()
}

/// `host:port` of an `http://` URL, the metrics label.
fn label(url: &str) -> &str {
    url.trim_start_matches("http://")
}

#[tokio::test]
async fn one_refusing_upstream_fails_no_request() {
    let up = Upstream::echo("up").start().await;
    let down = closed_port_url().await;
    let router = TestRouter::with_yaml(route_to(&[up.url(), down.clone()]))
        .start()
        .await;

    let client = reqwest::Client::new();
    let mut failed = 0;
    for i in 0..1_000 {
        let response = client
            .get(router.proxy_url(&format!("/get/{i}")))
            .send()
            .await
            .expect("the router answers");
        failed += usize::from(response.status() != StatusCode::OK);
    }
    for i in 0..200 {
        let body = format!("post body {i} ").repeat(100);
        let response = client
            .post(router.proxy_url("/post"))
            .body(body.clone())
            .send()
            .await
            .expect("the router answers");
        if response.status() != StatusCode::OK {
            failed += 1;
            continue;
        }
        let echoed = Echoed::from_response(response).await;
        assert_eq!(echoed.body, body, "the body arrives whole on the retry");
    }
    assert_eq!(failed, 0, "failed requests out of 1,200");
    assert_eq!(state_of(&router, &down).await, "ejected");

    let metrics = router.metrics().await;
    let ejections = metrics.value(&format!(
        "switchyard_upstream_ejections_total{{route=\"all\",upstream=\"{}\"}}",
        label(&down)
    ));
    assert!(ejections >= 1.0, "ejections: {ejections}");
    let retries =
        metrics.value("switchyard_upstream_retries_total{route=\"all\",reason=\"connect\"}");
    assert!(retries >= 3.0, "retries: {retries}");
    assert_eq!(
        metrics.value(&format!(
            "switchyard_upstream_healthy{{route=\"all\",upstream=\"{}\"}}",
            label(&down)
        )),
        0.0
    );
    assert_eq!(
        metrics.value(&format!(
            "switchyard_upstream_healthy{{route=\"all\",upstream=\"{}\"}}",
            label(&up.url())
        )),
        1.0
    );
}

#[tokio::test]
async fn every_upstream_down_gives_502_after_at_most_three_tries() {
    let mut down = Vec::new();
    for _ in 0..4 {
        down.push(closed_port_url().await);
    }
    let router = TestRouter::with_yaml(route_to(&down)).start().await;

    for _ in 0..10 {
        let response = router.get("/").send().await.expect("the router answers");
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        let body = json_of(response).await;
        assert_eq!(body["error"], "upstream_unavailable");
    }
    let (_, body) = router.admin_json("/upstreams").await;
    let tries: u64 = body["routes"][0]["upstreams"]
        .as_array()
        .expect("upstreams")
        .iter()
        .map(|u| u["requests"].as_u64().expect("a count"))
        .sum();
    assert_eq!(tries, 30, "three connect attempts per request, no more");
    let metrics = router.metrics().await;
    assert_eq!(
        metrics.value("switchyard_upstream_retries_total{route=\"all\",reason=\"connect\"}"),
        20.0
    );
}

#[tokio::test]
async fn weights_nine_to_one_interleave() {
    let heavy = Upstream::echo("heavy").start().await;
    let light = Upstream::echo("light").start().await;
    let yaml = format!(
        "routes:
  all:
    upstreams:
      - {{ url: {}, weight: 9 }}
      - {}
",
        heavy.url(),
        light.url()
    );
    let router = TestRouter::with_yaml(yaml).start().await;

    let (mut to_heavy, mut run, mut longest_run) = (0, 0, 0);
    for _ in 0..1_000 {
        let response = router.get("/").send().await.expect("the router answers");
        assert_eq!(response.status(), StatusCode::OK);
        let name = response.headers()["x-upstream"]
            .to_str()
            .expect("ASCII")
            .to_owned();
        if name == "heavy" {
            to_heavy += 1;
            run += 1;
            longest_run = longest_run.max(run);
        } else {
            run = 0;
        }
    }
    assert!(
        (870..=930).contains(&to_heavy),
        "heavy got {to_heavy} of 1,000"
    );
    assert!(longest_run <= 9, "{longest_run} in a row to the heavy one");
}

#[tokio::test]
async fn a_post_whose_body_reached_an_upstream_is_never_sent_again() {
    // Reads each request head and resets the connection: the body was on
    // its way, so the request must not go to the other upstream.
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let resetting = {
        let seen = Arc::clone(&seen);
        Upstream::tcp(move |mut stream| {
            let seen = Arc::clone(&seen);
            async move {
                if let Some(head) = read_request_head(&mut stream).await {
                    let head = String::from_utf8_lossy(&head).to_lowercase();
                    let id = head
                        .lines()
                        .find_map(|l| l.strip_prefix("x-post-id: "))
                        .unwrap_or("?")
                        .trim()
                        .to_owned();
                    seen.lock().expect("not poisoned").push(id);
                }
                // Dropped with unread body bytes: the kernel sends a reset.
            }
        })
        .start()
        .await
    };
    let echo = Upstream::echo("echo").start().await;
    let router = TestRouter::with_yaml(route_to(&[resetting.url(), echo.url()]))
        .start()
        .await;

    let mut failed_ids = Vec::new();
    let mut answered = 0;
    for i in 0..20 {
        let id = i.to_string();
        let response = router
            .request(reqwest::Method::POST, "/upload")
            .header("x-post-id", &id)
            .body("x".repeat(256 * 1024))
            .send()
            .await;
        match response {
            Ok(response) if response.status() == StatusCode::OK => answered += 1,
            Ok(response) => {
                assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
                failed_ids.push(id);
            }
            Err(error) => panic!("the router must answer: {error}"),
        }
    }
    let mut seen = seen.lock().expect("not poisoned").clone();
    seen.sort();
    failed_ids.sort();
    assert!(
        !failed_ids.is_empty(),
        "the resetting upstream got some POSTs"
    );
    assert_eq!(
        seen, failed_ids,
        "each failed POST reached one upstream, once"
    );
    assert_eq!(
        echo.requests(),
        answered,
        "no failed POST was replayed to the echo"
    );
}

#[tokio::test]
async fn an_idempotent_get_moves_on_when_the_upstream_closes_without_answering() {
    let closing = Upstream::tcp(|mut stream| async move {
        let _ = read_request_head(&mut stream).await;
    })
    .start()
    .await;
    let echo = Upstream::echo("echo").start().await;
    let router = TestRouter::with_yaml(route_to(&[closing.url(), echo.url()]))
        .start()
        .await;

    for _ in 0..20 {
        let response = router.get("/").send().await.expect("the router answers");
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert!(closing.connections() > 0, "the closing upstream was tried");
    // Not a connect failure: it answered the connect, so it stays in.
    assert_eq!(state_of(&router, &closing.url()).await, "healthy");
}

/// Load from `workers` tasks until `stop`, each counting failures.
fn spawn_load(
    router: &TestRouter,
    workers: usize,
    stop: &Arc<AtomicBool>,
    failed: &Arc<AtomicUsize>,
    sent: &Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..workers)
        .map(|_| {
            let url = router.proxy_url("/load");
            let (stop, failed, sent) = (Arc::clone(stop), Arc::clone(failed), Arc::clone(sent));
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                // Bounded by count as well as by the flag.
                for _ in 0..20_000 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let ok = matches!(client.get(&url).send().await, Ok(r) if r.status() == StatusCode::OK);
                    failed.fetch_add(usize::from(!ok), Ordering::SeqCst);
                    sent.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect()
}

#[tokio::test]
async fn an_upstream_killed_under_load_costs_at_most_its_in_flight_requests() {
    const WORKERS: usize = 4;
    let steady = Upstream::echo("steady").start().await;
    let doomed = Upstream::echo("doomed").start().await;
    let doomed_addr = doomed.addr();
    let doomed_url = doomed.url();
    let router = TestRouter::with_yaml(route_to(&[steady.url(), doomed_url.clone()]))
        .start()
        .await;

    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let load = spawn_load(&router, WORKERS, &stop, &failed, &sent);
    eventually(STATE_DEADLINE, || async { doomed.requests() > 50 }).await;
    drop(doomed);
    let at_kill = sent.load(Ordering::SeqCst);
    eventually(STATE_DEADLINE, || async {
        sent.load(Ordering::SeqCst) > at_kill + 500
    })
    .await;
    let failed_around_kill = failed.load(Ordering::SeqCst);
    assert!(
        failed_around_kill <= WORKERS,
        "{failed_around_kill} failed; at most the {WORKERS} in flight may"
    );
    assert_eq!(state_of(&router, &doomed_url).await, "ejected");

    // Back where it was: once its ejection ends, a trial finds it.
    let back = Upstream::echo("back").start_on(doomed_addr).await;
    eventually(EJECTION_DEADLINE, || async { back.requests() > 10 }).await;
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.expect("a load task");
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        failed_around_kill,
        "no failures after the kill settled"
    );
    assert_eq!(state_of(&router, &doomed_url).await, "healthy");
}

/// An upstream for active checks: `/healthz` answers 503 while `sick` is
/// set and 200 otherwise, counting the checks in `checks`; every other path
/// answers with its name (in `x-upstream` too).
struct CheckedUpstream {
    upstream: Upstream,
    sick: Arc<AtomicBool>,
    checks: Arc<AtomicUsize>,
}

impl CheckedUpstream {
    async fn start(name: &'static str) -> CheckedUpstream {
        let sick = Arc::new(AtomicBool::new(false));
        let checks = Arc::new(AtomicUsize::new(0));
        let healthz = {
            let (sick, checks) = (Arc::clone(&sick), Arc::clone(&checks));
            move || {
                checks.fetch_add(1, Ordering::SeqCst);
                let status = if sick.load(Ordering::SeqCst) {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                };
                async move { status }
            }
        };
        let upstream = Upstream::handler(
            axum::Router::new()
                .route("/healthz", get(healthz))
                .fallback(move || async move { ([("x-upstream", name)], name) }),
        )
        .start()
        .await;
        CheckedUpstream {
            upstream,
            sick,
            checks,
        }
    }
}

#[tokio::test]
async fn active_checks_take_an_upstream_out_and_bring_it_back() {
    let CheckedUpstream {
        upstream: flapping,
        sick,
        ..
    } = CheckedUpstream::start("flapping").await;
    let steady = Upstream::echo("steady").start().await;
    let yaml = format!(
        "routes:
  all:
    upstreams: [{}, {}]
    health: {{ path: /healthz, interval: 50ms, timeout: 1s, healthy: 2, unhealthy: 2 }}
",
        flapping.url(),
        steady.url()
    );
    let router = TestRouter::with_yaml(yaml).start().await;
    let url = flapping.url();

    // Before its first check an upstream is passively healthy too, so the
    // wait is for a healthy verdict that a check has given.
    eventually(STATE_DEADLINE, || async {
        let view = upstream_view(&router, &url).await.expect("listed");
        view["state"] == "healthy" && view["last_check"].is_string()
    })
    .await;

    sick.store(true, Ordering::SeqCst);
    eventually(STATE_DEADLINE, || async {
        state_of(&router, &url).await == "unhealthy"
    })
    .await;
    for _ in 0..20 {
        let response = router.get("/").send().await.expect("the router answers");
        assert_eq!(response.headers()["x-upstream"], "steady");
    }
    let (_, explained) = router.admin_json("/routes/match?path=/").await;
    let eligible: Vec<bool> = explained["upstreams"]
        .as_array()
        .expect("upstreams")
        .iter()
        .map(|u| u["eligible"].as_bool().expect("a flag"))
        .collect();
    assert_eq!(eligible, [false, true]);
    let metrics = router.metrics().await;
    assert_eq!(
        metrics.value(&format!(
            "switchyard_upstream_healthy{{route=\"all\",upstream=\"{}\"}}",
            label(&url)
        )),
        0.0
    );

    sick.store(false, Ordering::SeqCst);
    eventually(STATE_DEADLINE, || async {
        state_of(&router, &url).await == "healthy"
    })
    .await;
    let mut names = HashSet::new();
    for _ in 0..10 {
        let response = router.get("/").send().await.expect("the router answers");
        names.insert(
            response.headers()["x-upstream"]
                .to_str()
                .expect("ASCII")
                .to_owned(),
        );
    }
    assert!(
        names.contains("flapping"),
        "back in the rotation: {names:?}"
    );
}

#[tokio::test]
async fn a_reload_starts_and_stops_active_checks() {
    let failing = CheckedUpstream::start("failing").await;
    failing.sick.store(true, Ordering::SeqCst);
    let url = failing.upstream.url();
    let steady = Upstream::echo("steady").start().await;
    let unchecked = route_to(&[url.clone(), steady.url()]);
    let router = TestRouter::with_yaml(unchecked.clone()).start().await;
    assert_eq!(state_of(&router, &url).await, "healthy");

    // The checks follow the table a reload swaps in, with no request and
    // no timer of the router's own to prompt them.
    router.write_config(&format!(
        "{unchecked}    health: {{ path: /healthz, interval: 50ms, timeout: 1s, healthy: 1, unhealthy: 1 }}\n"
    ));
    assert_eq!(router.reload().await.0, StatusCode::OK);
    eventually(STATE_DEADLINE, || async {
        state_of(&router, &url).await == "unhealthy"
    })
    .await;
    assert!(failing.checks.load(Ordering::SeqCst) > 0);

    // Unchecked again: the verdict no longer counts.
    router.write_config(&unchecked);
    assert_eq!(router.reload().await.0, StatusCode::OK);
    eventually(STATE_DEADLINE, || async {
        state_of(&router, &url).await == "healthy"
    })
    .await;
}

#[tokio::test]
async fn a_reload_keeps_health_for_upstreams_that_stay_and_drops_the_rest() {
    let up = Upstream::echo("up").start().await;
    let down = closed_port_url().await;
    let router = TestRouter::with_yaml(route_to(&[up.url(), down.clone()]))
        .start()
        .await;
    for _ in 0..10 {
        router.get("/").send().await.expect("the router answers");
    }
    assert_eq!(state_of(&router, &down).await, "ejected");

    // Same upstreams, another timeout: a new table, the same health.
    let kept = format!("{}    timeout: 10s\n", route_to(&[up.url(), down.clone()]));
    router.write_config(&kept);
    assert_eq!(router.reload().await.0, StatusCode::OK);
    assert_eq!(
        state_of(&router, &down).await,
        "ejected",
        "still out after the reload"
    );

    router.write_config(&route_to(&[up.url()]));
    assert_eq!(router.reload().await.0, StatusCode::OK);
    assert!(upstream_view(&router, &down).await.is_none());
    let metrics = router.metrics().await;
    assert!(
        !metrics.0.contains(label(&down)),
        "no series left for the removed upstream:\n{}",
        metrics.0
    );

    // Added back: a fresh start, not the old ejection.
    router.write_config(&route_to(&[up.url(), down.clone()]));
    assert_eq!(router.reload().await.0, StatusCode::OK);
    let view = upstream_view(&router, &down).await.expect("listed again");
    assert_eq!(view["state"], "healthy");
    assert_eq!(view["consecutive_failures"], 0);
}
