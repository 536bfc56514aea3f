//! Every new field of SPEC 7.1 to 7.3 refused where it is wrong, through
//! the public API, with the route, the cause and the line and column of
//! the bad value: regexes, conditions, rewrites, header edits, redirects.
//!
//! Fixtures start at line 1 (`"\` swallows the first newline), so the line
//! numbers asserted are the ones an editor shows.

use std::time::SystemTime;

use switchyard::routes::config::{parse, ConfigError};
use switchyard::routes::table::{RouteTable, TableMeta};

fn rejected(yaml: &str) -> String {
    let error = match parse(yaml) {
        Err(error) => error,
        Ok(config) => {
            let meta = TableMeta {
                version: 1,
                sha256: String::new(),
                loaded_at: SystemTime::now(),
            };
            match RouteTable::build(config, meta) {
                Err(error) => error,
                Ok(_) => panic!("accepted, but should be rejected:\n{yaml}"),
            }
        }
    };
    error.to_string()
}

#[track_caller]
fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            message.contains(part),
            "error message does not mention {part:?}:\n{message}"
        );
    }
}

#[test]
fn a_bad_regex_is_refused_where_it_stands() {
    let message = rejected(
        "\
routes:
  users:
    upstream: http://127.0.0.1:9001
    headers: { x-tenant: { regex: \"[a-z\" } }
",
    );
    assert_mentions(
        &message,
        &[
            "routes.users",
            "regex `[a-z` is not valid",
            "line 4 column 35",
        ],
    );
    let message = rejected(
        "\
routes:
  users:
    upstream: http://127.0.0.1:9001
    path_regex: \"(a{1000}){1000}\"
",
    );
    assert_mentions(
        &message,
        &["routes.users", "compiles to more than", "line 4 column 17"],
    );
}

#[test]
fn a_condition_value_is_a_string_a_regex_or_present() {
    let message = rejected(
        "\
routes:
  users:
    upstream: http://127.0.0.1:9001
    cookies: { beta: { regex: \"on\", present: true } }
",
    );
    assert_mentions(&message, &["routes.users", "not both"]);
    let message = rejected(
        "\
routes:
  users:
    upstream: http://127.0.0.1:9001
    query: { debug: true }
",
    );
    assert_mentions(&message, &["routes.users", "quote it", "line 4"]);
    let message = rejected(
        "\
routes:
  users:
    upstream: http://127.0.0.1:9001
    headers: { X-A: \"1\", x-a: \"2\" }
",
    );
    assert_mentions(
        &message,
        &["routes.users", "duplicate header `x-a`", "line 4"],
    );
}

#[test]
fn routes_differing_only_in_condition_order_conflict() {
    let message = rejected(
        "\
routes:
  first:
    upstream: http://127.0.0.1:9001
    query: { a: \"1\", b: { present: true } }
  second:
    upstream: http://127.0.0.1:9002
    query: { b: { present: true }, a: \"1\" }
",
    );
    assert_mentions(
        &message,
        &[
            "routes.second",
            "same host, prefix, conditions and methods",
            "`first`",
            "line 5",
        ],
    );
}

#[test]
fn rewrite_and_strip_prefix_cannot_go_together() {
    let message = rejected(
        "\
routes:
  users:
    prefix: /api
    upstream: http://127.0.0.1:9001
    strip_prefix: true
    rewrite: { prefix: /v2 }
",
    );
    assert_mentions(
        &message,
        &[
            "routes.users",
            "`rewrite` and `strip_prefix` cannot both be given",
            "line 2",
        ],
    );
}

#[test]
fn a_rewrite_is_a_prefix_or_a_regex_with_its_replacement() {
    for (rewrite, expected) in [
        ("{ regex: \"^/a\" }", "needs `to`"),
        ("{ to: /b }", "`to` needs a `regex`"),
        (
            "{ prefix: /a, regex: \"^/a\", to: /b }",
            "is `{ prefix: P }` or `{ regex: RE, to: T }`",
        ),
        (
            "{ regex: \"^/a/([0-9]+)\", to: \"/b/$2\" }",
            "names group `2`",
        ),
        ("{ prefix: nope }", "does not start with `/`"),
    ] {
        let message = rejected(&format!(
            "routes:\n  users:\n    upstream: http://127.0.0.1:9001\n    rewrite: {rewrite}\n"
        ));
        assert_mentions(&message, &["routes.users", expected, "line 4"]);
    }
}

#[test]
fn header_edits_refuse_hop_by_hop_content_length_and_pseudo_headers() {
    for (edit, name) in [
        (
            "request_headers: { set: { connection: close } }",
            "connection",
        ),
        (
            "request_headers: { remove: [transfer-encoding] }",
            "transfer-encoding",
        ),
        (
            "response_headers: { add: { content-length: \"1\" } }",
            "content-length",
        ),
        ("request_headers: { set: { te: trailers } }", "te"),
    ] {
        let message = rejected(&format!(
            "routes:\n  users:\n    upstream: http://127.0.0.1:9001\n    {edit}\n"
        ));
        assert_mentions(
            &message,
            &[
                "routes.users",
                &format!("`{name}` is not a header a route may edit"),
                "line 4",
            ],
        );
    }
    let message = rejected(
        "routes:\n  users:\n    upstream: http://127.0.0.1:9001\n    request_headers: { set: { \":authority\": x } }\n",
    );
    assert_mentions(&message, &["pseudo-header", "line 4 column 31"]);
    let message = rejected(
        "routes:\n  users:\n    upstream: http://127.0.0.1:9001\n    request_headers: { sett: { a: b } }\n",
    );
    assert_mentions(&message, &["unknown field `sett`", "line 4"]);
}

#[test]
fn redirects_refuse_other_statuses_and_unknown_placeholders() {
    let message = rejected(
        "\
routes:
  old:
    redirect: { to: \"https://shop.example.com{path}\", status: 200 }
",
    );
    assert_mentions(
        &message,
        &[
            "routes.old",
            "redirect status 200 is not 301, 302, 303, 307 or 308",
            "line 3",
        ],
    );
    let message = rejected(
        "\
routes:
  old:
    redirect: { to: \"https://{hots}{path}\" }
",
    );
    assert_mentions(
        &message,
        &[
            "routes.old",
            "`{hots}` is not a placeholder",
            "line 3 column 21",
        ],
    );
    let message = rejected(
        "\
routes:
  old:
    redirect: { to: /new }
    upstream: http://127.0.0.1:9001
",
    );
    assert_mentions(
        &message,
        &[
            "routes.old",
            "only one of `upstream`, `upstreams`, `respond` or `redirect`",
        ],
    );
    let message = rejected(
        "\
routes:
  old:
    redirect: { to: /new }
    rewrite: { prefix: /x }
",
    );
    assert_mentions(
        &message,
        &[
            "routes.old",
            "`rewrite` applies only to upstream routes, not `redirect`",
        ],
    );
}

#[test]
fn every_broken_route_is_reported() {
    let error = parse(
        "\
routes:
  a:
    upstream: http://127.0.0.1:9001
    path_regex: \"(\"
  b:
    redirect: { to: \"{nope}\" }
  c:
    upstream: http://127.0.0.1:9001
    request_headers: { set: { upgrade: h2c } }
",
    )
    .expect_err("three broken routes");
    let ConfigError::Many(errors) = &error else {
        panic!("one error only: {error}");
    };
    assert_eq!(errors.len(), 3, "{error}");
}

#[test]
fn protection_settings_are_refused_where_they_are_wrong() {
    for (setting, expected) in [
        ("rate_limit: { rate: 10 }", "is not N/s, N/m or N/h"),
        ("rate_limit: { rate: 0/s }", "lets nothing through"),
        (
            "rate_limit: { rate: 10/s, burst: 0 }",
            "burst 0 is not from 1",
        ),
        (
            "rate_limit: { rate: 10/s, key: ip }",
            "key `ip` is not `route`, `client_ip` or `header:NAME`",
        ),
        (
            "rate_limit: { rate: 10/s, max_keys: 0 }",
            "max_keys 0 is not from 1",
        ),
        ("max_in_flight: 0", "max_in_flight 0 is not from 1"),
        ("retry: { on: [404] }", "status 404 is not retried"),
        (
            "retry: { on: [503], attempts: 6 }",
            "attempts 6 is not from 1 to 5",
        ),
        (
            "retry: { on: [timeout] }",
            "`timeout` needs a `per_try_timeout`",
        ),
        (
            "retry: { on: [503], budget: 120% }",
            "is not a share from 0% to 100%",
        ),
        ("retry: { on: [] }", "`on` is empty"),
        (
            "balance: fastest",
            "balance `fastest` is not round_robin, least_request or hash",
        ),
        ("balance: hash", "`balance: hash` needs `hash_on`"),
        (
            "hash_on: client_ip",
            "`hash_on` applies only with `balance: hash`",
        ),
        ("mirror: { to: \"ftp://x\" }", "is not http, https or h2c"),
        (
            "mirror: { to: \"http://127.0.0.1:9\", percent: 101 }",
            "is not a share from 0% to 100%",
        ),
    ] {
        let message = rejected(&format!(
            "routes:\n  users:\n    upstream: http://127.0.0.1:9001\n    {setting}\n"
        ));
        assert_mentions(&message, &["routes.users", expected]);
    }
    let message =
        rejected("routes:\n  fixed:\n    respond: { body: hi }\n    retry: { on: [503] }\n");
    assert_mentions(
        &message,
        &["`retry` applies only to upstream routes, not `respond`"],
    );
}

#[test]
fn protection_defaults_follow_the_spec() {
    let config = parse(
        "routes:\n  users:\n    upstream: http://127.0.0.1:9001\n    rate_limit: { rate: 150/m }\n    retry: { on: [5xx, reset] }\n    mirror: { to: \"h2c://127.0.0.1:9\" }\n",
    )
    .expect("a valid file");
    let route = &config.routes[0];
    let limit = route.rate_limit.as_ref().expect("a limit");
    assert_eq!(limit.burst, 3, "the rate per second, rounded up");
    assert_eq!(limit.max_keys, 100_000);
    let retry = route.retry.as_ref().expect("a retry");
    assert_eq!((retry.attempts, retry.budget_percent), (3, 20));
    assert_eq!(route.mirror.as_ref().expect("a mirror").percent, 100);
}
