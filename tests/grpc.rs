//! gRPC through the router (SPEC 8), with a real gRPC implementation on
//! both ends: tonic's generated client and server (tests/grpc-fixture),
//! over cleartext HTTP/2 and the TLS listener, to `h2c://` upstreams and
//! to `https://` upstreams that a private CA signed, with and without a
//! client certificate.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use support::{
    closed_port_url, eventually, send_raw, SwitchyardProcess, TestCa, TestRouter, Upstream,
};
use switchyard::tls::PairPaths;
use switchyard_grpc_fixture::{
    self as fixture, EchoClient, Message, RunningServer, StreamRequest, STALL, STATUS_PREFIX,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::Code;

/// A gRPC exchange that takes longer than this on loopback is stuck.
const CALL_DEADLINE: Duration = Duration::from_secs(60);

/// How many messages each of the shape checks streams.
const SHAPE_MESSAGES: u64 = 100;

fn message(seq: u64, text: &str) -> Message {
    Message {
        seq,
        payload: vec![7; 32],
        text: text.to_owned(),
    }
}

/// Every one of gRPC's four shapes once, and a status with a message from
/// the server, through `client`.
async fn each_shape_passes(client: &mut EchoClient<Channel>) {
    let answer = client
        .unary(message(1, "hello"))
        .await
        .expect("a unary answer")
        .into_inner();
    assert_eq!((answer.seq, answer.text.as_str()), (1, "hello"));

    let refused = client
        .unary(message(2, &format!("{STATUS_PREFIX}5:no user 7 here")))
        .await
        .expect_err("the server's NOT_FOUND");
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    assert_eq!(refused.message(), "no user 7 here");

    let sent = tokio_stream::iter((0..SHAPE_MESSAGES).map(|seq| message(seq, "")));
    let summary = client
        .client_stream(sent)
        .await
        .expect("a client-stream summary")
        .into_inner();
    assert_eq!(summary.count, SHAPE_MESSAGES);
    assert!(summary.in_order);

    let mut received = client
        .server_stream(StreamRequest {
            count: SHAPE_MESSAGES,
            size: 16,
        })
        .await
        .expect("a server stream")
        .into_inner();
    let mut next = 0;
    while let Some(answer) = received.next().await {
        assert_eq!(answer.expect("a message").seq, next);
        next += 1;
    }
    assert_eq!(next, SHAPE_MESSAGES);

    ping_pong(client, 10).await;
}

/// `rounds` round trips on one bidirectional stream, each message sent
/// only once the answer to the one before it has come back: a router that
/// waited for the end of the request body would stall on the first.
async fn ping_pong(client: &mut EchoClient<Channel>, rounds: u64) {
    let (send, outgoing) = mpsc::channel(1);
    send.send(message(0, "ping"))
        .await
        .expect("the stream is open");
    let mut answers = client
        .bidi(ReceiverStream::new(outgoing))
        .await
        .expect("a bidirectional stream")
        .into_inner();
    for seq in 0..rounds {
        let answer = tokio::time::timeout(CALL_DEADLINE, answers.next())
            .await
            .expect("an answer in time")
            .expect("the stream stays open")
            .expect("a message");
        assert_eq!(answer.seq, seq);
        if seq + 1 < rounds {
            send.send(message(seq + 1, "ping"))
                .await
                .expect("the stream is open");
        }
    }
    drop(send);
    assert!(answers.next().await.is_none(), "the stream ends with OK");
}

/// A TLS upstream and the router's TLS listener, their certificates from
/// one private CA, written into `dir`.
struct Pki {
    ca: TestCa,
    ca_path: String,
    router_pair: PairPaths,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let ca = TestCa::new();
        let ca_path = ca.write(dir, "ca").display().to_string();
        let (cert, key) = ca.leaf(&["localhost"]).write(dir, "router");
        Pki {
            ca,
            ca_path,
            router_pair: PairPaths { cert, key },
        }
    }

    /// An Echo server over TLS as `127.0.0.1`, asking for a client
    /// certificate from this CA when `mutual`.
    async fn upstream(&self, mutual: bool) -> RunningServer {
        let leaf = self.ca.leaf(&["127.0.0.1"]);
        let client_ca = mutual.then(|| self.ca.pem());
        fixture::serve_tls(&leaf.cert_pem, &leaf.key_pem, client_ca.as_deref()).await
    }
}

