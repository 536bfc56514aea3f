//! The matching and precedence rules of SPEC 2, exercised through the public
//! path a request takes: `config::parse`, `RouteTable::build`, then `lookup`
//! (or `candidates`) on the canonical path and the routing host the proxy
//! derives from the request. No sockets: routing is pure.

use std::ops::ControlFlow;
use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use switchyard::proxy::headers::routing_host;
use switchyard::routes::config::parse;
use switchyard::routes::path::canonical_path;
use switchyard::routes::table::{HostClass, RequestFacts, RouteTable, TableMeta};

fn meta() -> TableMeta {
    TableMeta {
        version: 1,
        sha256: String::new(),
        loaded_at: SystemTime::now(),
    }
}

/// A table built from `yaml`, which must be valid.
fn table(yaml: &str) -> RouteTable {
    let config = parse(yaml).unwrap_or_else(|e| panic!("fixture does not parse: {e}\n{yaml}"));
    RouteTable::build(config, meta()).unwrap_or_else(|e| panic!("fixture does not build: {e}"))
}

/// A request as the proxy sees it, before routing: the `Host` header as the
/// client wrote it, the raw path, the method and any further headers.
struct Request {
    host: Option<String>,
    path: String,
    method: Method,
    headers: HeaderMap,
}

impl Request {
    /// Runs `f` on the facts the proxy would route this request by: the
    /// canonical path and the lower-cased, port-less host.
    fn with_facts<T>(&self, f: impl FnOnce(&RequestFacts<'_>) -> T) -> T {
        let path = canonical_path(&self.path).expect("a routable path");
        let host = routing_host(&self.headers, &Uri::from_static("/"));
        if self.host.is_some() {
            assert!(host.is_some(), "Host {:?} is not a valid host", self.host);
        }
        f(&RequestFacts {
            host: host.as_deref(),
            path: &path,
            query: None,
            method: &self.method,
            headers: &self.headers,
        })
    }
}

fn request(host: Option<&str>, path: &str, method: &str, headers: &[(&str, &str)]) -> Request {
    let mut map = HeaderMap::new();
    if let Some(host) = host {
        map.insert(http::header::HOST, HeaderValue::from_str(host).unwrap());
    }
    for (name, value) in headers {
        map.append(
            HeaderName::try_from(*name).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    Request {
        host: host.map(str::to_owned),
        path: path.to_owned(),
        method: Method::from_bytes(method.as_bytes()).unwrap(),
        headers: map,
    }
}

/// The name of the route that serves this request, if any.
fn route_for(
    table: &RouteTable,
    host: Option<&str>,
    path: &str,
    method: &str,
    headers: &[(&str, &str)],
) -> Option<String> {
    request(host, path, method, headers)
        .with_facts(|facts| table.lookup(facts).map(|route| route.name().to_owned()))
}

/// A plain `GET` with no headers beyond `Host`.
fn get(table: &RouteTable, host: Option<&str>, path: &str) -> Option<String> {
    route_for(table, host, path, "GET", &[])
}

/// Every route `candidates` visits for the request, in visiting order.
fn candidates(
    table: &RouteTable,
    host: Option<&str>,
    path: &str,
    headers: &[(&str, &str)],
) -> Vec<(String, HostClass, usize)> {
    request(host, path, "GET", headers).with_facts(|facts| {
        let mut seen = Vec::new();
        let _ = table.candidates(facts, |candidate| {
            seen.push((
                candidate.route.name().to_owned(),
                candidate.host,
                candidate.prefix_segments,
            ));
            ControlFlow::Continue(())
        });
        seen
    })
}

// Rule 1: prefixes match whole segments.

#[test]
fn prefix_matches_itself_with_or_without_trailing_slash_and_anything_below() {
    let t = table(
        "\
routes:
  users:
    prefix: /api/users
    respond: {}
",
    );
    for path in [
        "/api/users",
        "/api/users/",
        "/api/users/7",
        "/api/users/7/orders",
    ] {
        assert_eq!(get(&t, None, path).as_deref(), Some("users"), "{path}");
    }
}

#[test]
fn prefix_never_matches_part_of_a_segment() {
    let t = table(
        "\
routes:
  users:
    prefix: /api/users
    respond: {}
",
    );
    for path in [
        "/api/usersX",
        "/api/users.json",
        "/api/user",
        "/api",
        "/",
        "/apiusers",
    ] {
        assert_eq!(get(&t, None, path), None, "{path}");
    }
}

#[test]
fn root_prefix_matches_every_path() {
    let t = table(
        "\
routes:
  everything:
    prefix: /
    respond: {}
",
    );
    for path in ["/", "/a", "/a/b/c/", "/%FF", "/api/usersX"] {
        assert_eq!(get(&t, None, path).as_deref(), Some("everything"), "{path}");
    }
}

#[test]
fn route_without_prefix_matches_every_path() {
    let t = table(
        "\
routes:
  everything:
    respond: {}
",
    );
    assert_eq!(get(&t, None, "/").as_deref(), Some("everything"));
    assert_eq!(get(&t, None, "/x/y").as_deref(), Some("everything"));
}

#[test]
fn prefix_written_with_trailing_slash_behaves_like_one_without() {
    let t = table(
        "\
routes:
  users:
    prefix: /api/users/
    respond: {}
",
    );
    for path in ["/api/users", "/api/users/", "/api/users/7"] {
        assert_eq!(get(&t, None, path).as_deref(), Some("users"), "{path}");
    }
    assert_eq!(get(&t, None, "/api/usersX"), None);
}

#[test]
fn request_path_is_matched_in_canonical_form() {
    let t = table(
        "\
routes:
  admin:
    prefix: /admin
    respond: {}
  users:
    prefix: /api/users
    respond: {}
",
    );
    assert_eq!(get(&t, None, "//api//users/7").as_deref(), Some("users"));
    assert_eq!(get(&t, None, "/api/%75sers/7").as_deref(), Some("users"));
    assert_eq!(
        get(&t, None, "/api/users/../../admin").as_deref(),
        Some("admin")
    );
    // An encoded slash is data, not a separator.
    assert_eq!(get(&t, None, "/api%2Fusers/7"), None);
}

// Rule 3, second key: the longest prefix wins.

#[test]
fn longest_prefix_wins_whatever_the_file_order() {
    let short_first = table(
        "\
routes:
  api:
    prefix: /api
    respond: {}
  users:
    prefix: /api/users
    respond: {}
  user-orders:
    prefix: /api/users/7/orders
    respond: {}
",
    );
    let long_first = table(
        "\
routes:
  user-orders:
    prefix: /api/users/7/orders
    respond: {}
  users:
    prefix: /api/users
    respond: {}
  api:
    prefix: /api
    respond: {}
",
    );
    for t in [&short_first, &long_first] {
        assert_eq!(
            get(t, None, "/api/users/7/orders/1").as_deref(),
            Some("user-orders")
        );
        assert_eq!(get(t, None, "/api/users/7").as_deref(), Some("users"));
        assert_eq!(get(t, None, "/api/usersX").as_deref(), Some("api"));
        assert_eq!(get(t, None, "/api").as_deref(), Some("api"));
        assert_eq!(get(t, None, "/other"), None);
    }
}

// Rule 2 and rule 3, first key: host classes.

#[test]
fn exact_host_beats_wildcard_beats_no_host_even_against_longer_prefixes() {
    let t = table(
        "\
routes:
  any-host:
    prefix: /api/users
    respond: {}
  wildcard:
    host: \"*.example.com\"
    prefix: /api
    respond: {}
  exact:
    host: api.example.com
    prefix: /
    respond: {}
",
    );
    assert_eq!(
        get(&t, Some("api.example.com"), "/api/users/7").as_deref(),
        Some("exact")
    );
    assert_eq!(
        get(&t, Some("www.example.com"), "/api/users/7").as_deref(),
        Some("wildcard")
    );
    assert_eq!(
        get(&t, Some("example.org"), "/api/users/7").as_deref(),
        Some("any-host")
    );
    assert_eq!(get(&t, None, "/api/users/7").as_deref(), Some("any-host"));
}

#[test]
fn host_route_matches_only_its_host() {
    let t = table(
        "\
routes:
  api:
    host: api.example.com
    respond: {}
",
    );
    assert_eq!(
        get(&t, Some("api.example.com"), "/").as_deref(),
        Some("api")
    );
    assert_eq!(get(&t, Some("www.example.com"), "/"), None);
    assert_eq!(get(&t, Some("x.api.example.com"), "/"), None);
    assert_eq!(get(&t, None, "/"), None, "a request without Host");
}

#[test]
fn wildcard_host_matches_any_depth_of_subdomain_but_not_the_domain_itself() {
    let t = table(
        "\
routes:
  tenants:
    host: \"*.example.com\"
    respond: {}
",
    );
    assert_eq!(
        get(&t, Some("a.example.com"), "/").as_deref(),
        Some("tenants")
    );
    assert_eq!(
        get(&t, Some("a.b.example.com"), "/").as_deref(),
        Some("tenants")
    );
    assert_eq!(get(&t, Some("example.com"), "/"), None);
    assert_eq!(get(&t, Some("aexample.com"), "/"), None);
    assert_eq!(get(&t, Some("a.example.com.evil.org"), "/"), None);
}

#[test]
fn more_specific_wildcard_beats_less_specific_one() {
    let t = table(
        "\
routes:
  broad:
    host: \"*.example.com\"
    prefix: /api/users
    respond: {}
  narrow:
    host: \"*.b.example.com\"
    prefix: /
    respond: {}
",
    );
    assert_eq!(
        get(&t, Some("a.b.example.com"), "/api/users/7").as_deref(),
        Some("narrow")
    );
    assert_eq!(
        get(&t, Some("a.c.example.com"), "/api/users/7").as_deref(),
        Some("broad")
    );
    assert_eq!(
        get(&t, Some("b.example.com"), "/api/users/7").as_deref(),
        Some("broad"),
        "*.b.example.com does not match b.example.com itself"
    );
}

#[test]
fn host_matching_ignores_case_port_and_trailing_dot() {
    let t = table(
        "\
routes:
  api:
    host: API.Example.COM
    respond: {}
  tenants:
    host: \"*.Tenants.Example.com\"
    respond: {}
",
    );
    for host in [
        "api.example.com",
        "API.EXAMPLE.COM",
        "Api.Example.Com:8080",
        "api.example.com.",
    ] {
        assert_eq!(get(&t, Some(host), "/").as_deref(), Some("api"), "{host}");
    }
    assert_eq!(
        get(&t, Some("ACME.tenants.example.COM:443"), "/").as_deref(),
        Some("tenants")
    );
}

#[test]
fn route_in_a_better_host_class_falls_back_when_its_prefix_does_not_match() {
    let t = table(
        "\
routes:
  api-admin:
    host: api.example.com
    prefix: /admin
    respond: {}
  fallback:
    respond: {}
",
    );
    assert_eq!(
        get(&t, Some("api.example.com"), "/admin/x").as_deref(),
        Some("api-admin")
    );
    assert_eq!(
        get(&t, Some("api.example.com"), "/users").as_deref(),
        Some("fallback")
    );
}

// Rule 3, third key: headers.

#[test]
fn route_with_headers_beats_one_without_at_the_same_prefix() {
    let t = table(
        "\
routes:
  users:
    prefix: /api/users
    respond: {}
  users-canary:
    prefix: /api/users
    headers: { x-canary: \"1\" }
    respond: {}
",
    );
    assert_eq!(
        route_for(&t, None, "/api/users/7", "GET", &[("x-canary", "1")]).as_deref(),
        Some("users-canary")
    );
    assert_eq!(get(&t, None, "/api/users/7").as_deref(), Some("users"));
}

#[test]
fn longer_prefix_beats_header_conditions() {
    let t = table(
        "\
routes:
  canary:
    prefix: /api
    headers: { x-canary: \"1\" }
    respond: {}
  users:
    prefix: /api/users
    respond: {}
",
    );
    assert_eq!(
        route_for(&t, None, "/api/users/7", "GET", &[("x-canary", "1")]).as_deref(),
        Some("users")
    );
    assert_eq!(
        route_for(&t, None, "/api/orders", "GET", &[("x-canary", "1")]).as_deref(),
        Some("canary")
    );
}

#[test]
fn route_with_more_header_conditions_wins() {
    let t = table(
        "\
routes:
  two:
    prefix: /api
    headers: { x-canary: \"1\", x-tenant: acme }
    respond: {}
  one:
    prefix: /api
    headers: { x-canary: \"1\" }
    respond: {}
  none:
    prefix: /api
    respond: {}
",
    );
    let both = [("x-canary", "1"), ("x-tenant", "acme")];
    assert_eq!(
        route_for(&t, None, "/api", "GET", &both).as_deref(),
        Some("two")
    );
    assert_eq!(
        route_for(&t, None, "/api", "GET", &[("x-canary", "1")]).as_deref(),
        Some("one")
    );
    assert_eq!(
        route_for(&t, None, "/api", "GET", &[("x-tenant", "acme")]).as_deref(),
        Some("none")
    );
}

#[test]
fn header_names_ignore_case_but_values_match_exactly() {
    let t = table(
        "\
routes:
  canary:
    headers: { X-Canary: \"Yes\" }
    respond: {}
  stable:
    respond: {}
",
    );
    for name in ["x-canary", "X-CANARY", "X-Canary"] {
        assert_eq!(
            route_for(&t, None, "/", "GET", &[(name, "Yes")]).as_deref(),
            Some("canary"),
            "{name}"
        );
    }
    for value in ["yes", "YES", "Yes ", "Yess", ""] {
        assert_eq!(
            route_for(&t, None, "/", "GET", &[("x-canary", value)]).as_deref(),
            Some("stable"),
            "{value:?}"
        );
    }
}

/// SPEC 7.1: where a name appears more than once, its first occurrence is
/// the one tested.
#[test]
fn header_condition_tests_the_first_of_several_values() {
    let t = table(
        "\
routes:
  canary:
    headers: { x-flag: canary }
    respond: {}
",
    );
    assert_eq!(
        route_for(
            &t,
            None,
            "/",
            "GET",
            &[("x-flag", "a"), ("x-flag", "canary")]
        )
        .as_deref(),
        None
    );
    assert_eq!(
        route_for(
            &t,
            None,
            "/",
            "GET",
            &[("x-flag", "canary"), ("x-flag", "a")]
        )
        .as_deref(),
        Some("canary")
    );
}

#[test]
fn route_whose_headers_do_not_match_falls_back_to_a_shorter_prefix() {
    let t = table(
        "\
routes:
  users-canary:
    prefix: /api/users
    headers: { x-canary: \"1\" }
    respond: {}
  api:
    prefix: /api
    respond: {}
",
    );
    assert_eq!(get(&t, None, "/api/users/7").as_deref(), Some("api"));
    assert_eq!(
        route_for(&t, None, "/api/users/7", "GET", &[("x-canary", "2")]).as_deref(),
        Some("api")
    );
}

#[test]
fn route_in_a_better_host_class_whose_headers_fail_falls_back_to_the_next_class() {
    let t = table(
        "\
routes:
  exact-canary:
    host: api.example.com
    headers: { x-canary: \"1\" }
    respond: {}
  wildcard-beta:
    host: \"*.example.com\"
    headers: { x-beta: \"1\" }
    respond: {}
  any-host:
    respond: {}
",
    );
    let host = Some("api.example.com");
    assert_eq!(
        route_for(&t, host, "/api", "GET", &[("x-canary", "1")]).as_deref(),
        Some("exact-canary")
    );
    assert_eq!(
        route_for(&t, host, "/api", "GET", &[("x-beta", "1")]).as_deref(),
        Some("wildcard-beta")
    );
    assert_eq!(
        route_for(&t, host, "/api", "GET", &[("x-canary", "2")]).as_deref(),
        Some("any-host")
    );
    assert_eq!(get(&t, host, "/api").as_deref(), Some("any-host"));
}

#[test]
fn route_in_a_better_host_class_whose_methods_fail_falls_back_to_the_next_class() {
    let t = table(
        "\
routes:
  exact-writes:
    host: api.example.com
    prefix: /api
    methods: [POST]
    respond: {}
  wildcard-reads:
    host: \"*.example.com\"
    methods: [GET]
    respond: {}
  any-host:
    prefix: /api
    respond: {}
",
    );
    let host = Some("api.example.com");
    assert_eq!(
        route_for(&t, host, "/api", "POST", &[]).as_deref(),
        Some("exact-writes")
    );
    assert_eq!(
        route_for(&t, host, "/api", "GET", &[]).as_deref(),
        Some("wildcard-reads")
    );
    assert_eq!(
        route_for(&t, host, "/api", "DELETE", &[]).as_deref(),
        Some("any-host")
    );
}

// Rule 3, fourth key: methods.

#[test]
fn route_with_methods_beats_one_without_at_the_same_prefix() {
    let t = table(
        "\
routes:
  reads:
    prefix: /api
    respond: {}
  writes:
    prefix: /api
    methods: [POST, PUT, DELETE]
    respond: {}
",
    );
    for method in ["POST", "PUT", "DELETE"] {
        assert_eq!(
            route_for(&t, None, "/api/x", method, &[]).as_deref(),
            Some("writes"),
            "{method}"
        );
    }
    for method in ["GET", "HEAD", "PATCH", "OPTIONS"] {
        assert_eq!(
            route_for(&t, None, "/api/x", method, &[]).as_deref(),
            Some("reads"),
            "{method}"
        );
    }
}

#[test]
fn route_with_headers_beats_one_with_only_methods() {
    let t = table(
        "\
routes:
  writes:
    prefix: /api
    methods: [POST]
    respond: {}
  canary:
    prefix: /api
    headers: { x-canary: \"1\" }
    respond: {}
",
    );
    assert_eq!(
        route_for(&t, None, "/api", "POST", &[("x-canary", "1")]).as_deref(),
        Some("canary")
    );
    assert_eq!(
        route_for(&t, None, "/api", "POST", &[]).as_deref(),
        Some("writes")
    );
}

#[test]
fn request_whose_method_no_route_allows_falls_back_or_matches_nothing() {
    let t = table(
        "\
routes:
  write-users:
    prefix: /api/users
    methods: [POST]
    respond: {}
  read-api:
    prefix: /api
    methods: [GET]
    respond: {}
",
    );
    assert_eq!(
        route_for(&t, None, "/api/users", "POST", &[]).as_deref(),
        Some("write-users")
    );
    assert_eq!(
        route_for(&t, None, "/api/users", "GET", &[]).as_deref(),
        Some("read-api")
    );
    assert_eq!(route_for(&t, None, "/api/users", "DELETE", &[]), None);
}

#[test]
fn request_matching_no_route_finds_none() {
    let t = table(
        "\
routes:
  users:
    host: api.example.com
    prefix: /api/users
    headers: { x-canary: \"1\" }
    methods: [GET]
    respond: {}
",
    );
    let canary = [("x-canary", "1")];
    let host = Some("api.example.com");
    assert_eq!(
        route_for(&t, host, "/api/users", "GET", &canary).as_deref(),
        Some("users")
    );
    assert_eq!(
        route_for(&t, Some("other.example.com"), "/api/users", "GET", &canary),
        None
    );
    assert_eq!(route_for(&t, host, "/api/orders", "GET", &canary), None);
    assert_eq!(route_for(&t, host, "/api/users", "GET", &[]), None);
    assert_eq!(route_for(&t, host, "/api/users", "PUT", &canary), None);
}

#[test]
fn empty_table_matches_nothing() {
    let t = table("routes: {}\n");
    assert_eq!(get(&t, None, "/"), None);
    assert_eq!(get(&t, Some("api.example.com"), "/api"), None);
}

// `candidates`: every match, best first.

#[test]
fn candidates_visits_every_matching_route_in_precedence_order() {
    let t = table(
        "\
routes:
  root:
    respond: {}
  any-users:
    prefix: /api/users
    respond: {}
  any-users-canary:
    prefix: /api/users
    headers: { x-canary: \"1\" }
    respond: {}
  any-users-posts:
    prefix: /api/users
    methods: [POST]
    respond: {}
  any-orders:
    prefix: /api/orders
    respond: {}
  broad-wildcard:
    host: \"*.example.com\"
    prefix: /api/users/7
    respond: {}
  narrow-wildcard:
    host: \"*.b.example.com\"
    prefix: /
    respond: {}
  exact-api:
    host: a.b.example.com
    prefix: /api
    respond: {}
  exact-root:
    host: a.b.example.com
    respond: {}
  other-host:
    host: other.example.com
    respond: {}
",
    );
    let seen = candidates(
        &t,
        Some("a.b.example.com"),
        "/api/users/7",
        &[("x-canary", "1")],
    );
    let expected = [
        ("exact-api", HostClass::Exact, 1),
        ("exact-root", HostClass::Exact, 0),
        ("narrow-wildcard", HostClass::Wildcard, 0),
        ("broad-wildcard", HostClass::Wildcard, 3),
        ("any-users-canary", HostClass::Any, 2),
        ("any-users", HostClass::Any, 2),
        ("root", HostClass::Any, 0),
    ];
    let expected: Vec<(String, HostClass, usize)> = expected
        .iter()
        .map(|&(name, class, depth)| (name.to_owned(), class, depth))
        .collect();
    assert_eq!(seen, expected);
}

#[test]
fn lookup_returns_the_first_candidate() {
    let t = table(
        "\
routes:
  root:
    respond: {}
  users:
    prefix: /api/users
    respond: {}
  canary:
    prefix: /api
    headers: { x-canary: \"1\" }
    respond: {}
  tenants:
    host: \"*.example.com\"
    prefix: /api/users/7/orders
    respond: {}
",
    );
    let first_is_looked_up = |host: Option<&str>, path: &str, headers: &[(&str, &str)]| {
        let first = candidates(&t, host, path, headers)
            .into_iter()
            .next()
            .map(|(name, _, _)| name);
        assert!(first.is_some(), "{host:?} {path}");
        assert_eq!(
            first,
            route_for(&t, host, path, "GET", headers),
            "{host:?} {path}"
        );
    };
    first_is_looked_up(None, "/", &[]);
    first_is_looked_up(None, "/api/users/7", &[("x-canary", "1")]);
    first_is_looked_up(None, "/api/orders", &[("x-canary", "1")]);
    first_is_looked_up(Some("a.example.com"), "/api/users/7/orders", &[]);
    first_is_looked_up(Some("a.example.com"), "/api/users/7", &[]);
}

#[test]
fn candidates_stops_when_the_visitor_breaks() {
    let t = table(
        "\
routes:
  root:
    respond: {}
  api:
    prefix: /api
    respond: {}
",
    );
    let mut visited = Vec::new();
    let flow = request(None, "/api/x", "GET", &[]).with_facts(|facts| {
        t.candidates(facts, |candidate| {
            visited.push(candidate.route.name().to_owned());
            ControlFlow::Break(())
        })
    });
    assert_eq!(flow, ControlFlow::Break(()));
    assert_eq!(visited, ["api"]);
}

// Shape: lookup does not depend on file position or table size.

#[test]
fn table_of_ten_thousand_routes_finds_the_first_the_last_and_misses() {
    const ROUTES: usize = 10_000;
    let mut yaml = String::from("routes:\n");
    for i in 0..ROUTES {
        yaml.push_str(&format!("  svc-{i}:\n    prefix: /svc/{i}\n"));
        // Every third route also names a host, so the host maps fill too.
        if i % 3 == 1 {
            yaml.push_str(&format!("    host: svc-{i}.example.com\n"));
        }
        yaml.push_str(&format!("    upstream: http://127.0.0.1:{}\n", 10_000 + i));
    }
    let t = table(&yaml);
    assert_eq!(t.routes().len(), ROUTES);

    assert_eq!(get(&t, None, "/svc/0").as_deref(), Some("svc-0"));
    assert_eq!(get(&t, None, "/svc/0/x").as_deref(), Some("svc-0"));
    assert_eq!(get(&t, None, "/svc/9999/y").as_deref(), Some("svc-9999"));
    assert_eq!(
        get(&t, Some("svc-9997.example.com"), "/svc/9997").as_deref(),
        Some("svc-9997")
    );
    assert_eq!(get(&t, None, "/svc/9997"), None, "svc-9997 needs its host");
    assert_eq!(get(&t, None, "/svc/10000"), None);
    assert_eq!(get(&t, None, "/svc"), None);
    assert_eq!(get(&t, Some("nowhere.example.org"), "/nowhere"), None);
}

#[test]
fn route_allowing_get_also_serves_head() {
    let table = table(
        "\
routes:
  reads:
    prefix: /api
    methods: [GET]
    upstream: http://127.0.0.1:9001
  writes:
    prefix: /api
    methods: [POST]
    upstream: http://127.0.0.1:9002
",
    );
    assert_eq!(
        route_for(&table, None, "/api/x", "HEAD", &[]).as_deref(),
        Some("reads")
    );
    assert_eq!(route_for(&table, None, "/api/x", "PUT", &[]), None);
}

#[test]
fn prefixes_deeper_than_the_lookup_walk_still_match_longest_first() {
    let deep: String = (0..20).map(|i| format!("/s{i}")).collect();
    let mid: String = (0..12).map(|i| format!("/s{i}")).collect();
    let t = table(&format!(
        "routes:
  deep:
    prefix: {deep}
    respond: {{ status: 200 }}
  mid:
    prefix: {mid}
    respond: {{ status: 200 }}
  root:
    respond: {{ status: 200 }}
"
    ));
    assert_eq!(get(&t, None, &format!("{deep}/x")).as_deref(), Some("deep"));
    assert_eq!(get(&t, None, &deep).as_deref(), Some("deep"));
    assert_eq!(
        get(&t, None, &format!("{mid}/s12/other")).as_deref(),
        Some("mid")
    );
    let nearly: String = (0..19).map(|i| format!("/s{i}")).collect();
    assert_eq!(
        get(&t, None, &format!("{nearly}/zz")).as_deref(),
        Some("mid")
    );
    assert_eq!(get(&t, None, "/elsewhere").as_deref(), Some("root"));
}
