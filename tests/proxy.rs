//! The proxy through the wire (SPEC 2 targets, SPEC 4): real clients, a real
//! router and real upstreams on 127.0.0.1.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::IntoResponse;
use axum::routing::get;
use reqwest::{Method, StatusCode};
use support::{
    assert_timed_out_after, closed_port_url, eventually, json_of, read_request_head, send_raw,
    send_raw_until_closed, streamed_body, Echoed, TestRouter, TimeoutRoutes, Upstream,
    SHORT_TIMEOUT,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A table with one catch-all route to `upstream`.
fn catch_all(upstream: &str) -> String {
    format!(
        "routes:
  all:
    upstream: {upstream}
"
    )
}

async fn echo_behind_router(name: &str) -> (Upstream, TestRouter) {
    let upstream = Upstream::echo(name).start().await;
    let router = TestRouter::with_yaml(catch_all(&upstream.url()))
        .start()
        .await;
    (upstream, router)
}

#[tokio::test]
async fn method_path_query_and_body_arrive_verbatim() {
    let (_upstream, router) = echo_behind_router("svc").await;

    let response = router
        .request(Method::PATCH, "/orders/a%20b/%2Fx?a=1&b=%2F&c&d=%7e&e=x+y")
        .body("hello upstream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echoed = Echoed::from_response(response).await;

    assert_eq!(echoed.method, "PATCH");
    assert_eq!(echoed.path, "/orders/a%20b/%2Fx");
    assert_eq!(echoed.query.as_deref(), Some("a=1&b=%2F&c&d=%7e&e=x+y"));
    assert_eq!(echoed.body, "hello upstream");
    assert_eq!(echoed.body_len, 14);
    assert_eq!(echoed.header("content-length"), Some("14"));
}

#[tokio::test]
async fn host_is_kept_as_the_client_sent_it() {
    let upstream = Upstream::echo("api").start().await;
    let router = TestRouter::with_yaml(format!(
        "routes:
  api:
    host: api.example.com
    upstream: {}
",
        upstream.url()
    ))
    .start()
    .await;

    let response = router
        .get("/")
        .header("host", "API.Example.com:8443")
        .send()
        .await
        .unwrap();
    let echoed = Echoed::from_response(response).await;

    assert_eq!(echoed.header("host"), Some("API.Example.com:8443"));
    assert_eq!(
        echoed.header("x-forwarded-host"),
        Some("API.Example.com:8443")
    );
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let (_upstream, router) = echo_behind_router("svc").await;

    // A raw request, because HTTP clients manage some of these headers
    // themselves and would not send them as written.
    let answer = send_raw(
        router.proxy_addr(),
        "GET /hop HTTP/1.1\r\n\
         Host: svc.test\r\n\
         Connection: close, X-Named-Hop\r\n\
         X-Named-Hop: secret\r\n\
         Keep-Alive: timeout=5\r\n\
         TE: trailers\r\n\
         Trailer: X-Checksum\r\n\
         Upgrade: h2c\r\n\
         Proxy-Connection: keep-alive\r\n\
         X-End-To-End: kept\r\n\
         \r\n",
    )
    .await;
    assert_eq!(
        answer.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
    let echoed = Echoed::from_body(&answer.body);

    // `TE: trailers` is the one TE that passes (SPEC 4.3): gRPC needs it.
    assert_eq!(echoed.header("te"), Some("trailers"));
    for hop in [
        "x-named-hop",
        "keep-alive",
        "trailer",
        "upgrade",
        "proxy-connection",
    ] {
        assert_eq!(echoed.header(hop), None, "{hop} was forwarded");
    }
    for connection in echoed.header_all("connection") {
        assert!(
            !connection.to_ascii_lowercase().contains("x-named-hop"),
            "the client's Connection header was forwarded: {connection}"
        );
    }
    assert_eq!(echoed.header("x-end-to-end"), Some("kept"));
}

#[tokio::test]
async fn router_adds_no_headers_of_its_own_beyond_forwarding_ones() {
    let (_upstream, router) = echo_behind_router("svc").await;

    // A raw request, because HTTP clients add headers such as `Accept`.
    let answer = send_raw(
        router.proxy_addr(),
        "GET / HTTP/1.1\r\nHost: svc.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    let echoed = Echoed::from_body(&answer.body);

    // reqwest inserts `Accept: */*` into any request without one and has no
    // way to turn that off (its default headers merge, they never replace).
    // RFC 9110 12.5.1 gives a missing Accept exactly that meaning, so the
    // upstream is told nothing the client did not imply.
    let names: Vec<&str> = echoed.headers.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "accept",
            "host",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-request-id"
        ]
    );
    assert_eq!(echoed.header("accept"), Some("*/*"));
}

#[tokio::test]
async fn forwarded_headers_append_the_client_and_are_set_by_the_router() {
    let (_upstream, router) = echo_behind_router("svc").await;

    let response = router
        .get("/")
        .header("host", "shop.test")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "spoofed.test")
        .send()
        .await
        .unwrap();
    let echoed = Echoed::from_response(response).await;

    assert_eq!(
        echoed.header_all("x-forwarded-for"),
        ["203.0.113.7, 127.0.0.1"]
    );
    assert_eq!(echoed.header("x-forwarded-proto"), Some("http"));
    assert_eq!(echoed.header("x-forwarded-host"), Some("shop.test"));
}

#[tokio::test]
async fn forwarded_for_is_the_client_address_when_none_was_sent() {
    let (_upstream, router) = echo_behind_router("svc").await;

    let echoed = Echoed::from_response(router.get("/").send().await.unwrap()).await;

    assert_eq!(echoed.header_all("x-forwarded-for"), ["127.0.0.1"]);
}

#[tokio::test]
async fn request_id_sent_by_the_client_is_kept_both_ways() {
    let (_upstream, router) = echo_behind_router("svc").await;

    let response = router
        .get("/")
        .header("x-request-id", "trace-123")
        .send()
        .await
        .unwrap();
    let returned = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let echoed = Echoed::from_response(response).await;

    assert_eq!(echoed.header("x-request-id"), Some("trace-123"));
    assert_eq!(returned, "trace-123");
}

#[tokio::test]
async fn request_id_is_generated_when_absent_and_returned_to_the_client() {
    let (_upstream, router) = echo_behind_router("svc").await;

    let first = router.get("/").send().await.unwrap();
    let returned = first.headers()["x-request-id"].to_str().unwrap().to_owned();
    let echoed = Echoed::from_response(first).await;
    let second = router.get("/").send().await.unwrap();

    assert!(!returned.is_empty());
    assert_eq!(echoed.header("x-request-id"), Some(returned.as_str()));
    assert_ne!(
        second.headers()["x-request-id"].to_str().unwrap(),
        returned,
        "each request gets its own id"
    );
}

#[tokio::test]
async fn request_without_body_arrives_without_body_framing() {
    let (_upstream, router) = echo_behind_router("svc").await;

    for method in [Method::GET, Method::DELETE, Method::OPTIONS] {
        let response = router
            .request(method.clone(), "/plain")
            .send()
            .await
            .unwrap();
        let echoed = Echoed::from_response(response).await;

        assert_eq!(echoed.method, method.as_str());
        assert_eq!(echoed.header("transfer-encoding"), None, "{method}");
        assert_eq!(echoed.header("content-length"), None, "{method}");
        assert_eq!(echoed.body_len, 0, "{method}");
    }
}

#[tokio::test]
async fn strip_prefix_puts_the_rest_of_the_path_under_the_base_path() {
    let upstream = Upstream::echo("users").start().await;
    let router = TestRouter::with_yaml(format!(
        "routes:
  users:
    prefix: /api/users
    upstream: {}/v2
    strip_prefix: true
",
        upstream.url()
    ))
    .start()
    .await;

    let nested =
        Echoed::from_response(router.get("/api/users/7?full=1").send().await.unwrap()).await;
    let exact = Echoed::from_response(router.get("/api/users").send().await.unwrap()).await;

    assert_eq!(nested.path, "/v2/7");
    assert_eq!(nested.query.as_deref(), Some("full=1"));
    assert_eq!(exact.path, "/v2");
}

#[tokio::test]
async fn without_strip_prefix_the_whole_path_goes_under_the_base_path() {
    let upstream = Upstream::echo("users").start().await;
    let router = TestRouter::with_yaml(format!(
        "routes:
  users:
    prefix: /api/users
    upstream: {}/v2
",
        upstream.url()
    ))
    .start()
    .await;

    let echoed = Echoed::from_response(router.get("/api/users/7").send().await.unwrap()).await;

    assert_eq!(echoed.path, "/v2/api/users/7");
}

/// Large enough that a router buffering whole bodies would be obvious in
/// the memory tests, small enough to pass through a debug build quickly.
const LARGE_BODY: u64 = 64 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_upload_streams_through_to_the_upstream() {
    let (_upstream, router) = echo_behind_router("sink").await;

    let response = router
        .request(Method::PUT, "/upload")
        .body(streamed_body(LARGE_BODY, CHUNK))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echoed = Echoed::from_response(response).await;

    assert_eq!(echoed.body_len, LARGE_BODY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_download_streams_through_to_the_client() {
    let upstream = Upstream::streaming(LARGE_BODY, CHUNK).start().await;
    let router = TestRouter::with_yaml(catch_all(&upstream.url()))
        .start()
        .await;

    let mut response = router.get("/download").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut received: u64 = 0;
    while let Some(chunk) = response.chunk().await.unwrap() {
        assert!(chunk.iter().all(|&b| b == b'x'), "body bytes changed");
        received += chunk.len() as u64;
    }

    assert_eq!(received, LARGE_BODY);
}

#[tokio::test]
async fn unmatched_request_gets_404_no_route_with_host_and_path() {
    let router = TestRouter::with_yaml(
        "routes:
  hello:
    prefix: /hello
    respond: { body: hi }
",
    )
    .start()
    .await;

    let response = router
        .get("/missing")
        .header("host", "Shop.Example.com:8080")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        json_of(response).await,
        serde_json::json!({"error": "no_route", "host": "shop.example.com", "path": "/missing"})
    );
}

#[tokio::test]
async fn closed_upstream_port_gets_502_upstream_unavailable() {
    let router = TestRouter::with_yaml(catch_all(&closed_port_url().await))
        .start()
        .await;

    let response = router.get("/").send().await.unwrap();

    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let body = json_of(response).await;
    assert_eq!(body["error"], "upstream_unavailable", "{body}");
}

#[tokio::test]
async fn upstream_that_never_answers_gets_504_after_the_route_timeout() {
    let upstream = Upstream::silent().start().await;
    let router = TestRouter::with_yaml(format!(
        "routes:
  slow:
    upstream: {}
    timeout: 200ms
",
        upstream.url()
    ))
    .start()
    .await;

    let started = Instant::now();
    let response = router.get("/").send().await.unwrap();
    let waited = started.elapsed();

    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    let body = json_of(response).await;
    assert_eq!(body["error"], "upstream_timeout", "{body}");
    assert_timed_out_after(waited, Duration::from_millis(200));
    assert_eq!(
        upstream.connections(),
        1,
        "the request reached the upstream"
    );
}

/// The route timeout's timers are kept and reused from request to request
/// on a worker thread; one that served answered requests on a connection
/// must still end the next request on it that gets no answer.
#[tokio::test]
async fn route_timeout_still_ends_a_request_after_answered_ones_on_its_connection() {
    let routes = TimeoutRoutes::start().await;

    let stream = TcpStream::connect(routes.router.proxy_addr())
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let mut send = |path: &'static str| {
        let request = http::Request::get(path)
            .header("host", "svc.test")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        sender.send_request(request)
    };
    for round in 0..3 {
        for _ in 0..5 {
            let answered = send("/fast").await.unwrap();
            assert_eq!(answered.status(), StatusCode::OK, "round {round}");
            http_body_util::BodyExt::collect(answered.into_body())
                .await
                .unwrap();
        }
        let started = Instant::now();
        // Bounded, so that a timer that wakes no one fails the test.
        let timed_out = tokio::time::timeout(Duration::from_secs(5), send("/slow"))
            .await
            .expect("the route timeout ended the request")
            .unwrap();
        let waited = started.elapsed();
        assert_eq!(
            timed_out.status(),
            StatusCode::GATEWAY_TIMEOUT,
            "round {round}"
        );
        http_body_util::BodyExt::collect(timed_out.into_body())
            .await
            .unwrap();
        assert_timed_out_after(waited, SHORT_TIMEOUT);
    }
    assert_eq!(
        routes.answering.connections(),
        1,
        "one upstream connection, reused"
    );
    connection.abort();
}

#[tokio::test]
async fn respond_route_answers_with_its_status_body_and_headers() {
    let router = TestRouter::with_yaml(
        "routes:
  teapot:
    prefix: /tea
    respond:
      status: 418
      body: \"short and stout\\n\"
      headers: { content-type: text/plain, x-brewed-by: switchyard }
",
    )
    .start()
    .await;

    let response = router.get("/tea/earl-grey").send().await.unwrap();

    assert_eq!(response.status(), StatusCode::IM_A_TEAPOT);
    assert_eq!(response.headers()["content-type"], "text/plain");
    assert_eq!(response.headers()["x-brewed-by"], "switchyard");
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(response.text().await.unwrap(), "short and stout\n");
}

#[tokio::test]
async fn upstreams_take_turns_round_robin() {
    let a = Upstream::echo("a").start().await;
    let b = Upstream::echo("b").start().await;
    let router = TestRouter::with_yaml(format!(
        "routes:
  pool:
    upstreams: [{}, {}]
",
        a.url(),
        b.url()
    ))
    .start()
    .await;

    let mut order = Vec::new();
    for _ in 0..4 {
        let response = router.get("/").send().await.unwrap();
        order.push(
            response.headers()["x-upstream"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }

    assert!(
        order == ["a", "b", "a", "b"] || order == ["b", "a", "b", "a"],
        "not alternating: {order:?}"
    );
}

/// Three upstreams named for the route class that reaches them.
async fn host_classes() -> (Upstream, Upstream, Upstream, TestRouter) {
    let exact = Upstream::echo("exact").start().await;
    let wildcard = Upstream::echo("wildcard").start().await;
    let any = Upstream::echo("any").start().await;
    let router = TestRouter::with_yaml(format!(
        "routes:
  any-host:
    upstream: {}
  wildcard-host:
    host: \"*.example.com\"
    upstream: {}
  exact-host:
    host: api.example.com
    upstream: {}
",
        any.url(),
        wildcard.url(),
        exact.url()
    ))
    .start()
    .await;
    (exact, wildcard, any, router)
}

/// Which upstream answered, by its `x-upstream` header.
async fn upstream_for(request: reqwest::RequestBuilder) -> String {
    let response = request.send().await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{:?}",
        response.headers()
    );
    response.headers()["x-upstream"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn exact_host_beats_wildcard_host_beats_no_host() {
    let (_exact, _wildcard, _any, router) = host_classes().await;

    let on = |host: &str| router.get("/").header("host", host);

    assert_eq!(upstream_for(on("api.example.com")).await, "exact");
    assert_eq!(upstream_for(on("www.example.com")).await, "wildcard");
    assert_eq!(upstream_for(on("example.com")).await, "any");
    assert_eq!(upstream_for(on("other.test")).await, "any");
}

#[tokio::test]
async fn header_conditioned_canary_route_wins_only_when_the_header_matches() {
    let stable = Upstream::echo("stable").start().await;
    let canary = Upstream::echo("canary").start().await;
    let router = TestRouter::with_yaml(format!(
        "routes:
  users:
    prefix: /api/users
    upstream: {}
  users-canary:
    prefix: /api/users
    headers: {{ x-canary: \"1\" }}
    upstream: {}
",
        stable.url(),
        canary.url()
    ))
    .start()
    .await;

    let users = || router.get("/api/users/7");

    assert_eq!(upstream_for(users()).await, "stable");
    assert_eq!(
        upstream_for(users().header("x-canary", "0")).await,
        "stable"
    );
    assert_eq!(
        upstream_for(users().header("X-Canary", "1")).await,
        "canary"
    );
}

#[tokio::test]
async fn route_with_methods_wins_only_for_those_methods() {
    let reads = Upstream::echo("reads").start().await;
    let writes = Upstream::echo("writes").start().await;
    let router = TestRouter::with_yaml(format!(
        "routes:
  items:
    prefix: /items
    upstream: {}
  item-writes:
    prefix: /items
    methods: [POST, PUT]
    upstream: {}
",
        reads.url(),
        writes.url()
    ))
    .start()
    .await;

    let items = |method| router.request(method, "/items/1");

    assert_eq!(upstream_for(items(Method::GET)).await, "reads");
    assert_eq!(upstream_for(items(Method::POST)).await, "writes");
    assert_eq!(upstream_for(items(Method::PUT)).await, "writes");
    assert_eq!(upstream_for(items(Method::DELETE)).await, "reads");
}

#[tokio::test]
async fn redirects_are_returned_to_the_client_not_followed() {
    let upstream = Upstream::handler(
        axum::Router::new()
            .route(
                "/start",
                get(|| async { (StatusCode::FOUND, [("location", "/elsewhere")], "moved") }),
            )
            .route("/elsewhere", get(|| async { "followed" })),
    )
    .start()
    .await;
    let router = TestRouter::with_yaml(catch_all(&upstream.url()))
        .start()
        .await;

    let response = router.get("/start").send().await.unwrap();

    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(response.headers()["location"], "/elsewhere");
    assert_eq!(response.text().await.unwrap(), "moved");
    assert_eq!(upstream.requests(), 1);
}

/// `hello, compressed world\n`, gzipped (`gzip -n -9`).
const GZIPPED: &[u8] = &[
    31, 139, 8, 0, 0, 0, 0, 0, 2, 3, 203, 72, 205, 201, 201, 215, 81, 72, 206, 207, 45, 40, 74, 45,
    46, 78, 77, 81, 40, 207, 47, 202, 73, 225, 2, 0, 63, 186, 57, 60, 24, 0, 0, 0,
];

#[tokio::test]
async fn compressed_bodies_pass_through_untouched() {
    let upstream = Upstream::handler(axum::Router::new().fallback(|| async {
        (
            [("content-encoding", "gzip"), ("content-type", "text/plain")],
            GZIPPED,
        )
            .into_response()
    }))
    .start()
    .await;
    let router = TestRouter::with_yaml(catch_all(&upstream.url()))
        .start()
        .await;

    let response = router
        .get("/")
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    assert_eq!(response.bytes().await.unwrap().as_ref(), GZIPPED);
}

#[tokio::test]
async fn dot_segments_are_resolved_before_matching_and_forwarding() {
    let admin = Upstream::echo("admin").start().await;
    let public = Upstream::echo("public").start().await;
    let router = TestRouter::with_yaml(format!(
        "routes:
  admin:
    prefix: /admin
    upstream: {}
  public:
    prefix: /public
    upstream: {}
",
        admin.url(),
        public.url()
    ))
    .start()
    .await;

    for target in [
        "/public/../admin",
        "/public/%2e%2E/admin",
        "/public/.%2e/admin",
        "/public/./../../../admin",
        "/public\\..\\admin",
    ] {
        let answer = send_raw(
            router.proxy_addr(),
            &format!("GET {target} HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(answer.status, 200, "{target}");
        let echoed = Echoed::from_body(&answer.body);
        assert_eq!(
            (echoed.upstream.as_str(), echoed.path.as_str()),
            ("admin", "/admin"),
            "{target}"
        );
    }
}

#[tokio::test]
async fn absolute_form_target_routes_and_forwards_the_same_host() {
    let api = Upstream::echo("api").start().await;
    let other = Upstream::echo("other").start().await;
    let router = TestRouter::with_yaml(format!(
        "routes:
  api:
    host: api.example.com
    upstream: {}
  other:
    host: other.test
    upstream: {}
",
        api.url(),
        other.url()
    ))
    .start()
    .await;

    // RFC 9112 3.2.2: with an absolute-form target, `Host` is ignored.
    let answer = send_raw(
        router.proxy_addr(),
        "GET http://api.example.com/x HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 200);
    let echoed = Echoed::from_body(&answer.body);

    assert_eq!(echoed.upstream, "api");
    assert_eq!(
        (echoed.header("host"), echoed.header("x-forwarded-host")),
        (Some("api.example.com"), Some("api.example.com")),
        "the upstream must see the host the request was routed on"
    );
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_not_returned() {
    let upstream = Upstream::handler(axum::Router::new().fallback(|| async {
        (
            [
                ("connection", "x-upstream-hop"),
                ("x-upstream-hop", "secret"),
                ("keep-alive", "timeout=5"),
                ("x-end-to-end", "kept"),
            ],
            "ok",
        )
    }))
    .start()
    .await;
    let router = TestRouter::with_yaml(catch_all(&upstream.url()))
        .start()
        .await;

    let response = router.get("/").send().await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers();
    assert!(!headers.contains_key("x-upstream-hop"), "{headers:?}");
    assert!(!headers.contains_key("keep-alive"), "{headers:?}");
    assert_eq!(headers["x-end-to-end"], "kept");
}

#[tokio::test]
async fn invalid_upstream_response_gets_502() {
    let upstream = Upstream::tcp(|mut stream| async move {
        read_request_head(&mut stream).await;
        let _ = stream.write_all(b"this is not HTTP\r\n\r\n").await;
    })
    .start()
    .await;
    let router = TestRouter::with_yaml(catch_all(&upstream.url()))
        .start()
        .await;

    let response = router.get("/").send().await.unwrap();

    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let body = json_of(response).await;
    assert!(body["error"].is_string(), "{body}");
}

/// An upstream that starts a response and closes the connection after
/// `partial` (the head and part of the body).
fn breaks_off_after(partial: &'static [u8]) -> support::UpstreamSpec {
    Upstream::tcp(move |mut stream| async move {
        read_request_head(&mut stream).await;
        let _ = stream.write_all(partial).await;
    })
}

/// The upstream sends `partial` and closes; the client must see an error,
/// never a body that ends as if it were complete.
async fn assert_broken_body_is_not_complete(partial: &'static [u8]) {
    let upstream = breaks_off_after(partial).start().await;
    let router = TestRouter::with_yaml(catch_all(&upstream.url()))
        .start()
        .await;

    let response = router.get("/").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let body = response.bytes().await;
    assert!(body.is_err(), "a broken body arrived as complete: {body:?}");
}

#[tokio::test]
async fn chunked_body_broken_off_upstream_does_not_look_complete() {
    assert_broken_body_is_not_complete(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .await;
}

#[tokio::test]
async fn sized_body_broken_off_upstream_does_not_look_complete() {
    assert_broken_body_is_not_complete(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello")
        .await;
}

#[tokio::test]
async fn client_that_goes_away_cancels_its_upstream_request() {
    let received = Arc::new(AtomicBool::new(false));
    let closed = Arc::new(AtomicBool::new(false));
    let upstream = Upstream::tcp({
        let (received, closed) = (Arc::clone(&received), Arc::clone(&closed));
        move |mut stream| {
            let (received, closed) = (Arc::clone(&received), Arc::clone(&closed));
            async move {
                if read_request_head(&mut stream).await.is_none() {
                    return;
                }
                received.store(true, Ordering::SeqCst);
                // Never answer; wait for the router to give up the request.
                let mut buf = [0u8; 1024];
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                closed.store(true, Ordering::SeqCst);
            }
        }
    })
    .start()
    .await;
    let router = TestRouter::with_yaml(catch_all(&upstream.url()))
        .start()
        .await;

    let mut client = TcpStream::connect(router.proxy_addr()).await.unwrap();
    client
        .write_all(b"GET /slow HTTP/1.1\r\nHost: svc.test\r\n\r\n")
        .await
        .unwrap();
    eventually(Duration::from_secs(2), || async {
        received.load(Ordering::SeqCst)
    })
    .await;
    drop(client);

    eventually(Duration::from_secs(2), || async {
        closed.load(Ordering::SeqCst)
    })
    .await;
}

#[tokio::test]
async fn request_with_conflicting_content_lengths_gets_400_and_is_not_forwarded() {
    let (upstream, router) = echo_behind_router("svc").await;

    let answer = send_raw_until_closed(
        router.proxy_addr(),
        "POST /first HTTP/1.1\r\n\
         Host: svc.test\r\n\
         Content-Length: 5\r\n\
         Content-Length: 6\r\n\
         \r\n\
         hello!",
    )
    .await;

    assert!(answer.starts_with("HTTP/1.1 400"), "answer: {answer:?}");
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn request_headers_over_64_kib_get_431() {
    let (upstream, router) = echo_behind_router("svc").await;

    // Just over the limit (the proxy's check), and past hyper's read buffer
    // (hyper's own answer); in many headers or in one.
    let many: String = (0..66)
        .map(|i| format!("X-Part-{i:02}: {}\r\n", "b".repeat(1000)))
        .collect();
    for headers in [
        many,
        format!("X-Big: {}\r\n", "a".repeat(65 * 1024)),
        format!("X-Big: {}\r\n", "a".repeat(300 * 1024)),
    ] {
        let answer = send_raw_until_closed(
            router.proxy_addr(),
            &format!("GET / HTTP/1.1\r\nHost: svc.test\r\n{headers}Connection: close\r\n\r\n"),
        )
        .await;
        assert!(
            answer.starts_with("HTTP/1.1 431"),
            "answer: {:?}",
            &answer[..answer.len().min(200)]
        );
    }
    assert_eq!(upstream.requests(), 0);

    // Just under it passes.
    let answer = send_raw_until_closed(
        router.proxy_addr(),
        &format!(
            "GET / HTTP/1.1\r\nHost: svc.test\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(60 * 1024)
        ),
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "answer: {:?}",
        &answer[..answer.len().min(200)]
    );
    assert_eq!(upstream.requests(), 1);
}
