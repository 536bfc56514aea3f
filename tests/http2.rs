//! Cleartext HTTP/2 inbound (SPEC 4.8): a prior-knowledge h2 client on the
//! same port as HTTP/1.1 clients, routed by `:authority`, forwarded to
//! HTTP/1.1 upstreams with that authority as `Host`, bodies streaming both
//! ways.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{assert_timed_out_after, Echoed, TestRouter, TimeoutRoutes, Upstream, SHORT_TIMEOUT};
use tokio::net::TcpStream;

/// Big enough to take many h2 DATA frames and flow-control windows (64 KiB
/// initial), small enough for a debug build.
const BODY: u64 = 8 * 1024 * 1024;
const CHUNK: usize = 32 * 1024;

/// An h2 exchange that takes longer than this on loopback is stuck.
const EXCHANGE_DEADLINE: Duration = Duration::from_secs(30);

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Opens an HTTP/2 connection with prior knowledge: the connection preface
/// goes out first, with no HTTP/1.1 `Upgrade: h2c` dance.
async fn h2_connect(addr: SocketAddr) -> SendRequest<Body> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (send, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("the router speaks h2 with prior knowledge");
    tokio::spawn(connection);
    send
}

async fn h2_send(send: &mut SendRequest<Body>, request: Request<Body>) -> Response<Incoming> {
    let response = tokio::time::timeout(EXCHANGE_DEADLINE, send.send_request(request))
        .await
        .expect("an answer in time")
        .expect("an h2 answer");
    assert_eq!(response.version(), Version::HTTP_2);
    response
}

fn get(uri: &str) -> Request<Body> {
    Request::builder()
        .uri(uri)
        .body(Empty::new().boxed())
        .expect("a valid request")
}

async fn body_bytes(response: Response<Incoming>) -> Bytes {
    tokio::time::timeout(EXCHANGE_DEADLINE, response.into_body().collect())
        .await
        .expect("the body in time")
        .expect("a complete body")
        .to_bytes()
}

/// Two upstreams told apart by host only.
async fn hosts_behind_router() -> (Upstream, Upstream, TestRouter) {
    let api = Upstream::echo("api").start().await;
    let other = Upstream::echo("other").start().await;
    let router = TestRouter::with_yaml(format!(
        "routes:
  api:
    host: api.example.com
    upstream: {}
  other:
    upstream: {}
",
        api.url(),
        other.url()
    ))
    .start()
    .await;
    (api, other, router)
}

#[tokio::test]
async fn h2_authority_routes_and_becomes_the_upstream_host() {
    let (_api, _other, router) = hosts_behind_router().await;
    let mut h2 = h2_connect(router.proxy_addr()).await;

    let routed = h2_send(&mut h2, get("http://API.example.com:8443/users/7?x=1")).await;
    assert_eq!(routed.status(), StatusCode::OK);
    assert!(routed.headers().contains_key("x-request-id"));
    let echoed = Echoed::from_body(&body_bytes(routed).await);
    let fallback = h2_send(&mut h2, get("http://other.test/users/7")).await;
    let fallback = Echoed::from_body(&body_bytes(fallback).await);

    assert_eq!(echoed.upstream, "api");
    assert_eq!(echoed.path, "/users/7");
    assert_eq!(echoed.query.as_deref(), Some("x=1"));
    assert_eq!(echoed.header("host"), Some("API.example.com:8443"));
    assert_eq!(
        echoed.header("x-forwarded-host"),
        Some("API.example.com:8443")
    );
    assert_eq!(fallback.upstream, "other");
    assert_eq!(fallback.header("host"), Some("other.test"));
}

#[tokio::test]
async fn h2_and_http1_clients_share_the_listener() {
    let (_api, _other, router) = hosts_behind_router().await;
    let mut h2 = h2_connect(router.proxy_addr()).await;

    let over_h2 = h2_send(&mut h2, get("http://api.example.com/a")).await;
    let over_h1 = router
        .get("/a")
        .header("host", "api.example.com")
        .send()
        .await
        .unwrap();

    assert_eq!(over_h1.version(), Version::HTTP_11);
    assert_eq!(
        Echoed::from_body(&body_bytes(over_h2).await).upstream,
        "api"
    );
    assert_eq!(Echoed::from_response(over_h1).await.upstream, "api");
}

#[tokio::test]
async fn h2_requests_multiplex_on_one_connection() {
    let (api, _other, router) = hosts_behind_router().await;
    let h2 = h2_connect(router.proxy_addr()).await;

    let mut exchanges = tokio::task::JoinSet::new();
    for n in 0..8 {
        let mut h2 = h2.clone();
        exchanges.spawn(async move {
            let answer = h2_send(&mut h2, get(&format!("http://api.example.com/n/{n}"))).await;
            Echoed::from_body(&body_bytes(answer).await).path
        });
    }
    let mut paths: Vec<String> = exchanges.join_all().await;
    paths.sort();

    let expected: Vec<String> = (0..8).map(|n| format!("/n/{n}")).collect();
    assert_eq!(paths, expected);
    assert!(api.requests() >= 8);
}

