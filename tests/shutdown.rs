//! Graceful shutdown (SPEC 6) through the real binary and real signals:
//! `/readyz` turns 503 at once, the proxy keeps serving for
//! `--shutdown-delay`, then refuses new connections, lets in-flight requests
//! finish within `--drain-timeout`, and exits 0; a second signal exits at
//! once.

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use support::{client, eventually, held_upstream, Held, SwitchyardProcess, RELEASED};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// "At once" for `/readyz`: the first probe after the signal is normally
/// 503 already; this only bounds signal delivery on a busy machine.
const AT_ONCE: Duration = Duration::from_secs(1);

/// Long enough that a drain which waited for it would fail the test by
/// outliving the process deadline (10 s) of the fixture.
const LONG_DRAIN: &str = "30s";

async fn router_for(held: &Held, extra: &[&str]) -> SwitchyardProcess {
    SwitchyardProcess::run_with_yaml(
        &format!("routes:\n  all:\n    upstream: {}\n", held.upstream.url()),
        extra,
    )
    .await
}

/// Starts a request to `/hold` through the router and returns its status
/// and body once it ends.
fn hold(router: &SwitchyardProcess) -> JoinHandle<Result<(StatusCode, String), reqwest::Error>> {
    let url = router.proxy_url("/hold");
    tokio::spawn(async move {
        let response = client().get(url).send().await?;
        let status = response.status();
        Ok((status, response.text().await?))
    })
}

async fn readyz(router: &SwitchyardProcess) -> Option<StatusCode> {
    let response = client().get(router.admin_url("/readyz")).send().await;
    response.ok().map(|r| r.status())
}

/// A GET of `/quick` on a fresh connection (a new client has no pool).
async fn quick_on_a_new_connection(
    router: &SwitchyardProcess,
) -> Result<StatusCode, reqwest::Error> {
    Ok(client()
        .get(router.proxy_url("/quick"))
        .send()
        .await?
        .status())
}

async fn refuses_new_connections(router: &SwitchyardProcess) -> bool {
    let addr = router
        .proxy_url("")
        .trim_start_matches("http://")
        .to_owned();
    TcpStream::connect(addr).await.is_err()
}

/// One signal, then the whole sequence with no shutdown delay.
async fn signal_drains_in_flight_request(signal: &str) {
    let mut held = held_upstream().await;
    let mut router = router_for(&held, &["--drain-timeout", LONG_DRAIN]).await;
    let in_flight = hold(&router);
    held.arrival().await;

    router.signal(signal).await;

    eventually(AT_ONCE, || async {
        readyz(&router).await == Some(StatusCode::SERVICE_UNAVAILABLE)
    })
    .await;
    eventually(Duration::from_secs(5), || refuses_new_connections(&router)).await;
    assert!(!in_flight.is_finished(), "the in-flight request was cut");
    held.release();
    let (status, body) = in_flight.await.unwrap().expect("the request completes");
    assert_eq!((status, body.as_str()), (StatusCode::OK, RELEASED));
    assert_eq!(router.exit_status().await.code(), Some(0));
}

#[tokio::test]
async fn sigterm_turns_readyz_503_and_lets_the_in_flight_request_finish() {
    signal_drains_in_flight_request("TERM").await;
}

#[tokio::test]
async fn sigint_drains_like_sigterm() {
    signal_drains_in_flight_request("INT").await;
}

#[tokio::test]
async fn new_requests_are_served_during_the_shutdown_delay_then_refused() {
    let held = held_upstream().await;
    // Long against the few milliseconds a loopback request takes, so the
    // request below lands inside the delay even on a loaded machine.
    let mut router = router_for(&held, &["--shutdown-delay", "3s"]).await;
    // The process logs its addresses just before it turns ready.
    eventually(Duration::from_secs(5), || async {
        readyz(&router).await == Some(StatusCode::OK)
    })
    .await;

    let signalled = Instant::now();
    router.signal("TERM").await;
    eventually(AT_ONCE, || async {
        readyz(&router).await == Some(StatusCode::SERVICE_UNAVAILABLE)
    })
    .await;

    let during_delay = quick_on_a_new_connection(&router).await;
    assert_eq!(
        during_delay.ok(),
        Some(StatusCode::OK),
        "not served during the delay"
    );
    eventually(Duration::from_secs(10), || refuses_new_connections(&router)).await;
    assert!(
        signalled.elapsed() >= Duration::from_secs(3),
        "the listener closed before the delay was over"
    );
    assert_eq!(router.exit_status().await.code(), Some(0));
}