#[tokio::test]
async fn every_shape_passes_from_both_listeners_to_h2c_and_https_upstreams() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let pki = Pki::new(dir.path());
    let cleartext = fixture::serve_h2c().await;
    let secure = pki.upstream(false).await;
    let router = TestRouter::with_yaml(format!(
        "routes:
  plain:
    host: plain.test
    upstream: {}
  secure:
    host: secure.test
    upstream: {}
    upstream_tls: {{ ca: {} }}
",
        cleartext.h2c_url(),
        secure.https_url(),
        pki.ca_path,
    ))
    .tls(vec![pki.router_pair.clone()])
    .start()
    .await;

    for authority in ["plain.test", "secure.test"] {
        let mut over_h2c = fixture::connect_h2c(router.proxy_addr(), authority).await;
        each_shape_passes(&mut over_h2c).await;
        let mut over_tls =
            fixture::connect_tls(router.tls_addr(), &pki.ca.pem(), "localhost", authority).await;
        each_shape_passes(&mut over_tls).await;
    }
    // Each upstream saw its own calls, with the `te: trailers` gRPC needs.
    assert!(cleartext.seen.calls() >= 10, "{}", cleartext.seen.calls());
    assert!(secure.seen.calls() >= 10, "{}", secure.seen.calls());
    assert_eq!(
        cleartext.seen.last_header("te").as_deref(),
        Some("trailers")
    );
}

#[tokio::test]
async fn a_thousand_round_trips_flow_on_one_stream() {
    let upstream = fixture::serve_h2c().await;
    let router = TestRouter::with_yaml(format!(
        "routes:\n  echo:\n    upstream: {}\n",
        upstream.h2c_url()
    ))
    .start()
    .await;
    let mut client = fixture::connect_h2c(router.proxy_addr(), "echo.test").await;
    tokio::time::timeout(CALL_DEADLINE * 2, ping_pong(&mut client, 1_000))
        .await
        .expect("1,000 round trips in time");
}

#[tokio::test]
async fn a_stream_outlives_ten_reloads_and_no_reload_waits_for_it() {
    let upstream = fixture::serve_h2c().await;
    let routes = |n: u32| {
        format!(
            "routes:\n  echo:\n    upstream: {}\n  marker:\n    prefix: /marker\n    respond: {{ body: \"{n}\" }}\n",
            upstream.h2c_url()
        )
    };
    let router = TestRouter::with_yaml(routes(0)).start().await;
    let mut client = fixture::connect_h2c(router.proxy_addr(), "echo.test").await;
    let (send, outgoing) = mpsc::channel(1);
    let mut answers = client
        .bidi(ReceiverStream::new(outgoing))
        .await
        .expect("a bidirectional stream")
        .into_inner();
    let first_version = router.version().await;
    for seq in 0..10u64 {
        send.send(message(seq, ""))
            .await
            .expect("the stream is open");
        let answer = answers.next().await.expect("open").expect("a message");
        assert_eq!(answer.seq, seq);

        router.write_config(&routes(seq as u32 + 1));
        let started = Instant::now();
        let (status, body) = router.reload().await;
        assert!(status.is_success(), "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a reload waited {:?} with a stream open",
            started.elapsed()
        );
    }
    assert_eq!(router.version().await, first_version + 10);
    send.send(message(10, ""))
        .await
        .expect("the stream is open");
    let last = answers.next().await.expect("open").expect("a message");
    assert_eq!(last.seq, 10, "the stream still flows on the first table");
}