/// Each h2 stream is a task of its own, so the route timeout's kept timers
/// pass from task to task. The answered streams here leave them set for a
/// longer timeout than the silent route's, then for the same one, polled
/// last by another stream; every silent stream must still end in a 504 at
/// its own route's timeout.
#[tokio::test]
async fn h2_streams_to_a_silent_upstream_end_at_their_route_timeout() {
    let routes = TimeoutRoutes::start().await;
    let h2 = h2_connect(routes.router.proxy_addr()).await;

    for round in 0..3 {
        for path in ["/long", "/fast"] {
            for _ in 0..5 {
                let uri = format!("http://svc.test{path}");
                let answered = h2_send(&mut h2.clone(), get(&uri)).await;
                assert_eq!(answered.status(), StatusCode::OK, "round {round}");
                body_bytes(answered).await;
            }
        }
        let started = Instant::now();
        let mut silent_streams = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let mut h2 = h2.clone();
            silent_streams.spawn(async move {
                // Bounded well under the long route's timeout, so that a
                // timer left at it fails the test instead of ending it.
                let wait = h2_send(&mut h2, get("http://svc.test/slow"));
                let answer = tokio::time::timeout(Duration::from_secs(5), wait)
                    .await
                    .expect("the route timeout ended the stream");
                (answer.status(), started.elapsed())
            });
        }
        for (status, waited) in silent_streams.join_all().await {
            assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "round {round}");
            assert_timed_out_after(waited, SHORT_TIMEOUT);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_upload_streams_to_an_http1_upstream() {
    let (_api, _other, router) = hosts_behind_router().await;
    let mut h2 = h2_connect(router.proxy_addr()).await;

    let piece = Bytes::from(vec![b'u'; CHUNK]);
    let frames = futures_util::stream::iter(
        (0..BODY / CHUNK as u64).map(move |_| Ok::<_, Infallible>(Frame::data(piece.clone()))),
    );
    let request = Request::builder()
        .method(Method::PUT)
        .uri("http://api.example.com/upload")
        .body(StreamBody::new(frames).boxed())
        .expect("a valid request");
    let response = h2_send(&mut h2, request).await;

    assert_eq!(response.status(), StatusCode::OK);
    let echoed = Echoed::from_body(&body_bytes(response).await);
    assert_eq!(echoed.method, "PUT");
    assert_eq!(echoed.body_len, BODY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_download_streams_from_an_http1_upstream() {
    let upstream = Upstream::streaming(BODY, CHUNK).start().await;
    let router = TestRouter::with_yaml(format!(
        "routes:\n  all:\n    upstream: {}\n",
        upstream.url()
    ))
    .start()
    .await;
    let mut h2 = h2_connect(router.proxy_addr()).await;

    let response = h2_send(&mut h2, get("http://blob.test/download")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut received: u64 = 0;
    while let Some(frame) = tokio::time::timeout(EXCHANGE_DEADLINE, body.frame())
        .await
        .expect("the next frame in time")
    {
        if let Some(data) = frame.expect("an unbroken body").data_ref() {
            assert!(data.iter().all(|&b| b == b'x'), "body bytes changed");
            received += data.len() as u64;
        }
    }

    assert_eq!(received, BODY);
}

/// The first packet's worth of the h2 preface, which alone cannot tell
/// HTTP/2 from an HTTP/1 request line starting with `P`.
const PREFACE_START: &[u8] = b"PRI * HTTP/2.0\r\n";

/// Long enough that the router has read a first packet before the rest is
/// sent, so the split is seen as a split; the outcome asserted does not
/// depend on it.
const SPLIT_PAUSE: Duration = Duration::from_millis(50);

/// A client stream whose first [`PREFACE_START`] bytes of output were
/// already sent by hand: it checks and drops them from what hyper writes.
struct AfterPrefaceStart {
    stream: TcpStream,
    already_sent: &'static [u8],
}

impl tokio::io::AsyncRead for AfterPrefaceStart {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for AfterPrefaceStart {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if !self.already_sent.is_empty() {
            let skipped = self.already_sent.len().min(buf.len());
            assert_eq!(&buf[..skipped], &self.already_sent[..skipped]);
            self.already_sent = &self.already_sent[skipped..];
            return std::task::Poll::Ready(Ok(skipped));
        }
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The listener tells HTTP/2 from HTTP/1 by a connection's first bytes;
/// a first packet that is only the start of the h2 preface (or a `P` that
/// could begin it) is waited on, and none of it is lost to the protocol
/// finally chosen.
#[tokio::test]
async fn a_first_packet_cut_inside_the_preface_still_gets_its_protocol() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_api, _other, router) = hosts_behind_router().await;

    let mut tcp = TcpStream::connect(router.proxy_addr())
        .await
        .expect("connect");
    tcp.write_all(PREFACE_START).await.expect("write");
    tokio::time::sleep(SPLIT_PAUSE).await;
    let stream = AfterPrefaceStart {
        stream: tcp,
        already_sent: PREFACE_START,
    };
    let (mut h2, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 after a split preface");
    tokio::spawn(connection);
    let over_h2 = h2_send(&mut h2, get("http://api.example.com/split-h2")).await;
    let echoed = Echoed::from_body(&body_bytes(over_h2).await);
    assert_eq!(
        (echoed.upstream.as_str(), echoed.path.as_str()),
        ("api", "/split-h2")
    );

    let mut tcp = TcpStream::connect(router.proxy_addr())
        .await
        .expect("connect");
    tcp.write_all(b"P").await.expect("write");
    tokio::time::sleep(SPLIT_PAUSE).await;
    tcp.write_all(b"UT /split-h1 HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
        .await
        .expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(EXCHANGE_DEADLINE, tcp.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read the answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").expect("a head") + 4..];
    let echoed = Echoed::from_body(body.as_bytes());
    assert_eq!(
        (
            echoed.upstream.as_str(),
            echoed.method.as_str(),
            echoed.path.as_str(),
            echoed.body.as_str()
        ),
        ("api", "PUT", "/split-h1", "hi")
    );
}
