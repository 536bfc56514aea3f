//! Route policy through a real router (SPEC 7.1 to 7.3): conditions on
//! headers, query, cookies and the path, rewrites, header edits both ways
//! and redirects, against real upstreams on loopback and real clients
//! (HTTP/1.1, HTTP/2, and curl over TLS).

mod support;

use http::StatusCode;
use serde_json::Value;
use support::{closed_port_url, Echoed, TestCa, TestRouter, Upstream};
use switchyard::tls::PairPaths;

/// The routes of the condition tests: one upstream per route, named after
/// it, and a catch-all.
async fn conditional_routes() -> (Vec<Upstream>, TestRouter) {
    let names = ["fallback", "beta", "users-id", "v2", "tenant", "no-debug"];
    let mut upstreams = Vec::new();
    for name in names {
        upstreams.push(Upstream::echo(name).start().await);
    }
    let url = |i: usize| upstreams[i].url();
    let router = TestRouter::with_yaml(format!(
        "routes:
  fallback:
    upstream: {}
  beta:
    prefix: /shop
    cookies: {{ beta: \"on\" }}
    upstream: {}
  users-id:
    prefix: /api/users
    path_regex: \"/api/users/[0-9]+(/orders)?\"
    upstream: {}
  v2:
    prefix: /api
    query: {{ version: \"2\" }}
    upstream: {}
  tenant:
    prefix: /api
    headers: {{ x-tenant: {{ regex: \"[a-z]{{3,12}}\" }}, x-debug: {{ present: false }} }}
    upstream: {}
  no-debug:
    prefix: /api
    headers: {{ x-debug: {{ present: false }} }}
    upstream: {}
",
        url(0),
        url(1),
        url(2),
        url(3),
        url(4),
        url(5),
    ))
    .start()
    .await;
    (upstreams, router)
}

async fn served_by(router: &TestRouter, request: reqwest::RequestBuilder) -> String {
    let _ = router;
    let response = request.send().await.expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);
    Echoed::from_response(response).await.upstream
}

#[tokio::test]
async fn conditions_pick_the_route_with_precedence_by_their_number() {
    let (_upstreams, router) = conditional_routes().await;
    let cases: Vec<(reqwest::RequestBuilder, &str)> = vec![
        (router.get("/shop/cart").header("cookie", "beta=on"), "beta"),
        (
            router
                .get("/shop/cart")
                .header("cookie", "theme=dark; beta=on"),
            "beta",
        ),
        (
            router
                .get("/shop/cart")
                .header("cookie", "beta=off; beta=on"),
            "fallback",
        ),
        (router.get("/shop/cart"), "fallback"),
        (router.get("/api/users/7"), "users-id"),
        (router.get("/api/users/7/orders"), "users-id"),
        (router.get("/api/users/me"), "no-debug"),
        (router.get("/api/things?version=2"), "v2"),
        (router.get("/api/things?version=%32"), "v2"),
        (router.get("/api/things?version=3&version=2"), "no-debug"),
        (
            router
                .get("/api/things?version=2")
                .header("x-tenant", "acme"),
            "tenant",
        ),
        (
            router.get("/api/things").header("x-tenant", "acme"),
            "tenant",
        ),
        (
            router.get("/api/things").header("x-tenant", "AC"),
            "no-debug",
        ),
        (
            router
                .get("/api/things")
                .header("x-tenant", "acme")
                .header("x-debug", "1"),
            "fallback",
        ),
        (router.get("/api/things").header("x-debug", "1"), "fallback"),
    ];
    for (index, (request, expected)) in cases.into_iter().enumerate() {
        assert_eq!(served_by(&router, request).await, expected, "case {index}");
    }
}

#[tokio::test]
async fn the_explainer_names_the_condition_that_decided() {
    let (_upstreams, router) = conditional_routes().await;
    let (status, body) = router
        .admin_json("/routes/match?path=/shop/cart&cookie=beta:off")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["route"], "fallback");
    let rejected = &body["rejected"][0];
    assert_eq!(rejected["route"], "beta");
    assert_eq!(rejected["failed"], "cookie beta=\"on\"");
    assert_eq!(rejected["saw"], "\"off\"");

    let (_, body) = router
        .admin_json("/routes/match?path=/api/x&query=version%3D2&header=x-tenant:acme")
        .await;
    assert_eq!(body["route"], "tenant");
    let reason = body["reason"].as_str().expect("a reason");
    assert!(reason.contains("more conditions win: 2"), "{reason}");
    assert_eq!(body["candidates"][0]["conditions"], 2);
}

#[tokio::test]
async fn rewrites_reach_the_upstream_as_the_route_says() {
    let upstream = Upstream::echo("svc").start().await;
    let router = TestRouter::with_yaml(format!(
        "routes:
  by-regex:
    prefix: /api/users
    rewrite: {{ regex: \"^/api/users/([0-9]+)\", to: \"/v2/users/$1\" }}
    upstream: {url}
  by-regex-base:
    prefix: /base/users
    rewrite: {{ regex: \"^/base/users/(?P<id>[0-9]+)\", to: \"/users/${{id}}\" }}
    upstream: {url}/svc
  by-prefix:
    prefix: /old
    rewrite: {{ prefix: /new/place }}
    upstream: {url}/svc
  climbing:
    prefix: /climb
    rewrite: {{ regex: \"^/climb/(.*)\", to: \"/../../$1\" }}
    upstream: {url}/base
",
        url = upstream.url()
    ))
    .start()
    .await;
    for (sent, arrived, query) in [
        ("/api/users/7/orders?x=1", "/v2/users/7/orders", Some("x=1")),
        ("/api/users/me", "/api/users/me", None),
        ("/base/users/42", "/svc/users/42", None),
        ("/old/a/b", "/svc/new/place/a/b", None),
        ("/old", "/svc/new/place", None),
        ("/climb/etc", "/base/etc", None),
    ] {
        let echoed = Echoed::from_response(router.get(sent).send().await.expect("an answer")).await;
        assert_eq!(echoed.path, arrived, "{sent}");
        assert_eq!(echoed.query.as_deref(), query, "{sent}");
    }
}

/// A route with request and response edits in front of `upstream`, a
/// `respond` route and a dead upstream with response edits, and a TLS
/// listener.
async fn edited_routes(upstream: &Upstream, dead: &str) -> TestRouter {
    TestRouter::with_yaml(format!(
        "routes:
  users:
    prefix: /users
    upstream: {}
    request_headers:
      remove: [x-debug-token]
      set: {{ host: users.internal, x-client: \"{{client_ip}}\", x-seen-id: \"{{request_id}}\", x-origin: \"{{scheme}}://{{host}}\" }}
      add: {{ x-via: switchyard }}
    response_headers:
      set: {{ strict-transport-security: \"max-age=63072000\" }}
      remove: [server, x-upstream]
  dead:
    prefix: /dead
    upstream: {dead}
    response_headers: {{ add: {{ x-edited: \"yes\" }} }}
  hello:
    prefix: /hello
    respond: {{ body: hi, headers: {{ server: fixed }} }}
    response_headers: {{ remove: [server], set: {{ x-edited: \"{{request_id}}\" }} }}
",
        upstream.url()
    ))
    .start()
    .await
}

#[tokio::test]
async fn header_edits_apply_both_ways_with_placeholders() {
    let upstream = Upstream::echo("users").start().await;
    let dead = closed_port_url().await;
    let router = edited_routes(&upstream, &dead).await;

    let response = router
        .get("/users/7")
        .header("host", "API.example.com:8080")
        .header("x-debug-token", "secret")
        .header("x-request-id", "req-42")
        .header("x-via", "edge")
        .send()
        .await
        .expect("an answer");
    assert_eq!(
        response.headers()["strict-transport-security"],
        "max-age=63072000"
    );
    assert!(response.headers().get("x-upstream").is_none());
    let echoed = Echoed::from_response(response).await;
    assert_eq!(echoed.header("host"), Some("users.internal"));
    assert_eq!(
        echoed.header("x-forwarded-host"),
        Some("API.example.com:8080")
    );
    assert_eq!(echoed.header("x-debug-token"), None);
    assert_eq!(echoed.header("x-client"), Some("127.0.0.1"));
    assert_eq!(echoed.header("x-seen-id"), Some("req-42"));
    assert_eq!(echoed.header("x-origin"), Some("http://api.example.com"));
    assert_eq!(echoed.header_all("x-via"), ["edge", "switchyard"]);

    // The router's own 502 and a `respond` route get the route's edits.
    let failed = router.get("/dead").send().await.expect("an answer");
    assert_eq!(failed.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(failed.headers()["x-edited"], "yes");
    let fixed = router
        .get("/hello")
        .header("x-request-id", "req-9")
        .send()
        .await
        .expect("an answer");
    assert!(fixed.headers().get("server").is_none());
    assert_eq!(fixed.headers()["x-edited"], "req-9");
}

#[tokio::test]
async fn http2_clients_get_the_same_edits() {
    use http_body_util::{BodyExt, Empty};
    let upstream = Upstream::echo("users").start().await;
    let dead = closed_port_url().await;
    let router = edited_routes(&upstream, &dead).await;
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
    let request = http::Request::get("http://api.example.com/users/7")
        .header("x-debug-token", "secret")
        .body(Empty::<bytes::Bytes>::new())
        .expect("a request");
    let response = send.send_request(request).await.expect("an answer");
    assert_eq!(
        response.headers()["strict-transport-security"],
        "max-age=63072000"
    );
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    let echoed = Echoed::from_body(&body);
    assert_eq!(echoed.header("host"), Some("users.internal"));
    assert_eq!(echoed.header("x-debug-token"), None);
    assert_eq!(echoed.header("x-origin"), Some("http://api.example.com"));
}

#[tokio::test]
async fn redirects_answer_each_status_with_every_placeholder() {
    let router = TestRouter::with_yaml(
        "routes:
  moved:
    prefix: /old
    redirect: { to: \"https://shop.example.com/new{rest}{query}\", status: 301 }
  found:
    prefix: /found
    redirect: { to: \"{scheme}://{host}/elsewhere{path}\", status: 302 }
  see-other:
    prefix: /see
    redirect: { to: \"/other\", status: 303 }
  temporary:
    prefix: /temp
    redirect: { to: \"/t{path}{query}\", status: 307 }
  permanent:
    prefix: /perm
    redirect: { to: \"/p{rest}\" }
",
    )
    .start()
    .await;
    for (path, status, location) in [
        ("/old/a/b?x=1", 301, "https://shop.example.com/new/a/b?x=1"),
        ("/old", 301, "https://shop.example.com/new"),
        (
            "/found/z?dropped=1",
            302,
            "http://old.example.com/elsewhere/found/z",
        ),
        ("/see/x", 303, "/other"),
        ("/temp/q?k=v", 307, "/t/temp/q?k=v"),
        ("/perm/r", 308, "/p/r"),
    ] {
        let response = router
            .get(path)
            .header("host", "Old.Example.com:8080")
            .send()
            .await
            .expect("an answer");
        assert_eq!(response.status().as_u16(), status, "{path}");
        assert_eq!(response.headers()["location"], location, "{path}");
        let body = response.bytes().await.expect("a body");
        assert!(body.is_empty(), "{path}: a redirect has an empty body");
    }
}

#[tokio::test]
async fn an_http_to_https_redirect_takes_curl_to_the_tls_listener() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "curl is needed under CI"
        );
        eprintln!("skipped: no curl on this machine");
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ca = TestCa::new();
    let ca_path = ca.write(dir.path(), "ca");
    let (cert, key) = ca.leaf(&["localhost"]).write(dir.path(), "server");
    let upstream = Upstream::echo("secure").start().await;
    // The TLS port is only known once the router listens, so the redirect
    // is written into the file after start.
    let mut router = TestRouter::with_yaml(format!(
        "routes:\n  all:\n    upstream: {}\n",
        upstream.url()
    ))
    .tls(vec![PairPaths { cert, key }])
    .start()
    .await;
    let tls_port = router.tls_addr().port();
    router.write_config(&format!(
        "routes:
  to-https:
    redirect: {{ to: \"https://localhost:{tls_port}{{path}}{{query}}\", status: 301 }}
  secure:
    host: localhost
    upstream: {}
",
        upstream.url()
    ));
    let (status, body) = router.reload().await;
    assert!(status.is_success(), "{body}");
    // Plain HTTP for shop.test is redirected; curl follows to the TLS
    // listener as `localhost`, where the `secure` route serves it.
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "-L", "--max-time", "10", "--cacert"])
        .arg(&ca_path)
        .args(["--resolve", &format!("localhost:{tls_port}:127.0.0.1")])
        .args(["-H", "Host: shop.test"])
        .arg(format!(
            "http://127.0.0.1:{}/orders/7?x=1",
            router.proxy_addr().port()
        ))
        .output()
        .await
        .expect("run curl");
    assert!(
        output.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let echoed = Echoed::from_body(&output.stdout);
    assert_eq!(echoed.upstream, "secure");
    assert_eq!(echoed.path, "/orders/7");
    assert_eq!(echoed.query.as_deref(), Some("x=1"));
    assert_eq!(echoed.header("x-forwarded-proto"), Some("https"));
    router.stop().await;
}

#[tokio::test]
async fn route_tests_give_query_and_cookies() {
    let yaml = "routes:
  beta:
    cookies: { beta: \"on\" }
    query: { v: \"2\" }
    respond: { body: beta }
  rest:
    respond: { body: rest }
tests:
  - { path: /x, query: \"v=2\", cookies: { beta: \"on\" }, route: beta }
  - { path: /x, query: \"v=3\", cookies: { beta: \"on\" }, route: rest }
  - { path: /x, route: rest }
";
    TestRouter::with_yaml(yaml).start().await;
    let failing = yaml.replace("query: \"v=3\"", "query: \"v=2\"");
    let error = TestRouter::with_yaml(failing)
        .try_start()
        .await
        .err()
        .expect("a failing test refuses the file");
    assert!(error.to_string().contains("tests[1]"), "{error}");
}

#[tokio::test]
async fn routes_show_the_new_fields() {
    let upstream = Upstream::echo("users").start().await;
    let dead = closed_port_url().await;
    let router = edited_routes(&upstream, &dead).await;
    let (_, body) = router.admin_json("/routes").await;
    let routes: &Vec<Value> = body["routes"].as_array().expect("routes");
    let users = routes.iter().find(|r| r["name"] == "users").expect("users");
    assert_eq!(
        users["response_headers"]["set"]["strict-transport-security"],
        "max-age=63072000"
    );
    assert_eq!(users["request_headers"]["remove"][0], "x-debug-token");
}
