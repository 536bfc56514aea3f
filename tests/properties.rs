//! Property tests: the route table's lookup against a reference that scans
//! every route and applies SPEC 2's precedence literally, and the path and
//! header rules on random input.

use std::net::{IpAddr, Ipv4Addr};
use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use proptest::prelude::*;
use switchyard::proxy::headers::{set_forwarded, strip_hop_by_hop, ClientAddress};
use switchyard::routes::config::{parse, ConfigError, HostPattern, RouteSpec};
use switchyard::routes::path::{canonical_path, upstream_path};
use switchyard::routes::table::{RequestFacts, RouteTable, TableMeta};

const HOSTS: [Option<&str>; 5] = [
    None,
    Some("a.com"),
    Some("b.a.com"),
    Some("*.a.com"),
    Some("*.b.a.com"),
];
const PREFIXES: [&str; 6] = ["/", "/x", "/x/y", "/y", "/x/y/z", "/x/yy"];
const HEADERS: [(&str, &str); 2] = [("x-a", "1"), ("x-b", "2")];
const METHODS: [Option<&[&str]>; 3] = [None, Some(&["GET"]), Some(&["POST", "PUT"])];

#[derive(Debug, Clone)]
struct RouteChoice {
    host: usize,
    prefix: usize,
    headers: [bool; 2],
    methods: usize,
    /// 0: `respond`; 1: one upstream; 2: weighted upstreams with checks.
    target: usize,
}

fn route_choice() -> impl Strategy<Value = RouteChoice> {
    (
        0..HOSTS.len(),
        0..PREFIXES.len(),
        any::<[bool; 2]>(),
        0..METHODS.len(),
        0..3usize,
    )
        .prop_map(|(host, prefix, headers, methods, target)| RouteChoice {
            host,
            prefix,
            headers,
            methods,
            target,
        })
}

fn yaml_of(routes: &[RouteChoice]) -> String {
    let mut yaml = String::from("routes:\n");
    for (index, route) in routes.iter().enumerate() {
        yaml.push_str(&format!(
            "  r{index}:\n    prefix: {}\n",
            PREFIXES[route.prefix]
        ));
        if let Some(host) = HOSTS[route.host] {
            yaml.push_str(&format!("    host: \"{host}\"\n"));
        }
        let headers: Vec<String> = HEADERS
            .iter()
            .zip(route.headers)
            .filter(|(_, on)| *on)
            .map(|((name, value), _)| format!("{name}: \"{value}\""))
            .collect();
        if !headers.is_empty() {
            yaml.push_str(&format!("    headers: {{ {} }}\n", headers.join(", ")));
        }
        if let Some(methods) = METHODS[route.methods] {
            yaml.push_str(&format!("    methods: [{}]\n", methods.join(", ")));
        }
        yaml.push_str(match route.target {
            0 => "    respond: { status: 200 }\n",
            1 => "    upstream: http://127.0.0.1:9001/base\n    strip_prefix: true\n",
            _ => "    upstreams:\n      - { url: http://127.0.0.1:9002, weight: 7 }\n      - http://[::1]:9003\n    timeout: 250ms\n    health: { path: /healthz, interval: 2s, unhealthy: 4 }\n",
        });
    }
    yaml
}

/// Writes parsed routes back out as a route file, field by field.
fn emit(routes: &[RouteSpec]) -> String {
    use switchyard::routes::config::TargetSpec;
    let quoted = |v: &HeaderValue| format!("{:?}", v.to_str().expect("ASCII"));
    let mut yaml = String::from("routes:\n");
    for route in routes {
        yaml.push_str(&format!(
            "  {}:\n    prefix: {}\n",
            route.name, route.prefix
        ));
        if let Some(host) = &route.host {
            yaml.push_str(&format!("    host: \"{host}\"\n"));
        }
        if !route.headers.is_empty() {
            let headers: Vec<String> = route
                .headers
                .iter()
                .map(|(n, v)| format!("{n}: {}", quoted(v)))
                .collect();
            yaml.push_str(&format!("    headers: {{ {} }}\n", headers.join(", ")));
        }
        if let Some(methods) = &route.methods {
            let names: Vec<&str> = methods.iter().map(Method::as_str).collect();
            yaml.push_str(&format!("    methods: [{}]\n", names.join(", ")));
        }
        match &route.target {
            TargetSpec::Respond(respond) => {
                yaml.push_str(&format!(
                    "    respond: {{ status: {} }}\n",
                    respond.status.as_u16()
                ));
            }
            TargetSpec::Upstreams(upstreams) => {
                yaml.push_str("    upstreams:\n");
                for u in upstreams {
                    yaml.push_str(&format!(
                        "      - {{ url: \"{}\", weight: {} }}\n",
                        u.url, u.weight
                    ));
                }
                yaml.push_str(&format!(
                    "    strip_prefix: {}\n    timeout: {}ms\n",
                    route.strip_prefix,
                    route.timeout.as_millis()
                ));
                if let Some(h) = &route.health {
                    yaml.push_str(&format!(
                        "    health: {{ path: \"{}\", interval: {}ms, timeout: {}ms, healthy: {}, unhealthy: {} }}\n",
                        h.path,
                        h.interval.as_millis(),
                        h.timeout.as_millis(),
                        h.healthy,
                        h.unhealthy
                    ));
                }
            }
        }
    }
    yaml
}

