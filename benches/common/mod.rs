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
