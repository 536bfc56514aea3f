//! Route files shared by the benches.

/// A route file with `n` routes spread over hosts, wildcards and prefixes.
pub fn route_file(n: usize) -> String {
    let mut yaml = String::from("routes:\n");
    for i in 0..n {
        let host = match i % 3 {
            0 => format!("host: svc{}.example.com\n    ", i % 97),
            1 => format!("host: \"*.tenant{}.example.com\"\n    ", i % 89),
            _ => String::new(),
        };
        yaml.push_str(&format!(
            "  r{i}:\n    {host}prefix: /api/v{}/service{i}/items\n    upstream: http://127.0.0.1:{}\n",
            i % 7,
            9000 + i % 1000
        ));
    }
    yaml
}

/// [`route_file`], where every fourth route has a sibling on the same host
/// and prefix that asks for two headers (one a regex), a query parameter
/// and a cookie: the conditions are checked on those routes' requests.
// Each bench includes this module; only `table` uses this one.
#[allow(dead_code)]
pub fn route_file_with_conditions(n: usize) -> String {
    let mut yaml = route_file(n);
    for i in (0..n).step_by(4) {
        let host = match i % 3 {
            0 => format!("host: svc{}.example.com\n    ", i % 97),
            1 => format!("host: \"*.tenant{}.example.com\"\n    ", i % 89),
            _ => String::new(),
        };
        yaml.push_str(&format!(
            "  c{i}:\n    {host}prefix: /api/v{}/service{i}/items\n    headers: {{ x-tenant: {{ regex: \"[a-z]{{3,12}}\" }}, x-canary: \"1\" }}\n    query: {{ version: \"2\" }}\n    cookies: {{ beta: \"on\" }}\n    upstream: http://127.0.0.1:{}\n",
            i % 7,
            9000 + i % 1000
        ));
    }
    yaml
}