#[tokio::test]
async fn the_routers_own_answers_are_grpc_statuses() {
    let router = TestRouter::with_yaml(format!(
        "routes:
  dead:
    host: dead.test
    upstream: {}
  elsewhere:
    host: nothing.test
    prefix: /not-grpc
    respond: {{ body: \"no\" }}
",
        closed_port_url().await.replace("http://", "h2c://"),
    ))
    .start()
    .await;

    let mut no_route = fixture::connect_h2c(router.proxy_addr(), "nothing.test").await;
    let status = no_route.unary(message(1, "")).await.expect_err("no route");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

    let mut dead = fixture::connect_h2c(router.proxy_addr(), "dead.test").await;
    let status = dead.unary(message(1, "")).await.expect_err("no upstream");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

#[tokio::test]
async fn a_grpc_timeout_shortens_the_route_timeout() {
    let stalled = Upstream::silent().start().await;
    let router = TestRouter::with_yaml(format!(
        "routes:\n  stalled:\n    upstream: h2c://{}\n    timeout: 30s\n",
        stalled.addr()
    ))
    .start()
    .await;
    // A client without the library's own timer, which would end the call
    // as `Cancelled` at the same moment and race the router's answer.
    let mut stalled_client = fixture::connect_h2c_bare(router.proxy_addr());
    let mut request = tonic::Request::new(message(1, STALL));
    request.set_timeout(Duration::from_millis(100));
    let started = Instant::now();
    let status = stalled_client
        .unary(request)
        .await
        .expect_err("the deadline passes");
    let waited = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().starts_with("upstream_timeout"),
        "the router answered, not the client library: {status:?}"
    );
    assert!(
        waited >= Duration::from_millis(100) && waited < Duration::from_secs(3),
        "answered after {waited:?}"
    );
}

#[tokio::test]
async fn an_upgrade_to_an_h2c_upstream_is_refused_with_502() {
    let upstream = fixture::serve_h2c().await;
    let router = TestRouter::with_yaml(format!(
        "routes:\n  echo:\n    upstream: {}\n",
        upstream.h2c_url()
    ))
    .start()
    .await;
    let answer = send_raw(
        router.proxy_addr(),
        "GET /chat HTTP/1.1\r\n\
         Host: echo.test\r\n\
         Connection: Upgrade\r\n\
         Upgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         \r\n",
    )
    .await;
    assert_eq!(answer.status, 502);
    let body: serde_json::Value = serde_json::from_slice(&answer.body).expect("a JSON body");
    assert_eq!(body["error"], "upgrade_unsupported");
    assert_eq!(upstream.seen.calls(), 0);
}

/// The route file of the mutual TLS tests: `secure` to `upstream` over
/// TLS, trusting the test CA, with the client pair at `identity` if given.
fn mutual_routes(upstream: &RunningServer, ca: &str, identity: Option<(&Path, &Path)>) -> String {
    let identity = identity.map_or(String::new(), |(cert, key)| {
        format!(", cert: {}, key: {}", cert.display(), key.display())
    });
    format!(
        "routes:\n  secure:\n    upstream: {}\n    upstream_tls: {{ ca: {ca}{identity} }}\n",
        upstream.https_url()
    )
}

#[tokio::test]
async fn mutual_tls_presents_the_client_certificate_and_follows_its_rotation() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let pki = Pki::new(dir.path());
    let upstream = pki.upstream(true).await;
    let first = pki.ca.client_leaf("router-1");
    let (cert, key) = first.write(dir.path(), "client");

    // Without a certificate the upstream refuses the handshake.
    let router = TestRouter::with_yaml(mutual_routes(&upstream, &pki.ca_path, None))
        .start()
        .await;
    let mut client = fixture::connect_h2c(router.proxy_addr(), "secure.test").await;
    let status = client.unary(message(1, "")).await.expect_err("refused");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // With one it is let in, and the upstream sees that certificate.
    router.write_config(&mutual_routes(&upstream, &pki.ca_path, Some((&cert, &key))));
    let (status, body) = router.reload().await;
    assert!(status.is_success(), "{body}");
    client.unary(message(2, "")).await.expect("let in");
    assert_eq!(
        upstream.seen.last_client_certificate().as_deref(),
        Some(first.der.as_ref())
    );

    // A rotated pair, renamed over the old files as a Secret update does,
    // is presented on new connections without an edit of the routes.
    let second = pki.ca.client_leaf("router-2");
    second.rename_over(&cert, &key);
    let version = router.version().await;
    eventually(Duration::from_secs(10), || async {
        let answered = client.clone().unary(message(3, "")).await.is_ok();
        answered && upstream.seen.last_client_certificate().as_deref() == Some(second.der.as_ref())
    })
    .await;
    assert_eq!(router.version().await, version, "no reload of the routes");
}

/// A gRPC call's wire form: one length-prefixed, uncompressed message.
fn grpc_frame(message: &Message) -> Vec<u8> {
    let body = prost::Message::encode_to_vec(message);
    let mut frame = vec![0];
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

#[tokio::test]
async fn an_http1_client_that_accepts_trailers_gets_them_chunked() {
    let upstream = fixture::serve_h2c().await;
    let router = TestRouter::with_yaml(format!(
        "routes:\n  echo:\n    upstream: {}\n",
        upstream.h2c_url()
    ))
    .start()
    .await;
    let frame = grpc_frame(&message(9, "over http/1.1"));
    let head = format!(
        "POST /switchyard.test.Echo/Unary HTTP/1.1\r\n\
         Host: echo.test\r\n\
         Content-Type: application/grpc\r\n\
         TE: trailers\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\
         \r\n",
        frame.len()
    );
    let raw = raw_exchange(router.proxy_addr(), head.as_bytes(), &frame).await;
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("transfer-encoding: chunked"), "{text}");
    let (_, after_last_chunk) = text
        .rsplit_once("\r\n0\r\n")
        .unwrap_or_else(|| panic!("no last chunk in {text}"));
    assert!(
        after_last_chunk.contains("grpc-status: 0"),
        "no trailers after the last chunk: {text}"
    );
}

/// Writes `head` then `body` on a fresh connection and reads until the
/// router closes it.
async fn raw_exchange(addr: SocketAddr, head: &[u8], body: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(head).await.expect("write the head");
        stream.write_all(body).await.expect("write the body");
        let mut received = Vec::new();
        stream
            .read_to_end(&mut received)
            .await
            .expect("read the answer");
        received
    };
    tokio::time::timeout(CALL_DEADLINE, exchange)
        .await
        .expect("an answer in time")
}

