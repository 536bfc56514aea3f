//! `GET /metrics` after real traffic: per-route and per-code counts, the
//! `_none` route, upstream error kinds, reload counters and the last
//! reload's outcome, readiness as `/readyz` answers it, and the count of
//! live route tables going back down once an old table's last request ends.

mod support;

use std::time::Duration;

use support::{closed_port_url, eventually, Gate, Metrics, TestRouter, Upstream};

/// How long a count may take to show up: generous for a loaded CI machine,
/// still short for a real failure.
const COUNTED_WITHIN: Duration = Duration::from_secs(10);

/// `dead` is the URL of a port that refuses connections.
fn routes_yaml(upstream: &str, dead: &str) -> String {
    format!(
        r#"
routes:
  hello:
    prefix: /hello
    respond: {{ status: 200, body: "hello\n" }}
  teapot:
    prefix: /teapot
    respond: {{ status: 418 }}
  echo:
    prefix: /echo
    upstream: {upstream}
  dead:
    prefix: /dead
    upstream: {dead}
"#
    )
}

/// A GET through the proxy; its status code.
async fn status_of(router: &TestRouter, path: &str) -> u16 {
    let response = router.get(path).send().await.expect("the proxy answers");
    response.status().as_u16()
}

/// Scrapes until `check` holds: counts are recorded when a response body
/// ends on the server, which can be just after the client has read it.
async fn metrics_where(router: &TestRouter, check: impl Fn(&Metrics) -> bool) -> Metrics {
    eventually(COUNTED_WITHIN, || async {
        let metrics = router.metrics().await;
        check(&metrics).then_some(metrics)
    })
    .await
}

