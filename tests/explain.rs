//! `GET /routes/match` against the precedence rules of SPEC 2 rule 3, and
//! against the proxy itself: every route answers with its own name, so the
//! explainer's winner can be checked against where a real request goes.

mod support;

use support::TestRouter;

const ROUTES: &str = r#"
routes:
  exact:
    host: api.example.com
    prefix: /
    respond: { body: exact }
  wild:
    host: "*.example.com"
    prefix: /
    respond: { body: wild }
  deeper-wild:
    host: "*.eu.example.com"
    prefix: /
    respond: { body: deeper-wild }
  users:
    prefix: /users
    respond: { body: users }
  users-list:
    prefix: /users/list
    respond: { body: users-list }
  users-canary:
    prefix: /users
    headers: { x-canary: "1" }
    respond: { body: users-canary }
  users-write:
    prefix: /users
    methods: [POST, PUT]
    respond: { body: users-write }
"#;

struct Case {
    host: &'static str,
    path: &'static str,
    method: &'static str,
    headers: &'static [(&'static str, &'static str)],
    route: &'static str,
    candidates: &'static [&'static str],
    reason: &'static str,
}

const CASES: &[Case] = &[
    Case {
        host: "api.example.com",
        path: "/users/7",
        method: "GET",
        headers: &[],
        route: "exact",
        candidates: &["exact", "wild", "users"],
        reason: "an exact host beats a wildcard host",
    },
    Case {
        host: "www.example.com",
        path: "/users/7",
        method: "GET",
        headers: &[],
        route: "wild",
        candidates: &["wild", "users"],
        reason: "a wildcard host beats no host condition",
    },
    Case {
        host: "a.eu.example.com",
        path: "/",
        method: "GET",
        headers: &[],
        route: "deeper-wild",
        candidates: &["deeper-wild", "wild"],
        reason: "more specific",
    },
    Case {
        host: "other.org",
        path: "/users/list/3",
        method: "GET",
        headers: &[],
        route: "users-list",
        candidates: &["users-list", "users"],
        reason: "the longer prefix wins",
    },
    Case {
        host: "other.org",
        path: "/users/7",
        method: "GET",
        headers: &[("x-canary", "1")],
        route: "users-canary",
        candidates: &["users-canary", "users"],
        reason: "more conditions win",
    },
    Case {
        host: "other.org",
        path: "/users/7",
        method: "POST",
        headers: &[],
        route: "users-write",
        candidates: &["users-write", "users"],
        reason: "a route with `methods` beats one without",
    },
    Case {
        host: "other.org",
        path: "/users/7",
        method: "POST",
        headers: &[("x-canary", "1")],
        route: "users-canary",
        candidates: &["users-canary", "users-write", "users"],
        reason: "more conditions win",
    },
    Case {
        host: "other.org",
        path: "/users",
        method: "DELETE",
        headers: &[],
        route: "users",
        candidates: &["users"],
        reason: "the only route that matches",
    },
];

fn match_query(case: &Case) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("host", case.host);
    query.append_pair("path", case.path);
    query.append_pair("method", case.method);
    for (name, value) in case.headers {
        query.append_pair("header", &format!("{name}:{value}"));
    }
    format!("/routes/match?{}", query.finish())
}

#[tokio::test]
async fn explainer_follows_precedence_and_agrees_with_the_proxy() {
    let router = TestRouter::with_yaml(ROUTES).start().await;
    for case in CASES {
        let (status, body) = router.admin_json(&match_query(case)).await;
        assert_eq!(status, 200, "{}", case.path);
        let label = format!(
            "{} {}{} {:?}",
            case.method, case.host, case.path, case.headers
        );
        assert_eq!(body["route"], case.route, "{label}: {body}");
        let names: Vec<&str> = body["candidates"]
            .as_array()
            .expect("a candidates list")
            .iter()
            .map(|c| c["route"].as_str().expect("a route name"))
            .collect();
        assert_eq!(names, case.candidates, "{label}");
        let reason = body["reason"].as_str().expect("a reason");
        assert!(reason.contains(case.reason), "{label}: reason {reason:?}");

        // The proxy sends the same request to the same route.
        let method = http::Method::from_bytes(case.method.as_bytes()).expect("a method");
        let mut request = router.request(method, case.path).header("host", case.host);
        for (name, value) in case.headers {
            request = request.header(*name, *value);
        }
        let served = request.send().await.expect("the proxy answers");
        assert_eq!(served.text().await.expect("a body"), case.route, "{label}");
    }
}

#[tokio::test]
async fn explainer_normalizes_host_and_path_like_the_proxy() {
    let router = TestRouter::with_yaml(ROUTES).start().await;
    let (_, body) = router
        .admin_json("/routes/match?host=API.Example.com:8443&path=/a/../users/%252e%252E/users/./7")
        .await;
    assert_eq!(body["route"], "exact");
    assert_eq!(body["path"], "/users/7");
    assert_eq!(body["host"], "api.example.com");
    let first = &body["candidates"][0];
    assert_eq!(first["host_match"], "exact");
    assert_eq!(first["prefix"], "/");
    assert_eq!(first["prefix_segments"], 0);
    assert_eq!(body["candidates"][2]["prefix_segments"], 1);
}

#[tokio::test]
async fn explainer_answers_404_when_no_route_matches() {
    let router = TestRouter::with_yaml(ROUTES).start().await;
    let (status, body) = router
        .admin_json("/routes/match?host=other.org&path=/orders/1")
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "no_route");
    assert_eq!(body["path"], "/orders/1");
    assert_eq!(
        router
            .get("/orders/1")
            .send()
            .await
            .expect("the proxy answers")
            .status(),
        404,
        "nor does the proxy"
    );
}

#[tokio::test]
async fn explainer_rejects_questions_it_cannot_answer() {
    let router = TestRouter::with_yaml(ROUTES).start().await;
    for query in [
        "/routes/match?host=a",
        "/routes/match?path=/users&hedaer=x:1",
        "/routes/match?path=/users&header=no-colon",
        "/routes/match?path=users",
        "/routes/match?path=/users&method=GE%20T",
    ] {
        let (status, body) = router.admin_json(query).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["error"], "bad_request", "{query}");
    }
}
