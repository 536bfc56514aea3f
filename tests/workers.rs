//! Request workers (`--workers`) through the real binary: each worker is a
//! thread of its own, every worker serves, a reload reaches all of them,
//! and a drain waits for the requests in flight on every one.

mod support;

use std::time::Duration;

use axum::routing::get;
use reqwest::StatusCode;
use support::{client, eventually, greeting, held_upstream, SwitchyardProcess, Upstream, RELEASED};
use tokio::task::JoinSet;

/// Concurrent connections in each test: many more than workers, so the
/// accepts are spread over every worker (the kernel wakes them all for a
/// pending connection, and an idle one takes it).
const CONNECTIONS: usize = 16;

/// Sends one GET on a connection of its own (a fresh client has no pool)
/// and returns the status and body.
async fn get_on_new_connection(url: String) -> (StatusCode, String) {
    let response = client().get(url).send().await.expect("the router answers");
    let status = response.status();
    (status, response.text().await.expect("a whole body"))
}

async fn all_on_new_connections(url: &str) -> Vec<(StatusCode, String)> {
    let mut requests = JoinSet::new();
    for _ in 0..CONNECTIONS {
        requests.spawn(get_on_new_connection(url.to_owned()));
    }
    requests.join_all().await
}

#[tokio::test]
async fn one_and_two_workers_are_threads_of_their_own_and_all_serve() {
    let upstream = Upstream::handler(axum::Router::new().route("/", get(|| async { "up" })))
        .start()
        .await;
    let yaml = format!("routes:\n  all:\n    upstream: {}\n", upstream.url());
    for workers in ["1", "2"] {
        let router = SwitchyardProcess::run_with_yaml(&yaml, &["--workers", workers]).await;
        // The workers start just after the router logs its addresses.
        eventually(Duration::from_secs(5), || async {
            router.worker_threads().to_string() == workers
        })
        .await;
        for (status, body) in all_on_new_connections(&router.proxy_url("/")).await {
            assert_eq!((status, body.as_str()), (StatusCode::OK, "up"));
        }
    }
}

#[tokio::test]
async fn the_workers_count_comes_from_the_environment_too() {
    let router = SwitchyardProcess::run_with_yaml_and_env(
        &greeting("hello"),
        &[],
        &[("SWITCHYARD_WORKERS", "3")],
    )
    .await;
    eventually(Duration::from_secs(5), || async {
        router.worker_threads() == 3
    })
    .await;
}

#[tokio::test]
async fn zero_workers_is_refused_at_start_up() {
    let output = support::run_switchyard(&["run", "--workers", "0"]).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--workers"), "{stderr}");
}

#[tokio::test]
async fn a_reload_reaches_every_worker() {
    let router = SwitchyardProcess::run_with_yaml(&greeting("v1"), &["--workers", "2"]).await;
    for (_, body) in all_on_new_connections(&router.proxy_url("/greeting")).await {
        assert_eq!(body, "v1");
    }

    router.route_file().write(&greeting("v2"));
    eventually(Duration::from_secs(5), || async {
        get_on_new_connection(router.proxy_url("/greeting")).await.1 == "v2"
    })
    .await;

    // Every connection, whichever worker accepted it, sees the new table.
    for (status, body) in all_on_new_connections(&router.proxy_url("/greeting")).await {
        assert_eq!((status, body.as_str()), (StatusCode::OK, "v2"));
    }
}

#[tokio::test]
async fn a_drain_waits_for_the_requests_in_flight_on_every_worker() {
    let mut held = held_upstream().await;
    let mut router = SwitchyardProcess::run_with_yaml(
        &format!("routes:\n  all:\n    upstream: {}\n", held.upstream.url()),
        &["--workers", "2", "--drain-timeout", "30s"],
    )
    .await;

    let mut in_flight = JoinSet::new();
    for _ in 0..CONNECTIONS {
        in_flight.spawn(get_on_new_connection(router.proxy_url("/hold")));
        // One connection at a time, so that each finds both workers idle
        // and either may take it: in a burst, the first worker awake can
        // accept them all, and the other has nothing to drain.
        held.arrival().await;
    }

    router.signal("TERM").await;
    // The workers stop accepting but keep their connections open.
    eventually(Duration::from_secs(5), || async {
        tokio::net::TcpStream::connect(router.proxy_url("").trim_start_matches("http://"))
            .await
            .is_err()
    })
    .await;
    assert_eq!(router.worker_threads(), 2, "a worker quit before its drain");
    assert!(
        in_flight.try_join_next().is_none(),
        "a request ended before its upstream answered"
    );
    held.release();

    for (status, body) in in_flight.join_all().await {
        assert_eq!((status, body.as_str()), (StatusCode::OK, RELEASED));
    }
    assert_eq!(router.exit_status().await.code(), Some(0));
}
