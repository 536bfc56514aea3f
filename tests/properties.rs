//! Property tests: the route table's lookup against a reference that scans
//! every route and applies SPEC 2's precedence and SPEC 7.1's conditions
//! literally, and the path, rewrite and header rules on random input.

use std::net::{IpAddr, Ipv4Addr};
use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use proptest::prelude::*;
use switchyard::policy::rewrite::path_for_upstream;
use switchyard::proxy::headers::{set_forwarded, strip_hop_by_hop, ClientAddress};
use switchyard::routes::config::{
    parse, ConfigError, HostPattern, Pattern, RewriteSpec, RouteSpec,
};
use switchyard::routes::path::{canonical_path, upstream_path};
use switchyard::routes::table::{RequestFacts, RouteTable, TableMeta};

const HOSTS: [Option<&str>; 5] = [
    None,
    Some("a.com"),
    Some("b.a.com"),
    Some("*.a.com"),
    Some("*.b.a.com"),
];
const PREFIXES: [&str; 5] = ["/", "/x", "/x/y", "/y", "/x/yy"];
const METHODS: [Option<&[&str]>; 3] = [None, Some(&["GET"]), Some(&["POST", "PUT"])];

/// The conditions a generated route may have (SPEC 7.1), one of each kind
/// of value: as the route file writes them, and as the reference below
/// decides them, without the router's code.
const CONDITIONS: [(&str, &str); 6] = [
    ("headers", "x-a: \"1\""),
    ("headers", "x-b: { regex: \"[0-9]+\" }"),
    ("headers", "x-c: { present: false }"),
    ("query", "v: \"2 2\""),
    ("cookies", "beta: \"on\""),
    ("path_regex", "\"/x(/.*)?\""),
];

#[derive(Debug, Clone)]
struct RouteChoice {
    host: usize,
    prefix: usize,
    conditions: [bool; CONDITIONS.len()],
    methods: usize,
    /// 0: `respond`; 1: one upstream; 2: weighted upstreams with checks;
    /// 3: a redirect; 4: one upstream with a rewrite and header edits.
    target: usize,
}