/// Each way a long stream may take: 100,000 messages.
const LONG_STREAM: u64 = 100_000;

/// How much the router's resident memory may grow while a long stream
/// passes: a few buffers and allocator slack, never the stream itself
/// (100,000 messages of 64 bytes are 6 MiB framed).
const RSS_GROWTH_LIMIT_KIB: u64 = 12 * 1024;

#[tokio::test]
async fn long_streams_pass_in_order_with_flat_memory() {
    let upstream = fixture::serve_h2c().await;
    let router = SwitchyardProcess::run_with_yaml(
        &format!("routes:\n  echo:\n    upstream: {}\n", upstream.h2c_url()),
        &["--workers", "1"],
    )
    .await;
    let proxy: SocketAddr = router
        .proxy_url("")
        .trim_start_matches("http://")
        .parse()
        .expect("the proxy address");
    let mut client = fixture::connect_h2c(proxy, "echo.test").await;
    // One short call first, so the connections and their buffers exist
    // before the baseline is read.
    client.unary(message(0, "")).await.expect("a first call");
    let baseline = router.rss_kib();
    let mut peak = baseline;

    let mut received = client
        .server_stream(StreamRequest {
            count: LONG_STREAM,
            size: 64,
        })
        .await
        .expect("a server stream")
        .into_inner();
    let mut next = 0;
    while let Some(answer) = received.next().await {
        assert_eq!(answer.expect("a message").seq, next, "in order");
        next += 1;
        if next % 10_000 == 0 {
            peak = peak.max(router.rss_kib());
        }
    }
    assert_eq!(next, LONG_STREAM);
    let after_server_stream = router.rss_kib();

    let rss = || router.rss_kib();
    let sent = tokio_stream::iter(0..LONG_STREAM).map(move |seq| Message {
        seq,
        payload: vec![1; 64],
        text: String::new(),
    });
    let summary = tokio::time::timeout(CALL_DEADLINE * 3, client.client_stream(sent))
        .await
        .expect("the client stream in time")
        .expect("a summary")
        .into_inner();
    assert_eq!(summary.count, LONG_STREAM);
    assert!(summary.in_order);
    let after_client_stream = rss();
    peak = peak.max(after_client_stream);
    println!(
        "router RSS: {baseline} KiB before, {after_server_stream} KiB after {LONG_STREAM} \
         messages down, {after_client_stream} KiB after {LONG_STREAM} up, peak sampled {peak} KiB"
    );
    assert!(
        peak - baseline < RSS_GROWTH_LIMIT_KIB,
        "the router held the stream: {baseline} -> {peak} KiB"
    );
}

