//! An idle router through the real binary: with no requests, no reloads
//! and no health checks to run, none of its threads wakes (a sidecar idles
//! on every pod of a fleet), and the first request after a quiet spell is
//! served and logged as ever.

mod support;

use std::time::Duration;

use axum::routing::get;
use reqwest::StatusCode;
use support::{eventually, SwitchyardProcess, Upstream};

/// The quiet spell measured. A thread on a 200 ms timer would wake ten
/// times in it, one on the log's 50 ms interval forty.
const QUIET: Duration = Duration::from_secs(2);

/// Wake-ups allowed in the whole spell, all threads together: the log
/// writer's last look for more lines after the first request's, and room
/// for a stray one.
const ALLOWED_WAKEUPS: u64 = 5;

/// Sends a GET tagged `id` on a connection of its own, closed after the
/// answer (an idle keep-alive connection has a timer of its own), and
/// waits for its access line.
async fn request_and_its_line(router: &SwitchyardProcess, id: &str) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a test HTTP client");
    let response = client
        .get(router.proxy_url("/"))
        .header("x-request-id", id)
        .send()
        .await
        .expect("the router answers");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.expect("a whole body"), "up");
    eventually(Duration::from_secs(10), || async {
        router.logs().iter().any(|line| {
            line.contains("switchyard::access")
                && line.contains(&format!("\"request_id\":\"{id}\""))
        })
    })
    .await;
}

#[tokio::test]
async fn an_idle_router_sleeps_and_wakes_for_the_next_request() {
    let upstream = Upstream::handler(axum::Router::new().route("/", get(|| async { "up" })))
        .start()
        .await;
    let yaml = format!("routes:\n  all:\n    upstream: {}\n", upstream.url());
    let router = SwitchyardProcess::run_with_yaml(&yaml, &["--workers", "2"]).await;
    eventually(Duration::from_secs(5), || async {
        router.worker_threads() == 2
    })
    .await;
    request_and_its_line(&router, "before-the-quiet").await;

    let before = router.switches_by_thread();
    // A window measured, not a wait for something to happen.
    tokio::time::sleep(QUIET).await;
    let after = router.switches_by_thread();
    // Threads present at both ends; one that ended in between (a blocking
    // pool's thread after its keep-alive) no longer counts.
    let woke: Vec<(&str, u64)> = after
        .iter()
        .filter_map(|(tid, (name, switches))| {
            let (_, earlier) = before.get(tid)?;
            (switches > earlier).then(|| (name.as_str(), switches - earlier))
        })
        .collect();
    let total: u64 = woke.iter().map(|(_, n)| n).sum();
    assert!(
        total <= ALLOWED_WAKEUPS,
        "{total} wake-ups in {QUIET:?} of idling, by thread: {woke:?}"
    );

    request_and_its_line(&router, "after-the-quiet").await;
}