fn route_choice() -> impl Strategy<Value = RouteChoice> {
    (
        0..HOSTS.len(),
        0..PREFIXES.len(),
        any::<[bool; CONDITIONS.len()]>(),
        0..METHODS.len(),
        0..5usize,
    )
        .prop_map(|(host, prefix, conditions, methods, target)| RouteChoice {
            host,
            prefix,
            conditions,
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
        for kind in ["headers", "query", "cookies"] {
            let entries: Vec<&str> = CONDITIONS
                .iter()
                .zip(route.conditions)
                .filter(|((k, _), on)| *on && *k == kind)
                .map(|((_, entry), _)| *entry)
                .collect();
            if !entries.is_empty() {
                yaml.push_str(&format!("    {kind}: {{ {} }}\n", entries.join(", ")));
            }
        }
        if route.conditions[5] {
            yaml.push_str(&format!("    path_regex: {}\n", CONDITIONS[5].1));
        }
        if let Some(methods) = METHODS[route.methods] {
            yaml.push_str(&format!("    methods: [{}]\n", methods.join(", ")));
        }
        yaml.push_str(match route.target {
            0 => "    respond: { status: 200 }\n",
            1 => "    upstream: http://127.0.0.1:9001/base\n    strip_prefix: true\n",
            2 => "    upstreams:\n      - { url: http://127.0.0.1:9002, weight: 7 }\n      - http://[::1]:9003\n    timeout: 250ms\n    health: { path: /healthz, interval: 2s, unhealthy: 4 }\n",
            3 => "    redirect: { to: \"https://{host}{path}{query}\", status: 301 }\n",
            _ => "    upstream: h2c://127.0.0.1:9004\n    rewrite: { regex: \"^/x/([a-z]+)\", to: \"/v2/$1\" }\n    request_headers: { set: { host: users.internal }, add: { x-via: \"{client_ip}\" }, remove: [x-debug] }\n    response_headers: { set: { strict-transport-security: \"max-age=1\" } }\n",
        });
    }
    yaml
}

/// Writes parsed routes back out as a route file, field by field.
fn emit(routes: &[RouteSpec]) -> String {
    use switchyard::routes::config::{RewriteSpec, TargetSpec, ValueMatch};
    let value = |v: &ValueMatch| match v {
        ValueMatch::Exact(text) => format!("{text:?}"),
        ValueMatch::Regex(pattern) => format!("{{ regex: {:?} }}", pattern.source()),
        ValueMatch::Present(present) => format!("{{ present: {present} }}"),
    };
    let edits = |what: &str, e: &switchyard::routes::config::HeaderEdits| {
        if e.is_empty() {
            return String::new();
        }
        let removed: Vec<&str> = e.remove.iter().map(|n| n.as_str()).collect();
        let set: Vec<String> = e
            .set
            .iter()
            .map(|(n, t)| format!("{n}: {:?}", t.source()))
            .collect();
        let add: Vec<String> = e
            .add
            .iter()
            .map(|(n, t)| format!("{n}: {:?}", t.source()))
            .collect();
        format!(
            "    {what}: {{ remove: [{}], set: {{ {} }}, add: {{ {} }} }}\n",
            removed.join(", "),
            set.join(", "),
            add.join(", ")
        )
    };
    let mut yaml = String::from("routes:\n");
    for route in routes {
        yaml.push_str(&format!(
            "  {}:\n    prefix: {}\n",
            route.name, route.prefix
        ));
        if let Some(host) = &route.host {
            yaml.push_str(&format!("    host: \"{host}\"\n"));
        }
        let conditions = &route.conditions;
        if !conditions.headers.is_empty() {
            let list: Vec<String> = conditions
                .headers
                .iter()
                .map(|(n, v)| format!("{n}: {}", value(v)))
                .collect();
            yaml.push_str(&format!("    headers: {{ {} }}\n", list.join(", ")));
        }
        if !conditions.query.is_empty() {
            let list: Vec<String> = conditions
                .query
                .iter()
                .map(|(n, v)| format!("{n}: {}", value(v)))
                .collect();
            yaml.push_str(&format!("    query: {{ {} }}\n", list.join(", ")));
        }
        if !conditions.cookies.is_empty() {
            let list: Vec<String> = conditions
                .cookies
                .iter()
                .map(|(n, v)| format!("{n}: {}", value(v)))
                .collect();
            yaml.push_str(&format!("    cookies: {{ {} }}\n", list.join(", ")));
        }
        if let Some(pattern) = &conditions.path_regex {
            yaml.push_str(&format!("    path_regex: {:?}\n", pattern.source()));
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
            TargetSpec::Redirect(redirect) => {
                yaml.push_str(&format!(
                    "    redirect: {{ to: {:?}, status: {} }}\n",
                    redirect.to.source(),
                    redirect.status.as_u16()
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
                match &route.rewrite {
                    Some(RewriteSpec::Prefix(prefix)) => {
                        yaml.push_str(&format!("    rewrite: {{ prefix: {prefix:?} }}\n"));
                    }
                    Some(RewriteSpec::Regex { pattern, to }) => {
                        yaml.push_str(&format!(
                            "    rewrite: {{ regex: {:?}, to: {to:?} }}\n",
                            pattern.source()
                        ));
                    }
                    None => {}
                }
                yaml.push_str(&edits("request_headers", &route.request_headers));
            }
        }
        yaml.push_str(&edits("response_headers", &route.response_headers));
    }
    yaml
}

#[derive(Debug, Clone)]
struct Request {
    host: Option<&'static str>,
    path: String,
    query: Option<&'static str>,
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
    // Each header: absent, or one value, or two where only the first counts.
    let header =
        |values: Vec<&'static str>| prop::collection::vec(prop::sample::select(values), 0..3);
    let x_a = header(vec!["1", "2"]);
    let x_b = header(vec!["12", "ab", ""]);
    let x_c = header(vec!["y"]);
    // Percent-encoded and `+` spellings of "2 2", and first-occurrence cases.
    let queries = prop::sample::select(vec![
        None,
        Some("v=2+2"),
        Some("v=2%202&w=1"),
        Some("v=3&v=2+2"),
        Some("v=2+2&v=3"),
        Some("%76=2+2"),
        Some("w=2+2"),
        Some(""),
    ]);
    let cookies = prop::sample::select(vec![
        None,
        Some("beta=on"),
        Some("beta=off"),
        Some("id=1; beta=on"),
        Some("beta=off; beta=on"),
        Some("beta=on; beta=off"),
    ]);
    (hosts, segments, methods, (x_a, x_b, x_c), queries, cookies).prop_map(
        |(host, segments, method, (x_a, x_b, x_c), query, cookies)| {
            let mut map = HeaderMap::new();
            for (name, values) in [("x-a", x_a), ("x-b", x_b), ("x-c", x_c)] {
                for value in values {
                    map.append(
                        HeaderName::from_static(name),
                        HeaderValue::from_str(value).expect("ASCII"),
                    );
                }
            }
            if let Some(cookies) = cookies {
                map.append(http::header::COOKIE, HeaderValue::from_static(cookies));
            }
            Request {
                host,
                path: format!("/{}", segments.join("/")),
                query,
                method,
                headers: map,
            }
        },
    )
}

/// The first `name` parameter of `query`, decoded by hand (`+` is a space,
/// `%XX` its byte): the reference's own reading, not the router's.
fn first_query(query: &str, name: &str) -> Option<String> {
    let decode = |text: &str| {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                    match u8::from_str_radix(hex, 16) {
                        Ok(byte) => {
                            out.push(byte);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                other => out.push(other),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(key) == name).then(|| decode(value))
    })
}

/// The first cookie called `name` across the Cookie headers.
fn first_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| {
            v.to_str()
                .unwrap_or("")
                .split(';')
                .map(str::trim)
                .collect::<Vec<_>>()
        })
        .find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            (key.trim() == name).then(|| value.trim().to_owned())
        })
}