#[tokio::test]
async fn requests_are_counted_by_route_and_code() {
    let upstream = Upstream::echo("echo").start().await;
    let dead = closed_port_url().await;
    let router = TestRouter::with_yaml(routes_yaml(&upstream.url(), &dead))
        .start()
        .await;

    for _ in 0..3 {
        assert_eq!(status_of(&router, "/hello").await, 200);
    }
    assert_eq!(status_of(&router, "/teapot").await, 418);
    for _ in 0..2 {
        assert_eq!(status_of(&router, "/echo/x").await, 200);
    }
    assert_eq!(status_of(&router, "/dead").await, 502);
    for _ in 0..2 {
        assert_eq!(status_of(&router, "/nowhere/at/all").await, 404);
    }

    // All 9 requests counted.
    let metrics = metrics_where(&router, |m| {
        m.get(r#"switchyard_request_duration_seconds_count{route="_none"}"#) == Some(2.0)
            && m.get(r#"switchyard_request_duration_seconds_count{route="hello"}"#) == Some(3.0)
            && m.get(r#"switchyard_request_duration_seconds_count{route="echo"}"#) == Some(2.0)
            && m.get(r#"switchyard_request_duration_seconds_count{route="dead"}"#) == Some(1.0)
            && m.get(r#"switchyard_request_duration_seconds_count{route="teapot"}"#) == Some(1.0)
    })
    .await;
    assert_eq!(
        metrics.value(r#"switchyard_requests_total{route="hello",code="200"}"#),
        3.0
    );
    assert_eq!(
        metrics.value(r#"switchyard_requests_total{route="teapot",code="418"}"#),
        1.0
    );
    assert_eq!(
        metrics.value(r#"switchyard_requests_total{route="echo",code="200"}"#),
        2.0
    );
    assert_eq!(
        metrics.value(r#"switchyard_requests_total{route="dead",code="502"}"#),
        1.0
    );
    assert_eq!(
        metrics.value(r#"switchyard_requests_total{route="_none",code="404"}"#),
        2.0
    );
    assert_eq!(
        metrics
            .value(r#"switchyard_upstream_errors_total{route="dead",kind="upstream_unavailable"}"#),
        1.0
    );
    assert_eq!(
        metrics
            .value(r#"switchyard_upstream_errors_total{route="echo",kind="upstream_unavailable"}"#),
        0.0,
        "every kind of an upstream route is shown, zeros included"
    );
    assert_eq!(
        metrics
            .get(r#"switchyard_upstream_errors_total{route="hello",kind="upstream_unavailable"}"#),
        None,
        "a respond route has no upstream to fail"
    );
    assert_eq!(
        metrics.value(r#"switchyard_request_duration_seconds_bucket{route="hello",le="+Inf"}"#),
        3.0
    );
    assert_eq!(metrics.value("switchyard_config_version"), 1.0);
    assert_eq!(metrics.value("switchyard_routes"), 4.0);
    assert_eq!(metrics.value("switchyard_config_generations_live"), 1.0);

    // Labels are route names, codes and kinds only: never a request path.
    assert!(
        !metrics.0.contains("nowhere"),
        "a raw path leaked into a label"
    );
    assert!(metrics
        .0
        .contains("# TYPE switchyard_requests_total counter"));
    assert!(metrics
        .0
        .contains("# TYPE switchyard_request_duration_seconds histogram"));
}

#[tokio::test]
async fn reloads_are_counted_and_counters_survive_them() {
    let upstream = Upstream::echo("echo").start().await;
    let dead = closed_port_url().await;
    let yaml = routes_yaml(&upstream.url(), &dead);
    let router = TestRouter::with_yaml(&yaml).start().await;
    assert_eq!(status_of(&router, "/hello").await, 200);
    // The first request counted.
    metrics_where(&router, |m| {
        m.get(r#"switchyard_requests_total{route="hello",code="200"}"#) == Some(1.0)
    })
    .await;
    let metrics = router.metrics().await;
    assert_eq!(
        metrics.value(r#"switchyard_config_reloads_total{result="ok"}"#),
        0.0
    );
    assert_eq!(
        metrics.value("switchyard_config_last_reload_successful"),
        1.0,
        "the file loaded at start-up is serving"
    );
    assert_eq!(
        metrics.value(r#"switchyard_config_reloads_total{result="error"}"#),
        0.0
    );

    // The watcher rejects the bad file on its own; wait for that before
    // asking again, so each attempt is counted once and in order.
    router.write_config("routes:\n  hello:\n    prefx: /hello\n");
    metrics_where(&router, |m| {
        m.get(r#"switchyard_config_reloads_total{result="error"}"#) == Some(1.0)
    })
    .await;
    assert_eq!(router.reload().await.0, 422);
    let metrics = router.metrics().await;
    assert_eq!(
        metrics.value(r#"switchyard_config_reloads_total{result="error"}"#),
        2.0,
        "an explicit reload of a bad file is an attempt of its own"
    );
    assert_eq!(metrics.value("switchyard_config_version"), 1.0);
    assert_eq!(
        metrics.value("switchyard_config_last_reload_successful"),
        0.0,
        "the file on disk is not the one serving"
    );

    let grown = format!("{yaml}  extra:\n    prefix: /extra\n    respond: {{ status: 204 }}\n");
    router.write_config(&grown);
    metrics_where(&router, |m| m.get("switchyard_config_version") == Some(2.0)).await;
    // The same bytes again change nothing and count as no reload.
    assert_eq!(router.reload().await.0, 200);
    let metrics = router.metrics().await;
    assert_eq!(
        metrics.value(r#"switchyard_config_reloads_total{result="ok"}"#),
        1.0
    );
    assert_eq!(
        metrics.value(r#"switchyard_config_reloads_total{result="error"}"#),
        2.0
    );
    assert_eq!(metrics.value("switchyard_config_version"), 2.0);
    assert_eq!(
        metrics.value("switchyard_config_last_reload_successful"),
        1.0
    );
    assert_eq!(metrics.value("switchyard_routes"), 5.0);
    assert_eq!(
        metrics.value(r#"switchyard_requests_total{route="hello",code="200"}"#),
        1.0,
        "a route that keeps its name keeps its counters across a reload"
    );

    assert_eq!(status_of(&router, "/extra").await, 204);
    assert_eq!(status_of(&router, "/hello").await, 200);
    // Requests after the reload counted.
    metrics_where(&router, |m| {
        m.get(r#"switchyard_requests_total{route="extra",code="204"}"#) == Some(1.0)
            && m.get(r#"switchyard_requests_total{route="hello",code="200"}"#) == Some(2.0)
    })
    .await;
}

#[tokio::test]
async fn ready_is_one_while_serving_and_zero_once_draining() {
    // The delay keeps the admin listener up after the signal, as it is
    // while Kubernetes takes the endpoint out.
    let mut router = TestRouter::with_yaml(support::greeting("hi"))
        .shutdown_delay(Duration::from_secs(30))
        .start()
        .await;
    assert_eq!(router.metrics().await.value("switchyard_ready"), 1.0);
    router.begin_shutdown();
    metrics_where(&router, |m| m.get("switchyard_ready") == Some(0.0)).await;
    let (status, _) = router.admin_text("/readyz").await;
    assert_eq!(status, 503, "the gauge and the probe agree");
}

#[tokio::test]
async fn generations_live_falls_back_after_the_last_old_request_ends() {
    let upstream = Upstream::echo("echo").start().await;
    let gate = Gate::new();
    let slow = Upstream::gated(&gate, "slow answer").start().await;
    let dead = closed_port_url().await;
    let yaml = format!(
        "{}  slow:\n    prefix: /slow\n    upstream: {}\n",
        routes_yaml(&upstream.url(), &dead),
        slow.url()
    );
    let router = TestRouter::with_yaml(&yaml).start().await;

    let in_flight = tokio::spawn(router.get("/slow").send());
    gate.arrived().await;
    assert_eq!(
        router
            .metrics()
            .await
            .value("switchyard_config_generations_live"),
        1.0
    );

    // A reload while the request waits: its table (version 1) stays alive.
    router.write_config(&format!(
        "{yaml}  later:\n    prefix: /later\n    respond: {{}}\n"
    ));
    assert_eq!(router.reload().await.0, 200);
    let metrics = router.metrics().await;
    assert_eq!(metrics.value("switchyard_config_version"), 2.0);
    assert_eq!(metrics.value("switchyard_config_generations_live"), 2.0);

    gate.open();
    let response = in_flight
        .await
        .expect("the request task ran")
        .expect("the slow request is answered");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("a body"), "slow answer");
    // The old table freed.
    metrics_where(&router, |m| {
        m.get("switchyard_config_generations_live") == Some(1.0)
    })
    .await;
    assert_eq!(
        router
            .metrics()
            .await
            .value(r#"switchyard_requests_total{route="slow",code="200"}"#),
        1.0,
        "a request on the old table is counted for the route it kept"
    );
}
