//! Faults on both sides, with real sockets: upstreams that reset, answer
//! garbage, stall or send a 1 MiB header, and clients that leave mid-way.
//! Each ends as SPEC 4 says, and leaves nothing behind: the open-connection
//! and tunnel gauges and the live table generations come back to idle.

mod support;

use std::time::Duration;

use support::{
    eventually, read_request_head, send_raw_until_closed, TestRouter, Upstream, UpstreamSpec,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const IDLE_WITHIN: Duration = Duration::from_secs(5);

async fn router_to(upstream: &Upstream) -> TestRouter {
    TestRouter::with_yaml(format!(
        "routes:
  all:
    upstream: {}
    timeout: 500ms
  alive:
    prefix: /alive
    respond: {{ body: alive }}
",
        upstream.url()
    ))
    .start()
    .await
}

/// No client connection, tunnel or old table is left, and the router still
/// answers.
async fn assert_back_to_idle(router: &TestRouter) {
    eventually(IDLE_WITHIN, || async {
        let metrics = router.metrics().await;
        metrics.value("switchyard_connections_open{listener=\"proxy\"}") == 0.0
            && metrics.value("switchyard_tunnels_open") == 0.0
            && metrics.value("switchyard_config_generations_live") == 1.0
    })
    .await;
    let alive = send_raw_until_closed(
        router.proxy_addr(),
        "GET /alive HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(alive.ends_with("alive"), "the router still serves: {alive}");
}

/// An upstream that reads the request head, writes `bytes`, and resets the
/// connection (SO_LINGER 0) if `reset`, or else holds it open forever.
fn misbehaving(bytes: Vec<u8>, reset: bool) -> UpstreamSpec {
    Upstream::tcp(move |mut stream| {
        let bytes = bytes.clone();
        async move {
            if read_request_head(&mut stream).await.is_none() {
                return;
            }
            let _ = stream.write_all(&bytes).await;
            if reset {
                let _ = stream.set_zero_linger();
                return;
            }
            let _held = stream;
            std::future::pending::<()>().await;
        }
    })
}

async fn get(router: &TestRouter) -> String {
    send_raw_until_closed(
        router.proxy_addr(),
        "GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await
}

/// Sends one GET through a router to `upstream`, checks that the answer
/// starts with `status_line`, and that nothing is left behind; returns the
/// answer for further checks.
async fn through(upstream: UpstreamSpec, status_line: &str) -> String {
    let upstream = upstream.start().await;
    let router = router_to(&upstream).await;
    let answer = get(&router).await;
    assert!(answer.starts_with(status_line), "{answer}");
    assert_back_to_idle(&router).await;
    answer
}

#[tokio::test]
async fn an_upstream_reset_mid_headers_is_a_502() {
    through(
        misbehaving(b"HTTP/1.1 200 OK\r\nContent-Le".to_vec(), true),
        "HTTP/1.1 502",
    )
    .await;
}

#[tokio::test]
async fn an_upstream_reset_mid_body_aborts_the_client_connection() {
    let mut partial = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec();
    partial.extend_from_slice(&[b'b'; 100]);
    let answer = through(misbehaving(partial, true), "HTTP/1.1 200").await;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert!(body.len() < 1000, "a cut body must not look complete");
}

#[tokio::test]
async fn an_upstream_answering_garbage_is_a_502() {
    through(
        misbehaving(b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec(), false),
        "HTTP/1.1 502",
    )
    .await;
}

#[tokio::test]
async fn an_upstream_that_stalls_forever_is_a_504() {
    through(Upstream::silent(), "HTTP/1.1 504").await;
}

#[tokio::test]
async fn an_upstream_sending_a_1_mib_header_is_a_502() {
    let mut head = b"HTTP/1.1 200 OK\r\nX-Huge: ".to_vec();
    head.extend(std::iter::repeat_n(b'h', 1024 * 1024));
    head.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
    through(misbehaving(head, false), "HTTP/1.1 502").await;
}

#[tokio::test]
async fn a_client_leaving_mid_upload_leaves_nothing_behind() {
    let upstream = Upstream::echo("echo").start().await;
    let router = router_to(&upstream).await;
    let mut client = TcpStream::connect(router.proxy_addr())
        .await
        .expect("connect");
    client
        .write_all(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n")
        .await
        .expect("write the head");
    client
        .write_all(&[b'u'; 64 * 1024])
        .await
        .expect("write some body");
    eventually(IDLE_WITHIN, || async { upstream.requests() == 1 }).await;
    drop(client);
    assert_back_to_idle(&router).await;
}

#[tokio::test]
async fn a_client_leaving_mid_download_leaves_nothing_behind() {
    let upstream = Upstream::streaming(256 * 1024 * 1024, 64 * 1024)
        .start()
        .await;
    let router = router_to(&upstream).await;
    let mut client = TcpStream::connect(router.proxy_addr())
        .await
        .expect("connect");
    client
        .write_all(b"GET /down HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("write the request");
    let mut received = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while received < 1024 * 1024 {
        let n = tokio::time::timeout(IDLE_WITHIN, client.read(&mut buf))
            .await
            .expect("the download flows")
            .expect("read");
        assert!(n > 0, "the download ended early");
        received += n;
    }
    drop(client);
    assert_back_to_idle(&router).await;
}