/// Whether the conditions `on` (CONDITIONS, by index) hold.
fn conditions_hold(on: &[bool; CONDITIONS.len()], request: &Request, path: &str) -> bool {
    let first = |name: &str| request.headers.get(name).map(|v| v.to_str().unwrap_or(""));
    let checks = [
        first("x-a") == Some("1"),
        first("x-b").is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())),
        first("x-c").is_none(),
        request.query.and_then(|q| first_query(q, "v")).as_deref() == Some("2 2"),
        first_cookie(&request.headers, "beta").as_deref() == Some("on"),
        path == "/x" || path.starts_with("/x/"),
    ];
    on.iter().zip(checks).all(|(on, holds)| !on || holds)
}

/// SPEC 2, read literally: every route that matches, ranked by host class
/// (exact, then the longest wildcard suffix, then none), then prefix
/// segments, then the number of conditions, then `methods`, then file
/// order.
fn reference(
    routes: &[RouteSpec],
    choices: &[RouteChoice],
    request: &Request,
    path: &str,
) -> Option<String> {
    let segments = |p: &str| p.split('/').filter(|s| !s.is_empty()).count();
    let matching = routes
        .iter()
        .zip(choices)
        .enumerate()
        .filter_map(|(order, (route, choice))| {
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
            let methods_ok = route.methods.as_ref().is_none_or(|methods| {
                methods.contains(&request.method)
                    || (request.method == Method::HEAD && methods.contains(&Method::GET))
            });
            let conditions_ok = conditions_hold(&choice.conditions, request, path);
            (prefix_ok && conditions_ok && methods_ok).then(|| {
                let rank = (
                    host_rank,
                    segments(&route.prefix),
                    choice.conditions.iter().filter(|on| **on).count(),
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
        let config = parse(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
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
                query: request.query,
                method: &request.method,
                headers: &request.headers,
            };
            let found = table.lookup(&facts).map(|r| r.name().to_owned());
            prop_assert_eq!(found, reference(&specs, &routes, request, &path), "{}\n{:?}", yaml, request);
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
    fn a_rewrite_is_canonical_and_never_climbs_above_its_base(
        raw in "/[a./%2eE]{0,16}",
        regex in prop::sample::select(vec!["^/(.*)", "([a-z]+)", "^/[a-z]*/?(.*)$", "\\.+", "/"]),
        to in prop::sample::select(vec!["/$1", "/../../$1", "$1/..", "/x/%2e%2e/%2E%2e/$1", "/v2/../../..", "..", "/a/./b/$1"]),
        prefix_to in prop::sample::select(vec!["/", "/v2", "/v2/users"]),
        base in prop::sample::select(vec!["", "/base", "/a/b"]),
    ) {
        let Ok(path) = canonical_path(&raw) else { return Ok(()) };
        let rewrites = [
            RewriteSpec::Regex { pattern: Pattern::search(regex).expect("a valid regex"), to: to.to_owned() },
            RewriteSpec::Prefix(prefix_to.to_owned()),
        ];
        for rewrite in &rewrites {
            let rewritten = switchyard::policy::rewrite::rewritten(rewrite, "/", &path);
            prop_assert!(rewritten.starts_with('/'), "{:?} -> {}", rewrite, rewritten);
            prop_assert_eq!(canonical_path(&rewritten).ok(), Some(rewritten.clone()), "not canonical");
            for segment in rewritten.split('/') {
                prop_assert!(segment != "." && segment != "..", "{:?}: {} keeps a dot-segment", rewrite, rewritten);
            }
            let sent = path_for_upstream(base, "/", &path, false, Some(rewrite));
            prop_assert!(sent.starts_with(base), "{} climbed above {}", sent, base);
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
