//! The admin API (SPEC 3) on its own listener, against a real router.

mod support;

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::{json_of, TestRouter, Upstream};

const TWO_ROUTES: &str = "routes:
  hello:
    prefix: /hello
    respond: { body: hi }
  teapot:
    prefix: /tea
    respond: { status: 418 }
";

/// The same file with `teapot` misspelling a field on line 7.
const TYPO: &str = "routes:
  hello:
    prefix: /hello
    respond: { body: hi }
  teapot:
    prefix: /tea
    respnd: { status: 418 }
";

/// The same file plus a third route.
const THREE_ROUTES: &str = "routes:
  hello:
    prefix: /hello
    respond: { body: hi }
  teapot:
    prefix: /tea
    respond: { status: 418 }
  bye:
    prefix: /bye
    respond: { body: bye }
";

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Parses an RFC 3339 UTC time and checks that it is recent.
fn assert_recent_rfc3339(value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"));
    assert!(text.ends_with('Z'), "not UTC: {text}");
    let at = humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    let age = SystemTime::now()
        .duration_since(at)
        .unwrap_or(Duration::ZERO);
    assert!(age < Duration::from_secs(60), "{text} is not recent");
}

#[tokio::test]
async fn healthz_reports_status_live_config_and_last_reload() {
    let router = TestRouter::with_yaml(TWO_ROUTES).start().await;

    let health = router.healthz().await;

    assert_eq!(health["status"], "ok");
    let config = &health["config"];
    assert_eq!(config["version"], 1);
    assert_eq!(config["routes"], 2);
    assert_eq!(config["sha256"], sha256_hex(TWO_ROUTES));
    assert_recent_rfc3339(&config["loaded_at"]);
    let last = &health["last_reload"];
    assert_eq!(last["ok"], true);
    assert_eq!(last["error"], Value::Null);
    assert_recent_rfc3339(&last["at"]);
}

#[tokio::test]
async fn readyz_answers_200_while_serving() {
    let router = TestRouter::with_yaml(TWO_ROUTES).start().await;

    let response = support::client()
        .get(router.admin_url("/readyz"))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn routes_shows_the_live_table() {
    let upstream = Upstream::echo("users").start().await;
    let yaml = format!(
        "routes:
  users:
    host: api.example.com
    prefix: /api/users
    headers: {{ X-Canary: \"1\" }}
    methods: [GET, POST]
    upstream: {}/v2
  hello:
    prefix: /hello
    respond: {{ body: hi }}
",
        upstream.url()
    );
    let router = TestRouter::with_yaml(yaml.as_str()).start().await;

    let (status, table) = router.admin_json("/routes").await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(table["version"], 1);
    assert_eq!(table["sha256"], sha256_hex(&yaml));
    let routes = table["routes"].as_array().expect("a routes list");
    assert_eq!(routes.len(), 2, "{table}");
    let named = |name: &str| {
        routes
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no route {name} in {table}"))
    };

    let users = named("users");
    let mut fields: Vec<&str> = users
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "cookies",
            "headers",
            "host",
            "methods",
            "name",
            "path_regex",
            "prefix",
            "protection",
            "query",
            "request_headers",
            "response_headers",
            "rewrite",
            "target"
        ]
    );
    assert_eq!(users["host"], "api.example.com");
    assert_eq!(users["prefix"], "/api/users");
    assert_eq!(users["headers"], json!({"x-canary": "1"}));
    assert_eq!(users["methods"], json!(["GET", "POST"]));
    assert!(
        users["target"]
            .to_string()
            .contains(&format!("{}/v2", upstream.url())),
        "target does not name the upstream: {}",
        users["target"]
    );

    let hello = named("hello");
    assert_eq!(hello["host"], Value::Null);
    assert_eq!(hello["prefix"], "/hello");
    assert!(!hello["target"].is_null(), "{hello}");
}

#[tokio::test]
async fn reload_after_a_valid_edit_answers_200_with_the_new_table() {
    let router = TestRouter::with_yaml(TWO_ROUTES).polling().start().await;
    router.write_config(THREE_ROUTES);

    let (status, body) = router.reload().await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["config"]["version"], 2, "{body}");
    assert_eq!(body["config"]["routes"], 3, "{body}");
    assert_eq!(body["config"]["sha256"], sha256_hex(THREE_ROUTES));
    let bye = router.get("/bye").send().await.unwrap();
    assert_eq!(bye.text().await.unwrap(), "bye");
}

#[tokio::test]
async fn reload_after_an_invalid_edit_answers_422_with_the_error_and_keeps_the_table() {
    let router = TestRouter::with_yaml(TWO_ROUTES).polling().start().await;
    router.write_config(TYPO);

    let (status, body) = router.reload().await;

    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let error = body["last_reload"]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no last_reload.error in {body}"));
    assert!(error.contains("respnd"), "{error}");
    assert!(error.contains("line 7"), "{error}");
    assert_eq!(body["last_reload"]["ok"], false);
    assert_eq!(body["config"]["version"], 1);
    let tea = router.get("/tea").send().await.unwrap();
    assert_eq!(tea.status(), StatusCode::IM_A_TEAPOT);
}