#[derive(Debug, Clone)]
struct Request {
    host: Option<&'static str>,
    path: String,
    method: Method,
    headers: HeaderMap,
}

fn request() -> impl Strategy<Value = Request> {
    let hosts = prop::sample::select(vec![
        None,
        Some("a.com"),
        Some("b.a.com"),
        Some("c.b.a.com"),
        Some("z.com"),
    ]);
    let segments = prop::collection::vec(prop::sample::select(vec!["x", "y", "z", "yy", ""]), 0..4);
    let methods = prop::sample::select(vec![
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
    ]);
    (hosts, segments, methods, any::<[bool; 2]>(), any::<bool>()).prop_map(
        |(host, segments, method, headers, wrong_value)| {
            let mut map = HeaderMap::new();
            for ((name, value), on) in HEADERS.iter().zip(headers) {
                if on {
                    let value = if wrong_value { "other" } else { value };
                    map.append(
                        HeaderName::from_static(name),
                        HeaderValue::from_str(value).expect("ASCII"),
                    );
                }
            }
            Request {
                host,
                path: format!("/{}", segments.join("/")),
                method,
                headers: map,
            }
        },
    )
}

/// SPEC 2, read literally: every route that matches, ranked by host class
/// (exact, then the longest wildcard suffix, then none), then prefix
/// segments, then header conditions, then `methods`, then file order.
fn reference(routes: &[RouteSpec], request: &Request, path: &str) -> Option<String> {
    let segments = |p: &str| p.split('/').filter(|s| !s.is_empty()).count();
    let matching = routes.iter().enumerate().filter_map(|(order, route)| {
        let host_rank = match (&route.host, request.host) {
            (None, _) => 0,
            (Some(HostPattern::Exact(h)), Some(req)) if h == req => 1_000,
            (Some(HostPattern::Wildcard(suffix)), Some(req))
                if req.ends_with(suffix.as_str()) && req.len() > suffix.len() =>
            {
                1 + suffix.len()
            }
            _ => return None,
        };
        let prefix_ok = route.prefix == "/"
            || path == route.prefix
            || path.starts_with(&format!("{}/", route.prefix));
        let headers_ok = route
            .headers
            .iter()
            .all(|(name, value)| request.headers.get_all(name).iter().any(|v| v == value));
        let methods_ok = route.methods.as_ref().is_none_or(|methods| {
            methods.contains(&request.method)
                || (request.method == Method::HEAD && methods.contains(&Method::GET))
        });
        (prefix_ok && headers_ok && methods_ok).then(|| {
            let rank = (
                host_rank,
                segments(&route.prefix),
                route.headers.len(),
                route.methods.is_some(),
                std::cmp::Reverse(order),
            );
            (rank, route.name.clone())
        })
    });
    matching.max_by(|a, b| a.0.cmp(&b.0)).map(|(_, name)| name)
}