#[tokio::test]
async fn request_outliving_the_drain_timeout_is_cut_and_the_process_exits_0() {
    let mut held = held_upstream().await;
    let mut router = router_for(&held, &["--drain-timeout", "1s"]).await;
    let in_flight = hold(&router);
    held.arrival().await;

    let signalled = Instant::now();
    router.signal("TERM").await;
    let status = router.exit_status().await;
    let exited_after = signalled.elapsed();

    assert_eq!(status.code(), Some(0));
    assert!(
        exited_after < Duration::from_secs(5),
        "exited {exited_after:?} after the signal with a 1 s drain timeout"
    );
    let cut = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .expect("the client learns that the request was cut")
        .unwrap();
    assert!(
        cut.is_err(),
        "the request did not outlive the drain: {cut:?}"
    );
}

#[tokio::test]
async fn second_signal_exits_at_once_without_draining() {
    for (first, second, code) in [
        ("TERM", "TERM", 143),
        ("TERM", "INT", 130),
        ("INT", "TERM", 143),
    ] {
        let mut held = held_upstream().await;
        let mut router = router_for(&held, &["--drain-timeout", LONG_DRAIN]).await;
        let _in_flight = hold(&router);
        held.arrival().await;
        router.signal(first).await;
        eventually(AT_ONCE, || async {
            readyz(&router).await == Some(StatusCode::SERVICE_UNAVAILABLE)
        })
        .await;

        router.signal(second).await;

        // The drain would take 30 s; the fixture gives the process 10.
        assert_eq!(
            router.exit_status().await.code(),
            Some(code),
            "{first} then {second}"
        );
    }
}

#[tokio::test]
async fn idle_connections_do_not_hold_the_drain_open() {
    let held = held_upstream().await;
    let mut router = router_for(&held, &["--drain-timeout", LONG_DRAIN]).await;
    let addr: std::net::SocketAddr = router
        .proxy_url("")
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    // A keep-alive connection that has served a request and sits idle.
    let keep_alive = client();
    let answer = keep_alive
        .get(router.proxy_url("/quick"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.text().await.unwrap(), "quick");
    // A connection that never sent a byte.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // An HTTP/2 connection with a finished request on it.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut h2, h2_connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let h2_closed = tokio::spawn(h2_connection);
    let request = http::Request::get("http://svc.test/quick")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    assert_eq!(
        h2.send_request(request).await.unwrap().status(),
        StatusCode::OK
    );

    router.signal("TERM").await;

    // With a 30 s drain, exiting within the fixture's 10 s deadline means
    // no idle connection was waited for.
    assert_eq!(router.exit_status().await.code(), Some(0));
    let mut buf = [0u8; 16];
    let silent_end = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
    assert!(
        matches!(silent_end, Ok(Ok(0) | Err(_))),
        "the silent connection is still open: {silent_end:?}"
    );
    let h2_end = tokio::time::timeout(Duration::from_secs(5), h2_closed).await;
    assert!(h2_end.is_ok(), "the HTTP/2 connection is still open");
}

#[tokio::test]
async fn sigterm_as_soon_as_the_router_listens_still_exits_0() {
    for _ in 0..5 {
        let held = held_upstream().await;
        let mut router = router_for(&held, &[]).await;

        // No request first: the signal follows the start-up log line at
        // once, so the handlers must already be installed by then.
        router.signal("TERM").await;

        assert_eq!(router.exit_status().await.code(), Some(0));
    }
}