#[tokio::test]
async fn reloads_lists_every_admin_attempt_newest_first() {
    let router = TestRouter::with_yaml(TWO_ROUTES).polling().start().await;
    let (first, _) = router.reload().await;
    router.write_config(TYPO);
    let (second, _) = router.reload().await;
    router.write_config(THREE_ROUTES);
    let (third, _) = router.reload().await;
    assert_eq!(
        [first, second, third],
        [
            StatusCode::OK,
            StatusCode::UNPROCESSABLE_ENTITY,
            StatusCode::OK
        ]
    );

    let (status, body) = router.admin_json("/reloads").await;

    assert_eq!(status, StatusCode::OK);
    let admin: Vec<&Value> = body["reloads"]
        .as_array()
        .expect("a reloads list")
        .iter()
        .filter(|attempt| attempt["trigger"] == "admin")
        .collect();
    let results: Vec<&Value> = admin.iter().map(|a| &a["result"]).collect();
    // The newest may have found the poller's work done already.
    assert!(
        matches!(results.as_slice(), [newest, error, unchanged]
            if (*newest == "ok" || *newest == "unchanged") && *error == "error" && *unchanged == "unchanged"),
        "admin attempts, newest first: {body}"
    );
    for attempt in &admin {
        for field in [
            "at", "trigger", "result", "version", "sha256", "diff", "error",
        ] {
            assert!(attempt.get(field).is_some(), "no `{field}` in {attempt}");
        }
        assert_recent_rfc3339(&attempt["at"]);
    }
    assert_eq!(admin[0]["version"], 2);
    assert_eq!(admin[0]["sha256"], sha256_hex(THREE_ROUTES));
    assert!(admin[1]["error"].as_str().unwrap().contains("respnd"));
    assert_eq!(admin[1]["version"], 1);
    assert_eq!(admin[2]["error"], Value::Null);
}