fn meta() -> TableMeta {
    TableMeta {
        version: 1,
        sha256: String::new(),
        loaded_at: SystemTime::now(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn lookup_agrees_with_a_scan_of_every_route(
        routes in prop::collection::vec(route_choice(), 1..12),
        requests in prop::collection::vec(request(), 1..16),
    ) {
        let yaml = yaml_of(&routes);
        let config = parse(&yaml).expect("generated files are valid");
        let specs = config.routes.clone();
        let table = match RouteTable::build(config, meta()) {
            Ok(table) => table,
            // Two identical routes: rule 4 refuses the file, rightly.
            Err(ConfigError::Conflict { .. }) => return Ok(()),
            Err(error) => panic!("unexpected rejection: {error}\n{yaml}"),
        };
        for request in &requests {
            let path = canonical_path(&request.path).expect("an origin-form path");
            let facts = RequestFacts {
                host: request.host,
                path: &path,
                method: &request.method,
                headers: &request.headers,
            };
            let found = table.lookup(&facts).map(|r| r.name().to_owned());
            prop_assert_eq!(found, reference(&specs, request, &path), "{}\n{:?}", yaml, request);
        }
    }

    #[test]
    fn valid_tables_survive_a_yaml_round_trip(routes in prop::collection::vec(route_choice(), 1..12)) {
        let first = parse(&yaml_of(&routes)).expect("generated files are valid").routes;
        let written = emit(&first);
        let again = parse(&written).unwrap_or_else(|e| panic!("{e}\n{written}")).routes;
        prop_assert_eq!(&first, &again, "{}", written);
        prop_assert_eq!(emit(&again), written);
    }

    #[test]
    fn canonical_paths_are_fixed_points_without_dot_segments(
        raw in "/[a./%2eE\\\\b]{0,24}",
    ) {
        let Ok(path) = canonical_path(&raw) else { return Ok(()) };
        prop_assert!(path.starts_with('/'), "{}", path);
        prop_assert_eq!(canonical_path(&path).ok(), Some(path.clone()), "idempotent");
        for segment in path.split('/') {
            prop_assert!(segment != "." && segment != "..", "dot-segment left in {}", path);
            prop_assert!(!segment.eq_ignore_ascii_case("%2e") && !segment.eq_ignore_ascii_case("%2e%2e"));
        }
    }

    #[test]
    fn the_upstream_path_ends_with_what_was_matched(
        base in prop::sample::select(vec!["", "/v2", "/a/b"]),
        prefix in prop::sample::select(vec!["/", "/x", "/x/y"]),
        rest in prop::collection::vec("[a-z]{1,3}", 0..3),
        strip in any::<bool>(),
    ) {
        let path = if rest.is_empty() {
            prefix.to_owned()
        } else {
            format!("{}/{}", prefix.trim_end_matches('/'), rest.join("/"))
        };
        let sent = upstream_path(base, prefix, &path, strip);
        prop_assert!(sent.starts_with('/'));
        prop_assert!(sent.starts_with(base), "{} under base {}", sent, base);
        let tail = if strip && prefix != "/" { path.strip_prefix(prefix).unwrap_or(&path) } else { &path };
        prop_assert!(sent.ends_with(tail.trim_start_matches('/')), "{} from {}", sent, path);
        prop_assert_eq!(canonical_path(&sent).ok(), Some(sent.clone()), "sent canonical");
    }

    #[test]
    fn hop_by_hop_headers_never_pass_and_the_client_is_appended(
        named in prop::collection::vec("x-[a-c]", 0..3),
        extra in prop::collection::vec(("x-[a-e]", "[a-z0-9]{1,4}"), 0..6),
        prior in prop::option::of("[0-9.]{1,10}"),
        hop in prop::collection::vec(prop::sample::select(vec!["keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "proxy-connection"]), 0..4),
    ) {
        let mut headers = HeaderMap::new();
        for (name, value) in &extra {
            headers.append(HeaderName::from_bytes(name.as_bytes()).expect("a name"), HeaderValue::from_str(value).expect("a value"));
        }
        for name in &hop {
            headers.insert(HeaderName::from_static(name), HeaderValue::from_static("1"));
        }
        if !named.is_empty() {
            headers.insert(http::header::CONNECTION, HeaderValue::from_str(&named.join(", ")).expect("a value"));
        }
        if let Some(prior) = &prior {
            headers.insert("x-forwarded-for", HeaderValue::from_str(prior).expect("a value"));
        }
        strip_hop_by_hop(&mut headers, false);
        for name in hop.iter().copied().chain(["connection"]) {
            prop_assert!(!headers.contains_key(name), "{} passed", name);
        }
        for name in &named {
            prop_assert!(!headers.contains_key(name.as_str()), "{} was named by Connection", name);
        }
        for (name, _) in &extra {
            if !named.contains(name) {
                prop_assert!(headers.contains_key(name.as_str()), "{} was dropped", name);
            }
        }
        let client = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        set_forwarded(&mut headers, &ClientAddress::new(client), "http", None);
        let forwarded: Vec<&str> = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect();
        let joined = forwarded.join(", ");
        prop_assert!(joined.ends_with("192.0.2.7"), "{}", joined);
        if let Some(prior) = &prior {
            prop_assert!(joined.starts_with(prior.as_str()), "{} lost {}", joined, prior);
        }
        prop_assert_eq!(headers.get("x-forwarded-proto").map(|v| v.as_bytes()), Some(&b"http"[..]));
    }
}