/// An HTTP/2 upstream that reads a request to its end and answers with
/// one data frame and, as trailers, what the request's trailers said
/// (`x-seen-checksum` for `x-checksum`), or `x-seen-checksum: none`.
async fn trailer_echo() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("the address");
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = hyper::service::service_fn(
                |request: http::Request<hyper::body::Incoming>| async move {
                    let collected = request.into_body().collect().await?;
                    let seen = collected
                        .trailers()
                        .and_then(|t| t.get("x-checksum"))
                        .cloned()
                        .unwrap_or_else(|| http::HeaderValue::from_static("none"));
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("x-seen-checksum", seen);
                    let frames: Vec<Result<Frame<bytes::Bytes>, std::convert::Infallible>> = vec![
                        Ok(Frame::data(collected.to_bytes())),
                        Ok(Frame::trailers(trailers)),
                    ];
                    let body = StreamBody::new(tokio_stream::iter(frames));
                    Ok::<_, hyper::Error>(http::Response::new(body))
                },
            );
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    (addr, task)
}

#[tokio::test]
async fn request_and_response_trailers_pass_between_http2_ends() {
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;

    let (upstream, _task) = trailer_echo().await;
    let router = TestRouter::with_yaml(format!(
        "routes:\n  trailers:\n    upstream: h2c://{upstream}\n"
    ))
    .start()
    .await;
    let tcp = tokio::net::TcpStream::connect(router.proxy_addr())
        .await
        .expect("connect");
    let (mut send, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("an h2 connection");
    tokio::spawn(connection);

    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", http::HeaderValue::from_static("c0ffee"));
    let frames: Vec<Result<Frame<bytes::Bytes>, std::convert::Infallible>> = vec![
        Ok(Frame::data(bytes::Bytes::from_static(b"payload"))),
        Ok(Frame::trailers(trailers)),
    ];
    let request = http::Request::post("http://trailers.test/upload")
        .header("te", "trailers")
        .body(StreamBody::new(tokio_stream::iter(frames)))
        .expect("a request");
    let response = tokio::time::timeout(CALL_DEADLINE, send.send_request(request))
        .await
        .expect("an answer in time")
        .expect("an answer");
    assert_eq!(response.status(), http::StatusCode::OK);
    let collected = response
        .into_body()
        .collect()
        .await
        .expect("the whole body");
    let trailers = collected.trailers().cloned().expect("response trailers");
    assert_eq!(collected.to_bytes(), "payload");
    assert_eq!(trailers["x-seen-checksum"], "c0ffee");
}

#[tokio::test]
async fn a_rate_limited_grpc_call_reads_as_resource_exhausted() {
    let upstream = fixture::serve_h2c().await;
    let router = TestRouter::with_yaml(format!(
        "routes:\n  echo:\n    upstream: {}\n    rate_limit: {{ rate: 1/m, burst: 1 }}\n",
        upstream.h2c_url()
    ))
    .start()
    .await;
    let mut client = fixture::connect_h2c(router.proxy_addr(), "echo.test").await;
    client
        .unary(message(1, ""))
        .await
        .expect("the burst's one call");
    let status = client.unary(message(2, "")).await.expect_err("limited");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.message(), "rate_limited");
}