#[tokio::test]
async fn reloads_shows_the_diff_of_a_reload() {
    let router = TestRouter::with_yaml(TWO_ROUTES).polling().start().await;
    router.write_config(
        "routes:
  hello:
    prefix: /hello
    respond: { body: hello again }
  bye:
    prefix: /bye
    respond: { body: bye }
",
    );

    let (status, _) = router.reload().await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = router.admin_json("/reloads").await;

    let ok = body["reloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|attempt| attempt["result"] == "ok")
        .unwrap_or_else(|| panic!("no successful reload in {body}"));
    assert_eq!(
        ok["diff"],
        json!({"added": ["bye"], "removed": ["teapot"], "changed": ["hello"]})
    );
}

#[tokio::test]
async fn admin_api_is_not_on_the_proxy_listener_and_routes_are_not_on_the_admin_listener() {
    let router = TestRouter::with_yaml(TWO_ROUTES).start().await;

    let on_proxy = router.get("/healthz").send().await.unwrap();
    assert_eq!(on_proxy.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_of(on_proxy).await["error"], "no_route");

    let on_admin = support::client()
        .get(router.admin_url("/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(on_admin.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn routes_match_names_the_winning_route_and_the_normalized_path() {
    let router = TestRouter::with_yaml(TWO_ROUTES).start().await;

    let (status, found) = router
        .admin_json("/routes/match?host=any.test&path=/x/../tea/pot&method=GET")
        .await;
    let (missing_status, missing) = router
        .admin_json("/routes/match?host=any.test&path=/nowhere")
        .await;

    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["route"], "teapot");
    assert_eq!(found["path"], "/tea/pot");
    assert!(found["candidates"].is_array(), "{found}");
    assert!(found["reason"].is_string(), "{found}");
    assert_eq!(missing_status, StatusCode::NOT_FOUND);
    assert_eq!(missing["error"], "no_route");
}

#[tokio::test]
async fn dashboard_is_one_self_contained_html_page() {
    let router = TestRouter::with_yaml(TWO_ROUTES).start().await;

    let response = support::client()
        .get(router.admin_url("/"))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    // The routes are filled in by the page's script from the admin API
    // (tests/dashboard.rs checks that in a real browser); here: nothing is
    // fetched from anywhere but this router.
    let page = response.text().await.unwrap();
    assert!(
        page.contains("\"routes\"") && page.contains("\"reloads\""),
        "{page}"
    );
    for external in [
        "src=\"http",
        "href=\"http",
        "src=\"//",
        "href=\"//",
        "@import",
    ] {
        assert!(!page.contains(external), "page loads {external}...: {page}");
    }
}

/// Sends `POST /reload` to the admin service as if from `peer`, the way the
/// admin listener hands a request over (`ConnectInfo`). A non-loopback peer
/// cannot be produced over 127.0.0.1, so the service is driven directly.
async fn reload_from(peer: &str, allow_remote_changes: bool) -> StatusCode {
    use tower::ServiceExt;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = dir.path().join("routes.yaml");
    std::fs::write(&config, TWO_ROUTES).expect("write the route file");
    let reloader = std::sync::Arc::new(
        switchyard::reload::reloader::Reloader::start(&config).expect("a valid file"),
    );
    let app = switchyard::admin::app(switchyard::admin::AdminState {
        reloader,
        readiness: Default::default(),
        allow_remote_changes,
        tls: None,
        history: Default::default(),
    });
    let mut request = axum::extract::Request::post("/reload")
        .body(axum::body::Body::empty())
        .expect("a request");
    let peer: std::net::SocketAddr = peer.parse().expect("an address");
    request
        .extensions_mut()
        .insert(switchyard::proxy::server::Peer::new(peer));
    let response = app.oneshot(request).await.expect("the service answers");
    StatusCode::from_u16(response.status().as_u16()).expect("a status")
}

#[tokio::test]
async fn reload_is_refused_to_remote_peers_unless_allowed() {
    assert_eq!(
        reload_from("10.1.2.3:40000", false).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        reload_from("[2001:db8::1]:40000", false).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(reload_from("127.0.0.1:40000", false).await, StatusCode::OK);
    assert_eq!(reload_from("[::1]:40000", false).await, StatusCode::OK);
    assert_eq!(
        reload_from("[::ffff:127.0.0.1]:40000", false).await,
        StatusCode::OK
    );
    assert_eq!(reload_from("10.1.2.3:40000", true).await, StatusCode::OK);
}

#[tokio::test]
async fn reads_are_served_to_every_peer() {
    use tower::ServiceExt;
    let router = TestRouter::with_yaml(TWO_ROUTES).start().await;
    let app = switchyard::admin::app(switchyard::admin::AdminState {
        reloader: std::sync::Arc::clone(router.reloader()),
        readiness: Default::default(),
        allow_remote_changes: false,
        tls: None,
        history: Default::default(),
    });
    for path in ["/healthz", "/metrics", "/routes", "/upstreams", "/"] {
        let mut request = axum::extract::Request::get(path)
            .body(axum::body::Body::empty())
            .expect("a request");
        let peer: std::net::SocketAddr = "10.1.2.3:40000".parse().expect("an address");
        request
            .extensions_mut()
            .insert(switchyard::proxy::server::Peer::new(peer));
        let response = app
            .clone()
            .oneshot(request)
            .await
            .expect("the service answers");
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
}

#[tokio::test]
async fn a_rejected_reload_reports_every_error_in_healthz_and_reloads() {
    let router = TestRouter::with_yaml(TWO_ROUTES).start().await;
    router.write_config(
        "routes:\n  a:\n    prefix: nope\n    respond: {}\n  b:\n    upstream: gopher://x\n",
    );
    let (status, _) = router.reload().await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let health = router.healthz().await;
    let error = health["last_reload"]["error"].as_str().expect("an error");
    for part in [
        "2 errors",
        "routes.a.prefix",
        "line 3",
        "routes.b.upstream",
        "line 6",
    ] {
        assert!(error.contains(part), "{part} missing from: {error}");
    }
    let (_, reloads) = router.admin_json("/reloads").await;
    let latest = reloads["reloads"][0]["error"].as_str().expect("an error");
    assert!(
        latest.contains("routes.a.prefix") && latest.contains("routes.b.upstream"),
        "{latest}"
    );
    // The old table still serves.
    assert_eq!(router.version().await, 1);
}

#[tokio::test]
async fn history_charts_the_traffic_of_each_route_and_drops_a_removed_one() {
    let mut router = TestRouter::with_yaml(TWO_ROUTES).start().await;
    for path in ["/hello", "/hello", "/tea"] {
        router.get(path).send().await.expect("the proxy answers");
    }
    // The sampler reads the counters once a second; a second with both
    // routes' requests in it shows as a rate above zero.
    let history = support::eventually(Duration::from_secs(10), || async {
        let (status, history) = router.admin_json("/history").await;
        assert_eq!(status, StatusCode::OK);
        let rated = |name: &str| {
            history["routes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["route"] == name)
                .flat_map(|r| r["rate"].as_array().cloned().unwrap_or_default())
                .any(|rate| rate.as_f64() > Some(0.0))
        };
        (rated("hello") && rated("teapot")).then_some(history)
    })
    .await;
    assert_eq!(history["interval_ms"], 1000);
    assert_eq!(history["capacity"], 900);
    let teapot = history["routes"]
        .as_array()
        .and_then(|routes| routes.iter().find(|r| r["route"] == "teapot"))
        .expect("teapot charted");
    let samples = teapot["rate"].as_array().expect("rates").len();
    assert!(samples <= history["at"].as_array().expect("times").len());
    assert_eq!(
        teapot["error_share"].as_array().map(Vec::len),
        Some(samples)
    );
    assert_eq!(teapot["p99_ms"].as_array().map(Vec::len), Some(samples));

    // A reload that removes a route removes its series at the next tick.
    router.write_config("routes:\n  hello:\n    prefix: /hello\n    respond: { body: hi }\n");
    assert_eq!(router.reload().await.0, StatusCode::OK);
    support::eventually(Duration::from_secs(10), || async {
        let (_, history) = router.admin_json("/history").await;
        let names: Vec<&str> = history["routes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["route"].as_str())
            .collect();
        names == ["hello", "_none"]
    })
    .await;
    router.stop().await;
}
