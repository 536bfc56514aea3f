//! Every way SPEC 2 says a route file can be wrong, through the public API
//! (`config::parse`, then `RouteTable::build` for the checks that need the
//! whole table): each is rejected, and the message names the route (or the
//! test), the cause and where in the file it is.
//!
//! Fixtures start at line 1 (`"\` swallows the first newline), so the line
//! numbers asserted are the ones an editor shows.

use std::time::{Duration, SystemTime};

use http::StatusCode;
use switchyard::routes::config::{parse, Config, ConfigError, TargetSpec, DEFAULT_TIMEOUT};
use switchyard::routes::table::{RouteTable, TableMeta};

fn meta() -> TableMeta {
    TableMeta {
        version: 1,
        sha256: String::new(),
        loaded_at: SystemTime::now(),
    }
}

/// The table `yaml` builds, which must be valid.
fn accepted(yaml: &str) -> RouteTable {
    let config = parse(yaml).unwrap_or_else(|e| panic!("rejected by parse: {e}\n{yaml}"));
    RouteTable::build(config, meta()).unwrap_or_else(|e| panic!("rejected by build: {e}\n{yaml}"))
}

/// The config `yaml` parses to, which must parse.
fn parsed(yaml: &str) -> Config {
    parse(yaml).unwrap_or_else(|e| panic!("rejected by parse: {e}\n{yaml}"))
}

/// The error `yaml` is rejected with, whether by `parse` or by `build`.
fn rejection(yaml: &str) -> ConfigError {
    match parse(yaml) {
        Err(error) => error,
        Ok(config) => match RouteTable::build(config, meta()) {
            Err(error) => error,
            Ok(_) => panic!("accepted, but should be rejected:\n{yaml}"),
        },
    }
}

/// The message `yaml` is rejected with.
fn rejected(yaml: &str) -> String {
    rejection(yaml).to_string()
}

/// Asserts that `message` mentions every one of `parts`.
#[track_caller]
fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            message.contains(part),
            "error message does not mention {part:?}:\n{message}"
        );
    }
}

// Unknown fields.

#[test]
fn unknown_route_field_is_rejected_with_route_field_and_line() {
    let message = rejected(
        "\
routes:
  users:
    upstream: http://127.0.0.1:9001
    prefx: /api/users
",
    );
    assert_mentions(
        &message,
        &[
            "routes.users",
            "unknown field `prefx`",
            "`prefix`",
            "line 4 column 5",
        ],
    );
}

#[test]
fn unknown_field_in_respond_is_rejected_with_its_line() {
    let message = rejected(
        "\
routes:
  hello:
    respond:
      stauts: 201
",
    );
    assert_mentions(
        &message,
        &[
            "routes.hello.respond",
            "unknown field `stauts`",
            "line 4 column 7",
        ],
    );
}

#[test]
fn unknown_top_level_key_is_rejected_with_its_line() {
    let message = rejected(
        "\
routes:
  hello:
    respond: {}
rutes: {}
",
    );
    assert_mentions(
        &message,
        &["unknown field `rutes`", "`routes`", "line 4 column 1"],
    );
}

#[test]
fn misspelled_routes_key_on_the_first_line_is_rejected_with_its_line() {
    let message = rejected(
        "\
rutes:
  hello:
    respond: {}
",
    );
    assert_mentions(&message, &["unknown field `rutes`", "line 1 column 1"]);
}

// Prefixes.

#[test]
fn prefix_not_starting_with_slash_is_rejected() {
    let message = rejected(
        "\
routes:
  health:
    upstream: http://127.0.0.1:9001
  users:
    prefix: api/users
    upstream: http://127.0.0.1:9001
",
    );
    assert_mentions(
        &message,
        &[
            "routes.users.prefix",
            "prefix `api/users`",
            "does not start with `/`",
            "line 5 column 13",
        ],
    );
}

#[test]
fn prefix_with_query_is_rejected() {
    let message = rejected(
        "\
routes:
  users:
    prefix: /api/users?all
    upstream: http://127.0.0.1:9001
",
    );
    assert_mentions(
        &message,
        &[
            "routes.users.prefix",
            "prefix `/api/users?all`",
            "query",
            "line 3 column 13",
        ],
    );
}

// Upstream URLs.

#[test]
fn upstream_that_is_not_a_url_is_rejected() {
    let message = rejected(
        "\
routes:
  users:
    upstream: 127.0.0.1:9001
",
    );
    assert_mentions(
        &message,
        &[
            "routes.users.upstream",
            "upstream `127.0.0.1:9001`",
            "line 3 column 15",
        ],
    );
}

#[test]
fn upstream_with_a_scheme_other_than_http_or_https_is_rejected() {
    let message = rejected(
        "\
routes:
  files:
    upstream: ftp://files.internal/pub
",
    );
    assert_mentions(
        &message,
        &[
            "routes.files.upstream",
            "`ftp://files.internal/pub`",
            "scheme `ftp`",
            "line 3 column 15",
        ],
    );
}

#[test]
fn upstream_without_a_host_is_rejected() {
    let message = rejected(
        "\
routes:
  users:
    upstream: \"http://\"
",
    );
    assert_mentions(
        &message,
        &[
            "routes.users.upstream",
            "`http://`",
            "host",
            "line 3 column 15",
        ],
    );
}

#[test]
fn upstream_with_a_query_is_rejected() {
    let message = rejected(
        "\
routes:
  users:
    upstream: http://127.0.0.1:9001/v2?debug=1
",
    );
    assert_mentions(
        &message,
        &[
            "routes.users.upstream",
            "`http://127.0.0.1:9001/v2?debug=1`",
            "query",
            "line 3 column 15",
        ],
    );
}

#[test]
fn upstream_with_a_fragment_is_rejected() {
    let message = rejected(
        "\
routes:
  users:
    upstream: http://127.0.0.1:9001/v2#top
",
    );
    assert_mentions(
        &message,
        &[
            "routes.users.upstream",
            "`http://127.0.0.1:9001/v2#top`",
            "fragment",
            "line 3 column 15",
        ],
    );
}

#[test]
fn upstream_with_credentials_is_rejected() {
    let message = rejected(
        "\
routes:
  users:
    upstream: http://admin:secret@127.0.0.1:9001
",
    );
    assert_mentions(
        &message,
        &["routes.users.upstream", "credentials", "line 3 column 15"],
    );
}

#[test]
fn bad_url_inside_upstreams_is_rejected_at_the_bad_entry() {
    let message = rejected(
        "\
routes:
  users:
    upstreams: [http://127.0.0.1:9001, ftp://127.0.0.1:9002]
",
    );
    assert_mentions(
        &message,
        &[
            "routes.users.upstreams[1]",
            "`ftp://127.0.0.1:9002`",
            "scheme `ftp`",
            "line 3 column 40",
        ],
    );
}

#[test]
fn empty_upstreams_list_is_rejected() {
    let message = rejected(
        "\
routes:
  users:
    upstreams: []
",
    );
    assert_mentions(
        &message,
        &["routes.users.upstreams", "empty", "line 3 column 16"],
    );
}

// Weighted upstreams and active checks (SPEC 2).

#[test]
fn weighted_entries_mix_with_plain_urls() {
    let config = parsed(
        "\
routes:
  users:
    upstreams:
      - { url: http://127.0.0.1:9004, weight: 9 }
      - http://127.0.0.1:9005
    health: { path: /healthz }
",
    );
    let TargetSpec::Upstreams(upstreams) = &config.routes[0].target else {
        panic!("not an upstream route");
    };
    let weights: Vec<u32> = upstreams.iter().map(|u| u.weight).collect();
    assert_eq!(weights, [9, 1]);
    let health = config.routes[0].health.as_ref().expect("health");
    assert_eq!(health.path, "/healthz");
    assert_eq!(health.interval, std::time::Duration::from_secs(5));
    assert_eq!(health.timeout, std::time::Duration::from_secs(1));
    assert_eq!((health.healthy, health.unhealthy), (2, 3));
}

#[test]
fn weight_outside_one_to_a_hundred_is_rejected_at_the_entry() {
    for weight in ["0", "101", "-1", "heavy"] {
        let message = rejected(&format!(
            "\
routes:
  users:
    upstreams:
      - {{ url: http://a:1, weight: {weight} }}
"
        ));
        assert_mentions(
            &message,
            &["routes.users.upstreams[0]", "weight", "line 4 column"],
        );
    }
}

#[test]
fn unknown_field_in_an_upstream_entry_is_rejected() {
    let message = rejected(
        "\
routes:
  users:
    upstreams:
      - { url: http://a:1, wieght: 2 }
",
    );
    assert_mentions(&message, &["unknown field `wieght`", "line 4 column"]);
}

#[test]
fn an_upstream_listed_twice_is_rejected() {
    let message = rejected(
        "\
routes:
  users:
    upstreams: [http://a:1, http://b:2, http://a:1]
",
    );
    assert_mentions(
        &message,
        &[
            "routes.users.upstreams[2]",
            "listed twice",
            "weight",
            "line 3",
        ],
    );
}

#[test]
fn health_checks_are_validated_field_by_field() {
    let cases = [
        ("{ interval: 5s }", "missing field `path`"),
        ("{ path: healthz }", "must start with `/`"),
        ("{ path: /h, interval: soon }", "not a duration"),
        ("{ path: /h, healthy: 0 }", "not from 1 to 100"),
        ("{ path: /h, unhealthy: 1000 }", "not from 1 to 100"),
        ("{ path: /h, retries: 2 }", "unknown field `retries`"),
    ];
    for (health, expected) in cases {
        let message = rejected(&format!(
            "\
routes:
  users:
    upstream: http://a:1
    health: {health}
"
        ));
        assert_mentions(&message, &["routes.users.health", expected, "line 4"]);
    }
}

#[test]
fn health_on_a_respond_route_is_rejected() {
    let message = rejected(
        "\
routes:
  hello:
    respond: { body: hi }
    health: { path: /healthz }
",
    );
    assert_mentions(
        &message,
        &["routes.hello", "`health` applies only to upstream routes"],
    );
}

#[test]
fn upstream_base_path_is_accepted() {
    let config = parsed(
        "\
routes:
  users:
    upstream: https://users.internal:8443/v2
",
    );
    let TargetSpec::Upstreams(urls) = &config.routes[0].target else {
        panic!("not an upstream route");
    };
    assert_eq!(urls[0].url.as_str(), "https://users.internal:8443/v2");
}

// Targets: exactly one of upstream / upstreams / respond / redirect.

#[test]
fn route_without_a_target_is_rejected() {
    let message = rejected(
        "\
routes:
  hello:
    respond: {}
  users:
    prefix: /api/users
",
    );
    assert_mentions(
        &message,
        &[
            "routes.users",
            "`upstream`, `upstreams`, `respond` or `redirect`",
            "line 4 column 3",
        ],
    );
}

#[test]
fn route_with_upstream_and_respond_is_rejected() {
    let message = rejected(
        "\
routes:
  users:
    upstream: http://127.0.0.1:9001
    respond: { status: 503 }
",
    );
    assert_mentions(
        &message,
        &[
            "routes.users",
            "only one of `upstream`, `upstreams`, `respond` or `redirect`",
            "line 2 column 3",
        ],
    );
}

#[test]
fn route_with_upstream_and_upstreams_is_rejected() {
    let message = rejected(
        "\
routes:
  users:
    upstream: http://127.0.0.1:9001
    upstreams: [http://127.0.0.1:9002]
",
    );
    assert_mentions(
        &message,
        &["routes.users", "only one of", "line 2 column 3"],
    );
}

#[test]
fn respond_route_with_strip_prefix_is_rejected() {
    let message = rejected(
        "\
routes:
  hello:
    prefix: /hello
    respond: {}
    strip_prefix: true
",
    );
    assert_mentions(
        &message,
        &[
            "routes.hello",
            "`strip_prefix`",
            "`respond`",
            "line 2 column 3",
        ],
    );
}

#[test]
fn respond_route_with_timeout_is_rejected() {
    let message = rejected(
        "\
routes:
  hello:
    respond: {}
    timeout: 5s
",
    );
    assert_mentions(
        &message,
        &["routes.hello", "`timeout`", "`respond`", "line 2 column 3"],
    );
}

// Durations.

#[test]
fn duration_with_an_unknown_unit_is_rejected() {
    let message = rejected(
        "\
routes:
  users:
    timeout: 5 parsecs
    upstream: http://127.0.0.1:9001
",
    );
    assert_mentions(
        &message,
        &[
            "routes.users.timeout",
            "`5 parsecs` is not a duration",
            "250ms",
            "line 3 column 14",
        ],
    );
}

#[test]
fn duration_without_a_unit_is_rejected() {
    let message = rejected(
        "\
routes:
  users:
    timeout: 5
    upstream: http://127.0.0.1:9001
",
    );
    assert_mentions(
        &message,
        &[
            "routes.users.timeout",
            "`5` is not a duration",
            "line 3 column 14",
        ],
    );
}

#[test]
fn zero_duration_is_rejected() {
    let message = rejected(
        "\
routes:
  users:
    timeout: 0s
    upstream: http://127.0.0.1:9001
",
    );
    assert_mentions(
        &message,
        &[
            "routes.users.timeout",
            "`0s`",
            "more than zero",
            "line 3 column 14",
        ],
    );
}

#[test]
fn bad_value_is_reported_at_its_own_line_not_the_routes_first_field() {
    let message = rejected(
        "\
routes:
  users:
    upstream: http://127.0.0.1:9001
    strip_prefix: true
    timeout: 5 parsecs
",
    );
    assert_mentions(
        &message,
        &["routes.users.timeout", "`5 parsecs`", "line 5 column 14"],
    );
}

// Status codes.

#[test]
fn status_outside_200_to_599_is_rejected() {
    for status in ["99", "199", "600"] {
        let message = rejected(&format!(
            "\
routes:
  hello:
    respond:
      status: {status}
"
        ));
        assert_mentions(
            &message,
            &[
                "routes.hello.respond.status",
                &format!("status {status} "),
                "200 to 599",
                "line 4 column 15",
            ],
        );
    }
}

#[test]
fn status_that_is_not_a_number_is_rejected() {
    let message = rejected(
        "\
routes:
  hello:
    respond:
      status: abc
",
    );
    assert_mentions(
        &message,
        &[
            "routes.hello.respond.status",
            "`abc`",
            "not a number",
            "line 4 column 15",
        ],
    );
}

#[test]
fn quoted_status_is_accepted() {
    let config = parsed(
        "\
routes:
  hello:
    respond: { status: \"204\" }
",
    );
    let TargetSpec::Respond(respond) = &config.routes[0].target else {
        panic!("not a respond route");
    };
    assert_eq!(respond.status, StatusCode::NO_CONTENT);
}

// Duplicates.

#[test]
fn duplicate_route_name_is_reported_at_the_repeated_name() {
    let message = rejected(
        "\
routes:
  hello:
    respond: {}
  users:
    upstream: http://127.0.0.1:9001
  users:
    upstream: http://127.0.0.1:9002
",
    );
    assert_mentions(
        &message,
        &["routes", "duplicate route name `users`", "line 6 column 3"],
    );
}

#[test]
fn invalid_route_name_is_reported_at_its_own_line() {
    let message = rejected(
        "\
routes:
  hello:
    respond: {}
  user list:
    upstream: http://127.0.0.1:9001
",
    );
    assert_mentions(
        &message,
        &["routes", "route name `user list`", "line 4 column 3"],
    );
}

#[test]
fn duplicate_field_in_a_route_is_rejected() {
    let message = rejected(
        "\
routes:
  users:
    upstream: http://127.0.0.1:9001
    upstream: http://127.0.0.1:9002
",
    );
    assert_mentions(&message, &["routes.users", "duplicate field `upstream`"]);
    // serde's derive raises this error for the route's whole mapping, so it
    // may be placed at the mapping's first key (line 3) rather than at the
    // repeated key (line 4); either is on the route. The exact position is
    // `duplicate_field_is_reported_at_the_repeated_key`.
    assert!(
        message.contains("line 3 column 5") || message.contains("line 4 column 5"),
        "error message does not point into the route:\n{message}"
    );
}

#[test]
fn duplicate_field_is_reported_at_the_repeated_key() {
    let message = rejected(
        "\
routes:
  users:
    prefix: /api/users
    upstream: http://127.0.0.1:9001
    upstream: http://127.0.0.1:9002
",
    );
    assert_mentions(
        &message,
        &[
            "routes.users",
            "duplicate field `upstream`",
            "line 5 column 5",
        ],
    );
}

#[test]
fn duplicate_top_level_key_is_rejected() {
    let message = rejected(
        "\
routes:
  users:
    upstream: http://127.0.0.1:9001
routes:
  hello:
    respond: {}
",
    );
    assert_mentions(&message, &["duplicate field `routes`"]);
}

#[test]
fn duplicate_top_level_key_is_reported_with_its_line() {
    let message = rejected(
        "\
routes:
  users:
    upstream: http://127.0.0.1:9001
routes:
  hello:
    respond: {}
",
    );
    assert_mentions(&message, &["duplicate field `routes`", "line 4"]);
}

#[test]
fn duplicate_header_names_differing_only_in_case_are_rejected() {
    let message = rejected(
        "\
routes:
  canary:
    upstream: http://127.0.0.1:9001
    headers: { x-canary: \"1\", X-Canary: \"2\" }
",
    );
    assert_mentions(
        &message,
        &[
            "routes.canary.headers",
            "duplicate header `X-Canary`",
            "line 4 column 31",
        ],
    );
}

#[test]
fn duplicate_response_header_is_rejected() {
    let message = rejected(
        "\
routes:
  hello:
    respond:
      headers:
        content-type: text/plain
        Content-Type: text/html
",
    );
    assert_mentions(
        &message,
        &[
            "routes.hello.respond.headers",
            "duplicate header `Content-Type`",
            "line 6 column 9",
        ],
    );
}

// Conflicts (rule 4).

#[test]
fn conflicting_routes_are_rejected_naming_both() {
    let error = rejection(
        "\
routes:
  users:
    host: api.example.com
    prefix: /api/users
    upstream: http://127.0.0.1:9001
  users-v2:
    host: api.example.com
    prefix: /api/users
    upstream: http://127.0.0.1:9002
",
    );
    assert!(matches!(error, ConfigError::Conflict { .. }), "{error:?}");
    assert_mentions(
        &error.to_string(),
        &["`users`", "routes.users-v2", "line 6"],
    );
}

#[test]
fn routes_spelling_the_same_match_differently_conflict() {
    let cases = [
        ("prefix: /api/users/", "prefix: /api/users"),
        ("host: API.Example.com", "host: api.example.com"),
        (
            "headers: { X-Canary: \"1\" }",
            "headers: { x-canary: \"1\" }",
        ),
        ("methods: [POST, GET]", "methods: [GET, POST, GET]"),
    ];
    for (first, second) in cases {
        let message = rejected(&format!(
            "\
routes:
  first:
    {first}
    upstream: http://127.0.0.1:9001
  second:
    {second}
    upstream: http://127.0.0.1:9002
"
        ));
        assert_mentions(&message, &["`first`", "routes.second", "line 5"]);
    }
}

#[test]
fn routes_differing_in_any_one_condition_do_not_conflict() {
    let cases = [
        ("prefix: /api/users", "prefix: /api/orders"),
        ("host: api.example.com", "host: \"*.example.com\""),
        (
            "headers: { x-canary: \"1\" }",
            "headers: { x-canary: \"2\" }",
        ),
        ("methods: [GET]", "methods: [POST]"),
        ("methods: [GET]", "prefix: /"),
    ];
    for (first, second) in cases {
        let table = accepted(&format!(
            "\
routes:
  first:
    {first}
    upstream: http://127.0.0.1:9001
  second:
    {second}
    upstream: http://127.0.0.1:9002
"
        ));
        assert_eq!(table.routes().len(), 2);
    }
}

#[test]
fn conflict_is_reported_at_the_routes_own_line_when_a_header_shares_its_name() {
    let message = rejected(
        "\
routes:
  first:
    upstream: http://127.0.0.1:9001
  header-route:
    upstream: http://127.0.0.1:9001
    headers:
      second: \"1\"
  second:
    upstream: http://127.0.0.1:9002
",
    );
    assert_mentions(&message, &["`first`", "routes.second", "line 8"]);
}

// Methods and names.

#[test]
fn lower_case_method_is_rejected() {
    let message = rejected(
        "\
routes:
  users:
    upstream: http://127.0.0.1:9001
    methods: [GET, post]
",
    );
    assert_mentions(
        &message,
        &[
            "routes.users.methods[1]",
            "`post`",
            "upper-case",
            "line 4 column 20",
        ],
    );
}

#[test]
fn route_name_with_characters_outside_the_allowed_set_is_rejected() {
    for name in [
        "\"user list\"",
        "api/users",
        "\"users!\"",
        "\"\"",
        "ユーザー",
    ] {
        let message = rejected(&format!(
            "\
routes:
  {name}:
    upstream: http://127.0.0.1:9001
"
        ));
        assert_mentions(
            &message,
            &["route name", "A-Z a-z 0-9 _ . -", "line 2 column 3"],
        );
    }
}

#[test]
fn route_names_using_every_allowed_character_are_accepted() {
    let table = accepted(
        "\
routes:
  Users_v2.canary-1:
    upstream: http://127.0.0.1:9001
",
    );
    assert_eq!(table.routes()[0].name(), "Users_v2.canary-1");
}

#[test]
fn host_with_a_port_is_rejected() {
    let message = rejected(
        "\
routes:
  users:
    host: api.example.com:8080
    upstream: http://127.0.0.1:9001
",
    );
    assert_mentions(
        &message,
        &[
            "routes.users.host",
            "`api.example.com:8080`",
            "not a valid host",
            "line 3 column 11",
        ],
    );
}

// Empty files and the `routes:` key.

#[test]
fn empty_file_is_rejected_as_empty() {
    for text in ["", "\n", "   \n\n", "---\n", "~\n"] {
        assert!(
            matches!(parse(text), Err(ConfigError::Empty)),
            "{text:?} was not rejected as empty"
        );
    }
}

#[test]
fn comment_only_file_is_rejected_as_empty() {
    let error = rejection(
        "\
# routes:
#   users:
#     upstream: http://127.0.0.1:9001
",
    );
    assert!(matches!(error, ConfigError::Empty), "{error:?}");
    assert_mentions(&error.to_string(), &["routes: {}"]);
}

#[test]
fn explicit_empty_routes_is_valid_and_matches_nothing() {
    let table = accepted("routes: {}\n");
    assert!(table.routes().is_empty());
}

#[test]
fn file_without_routes_key_is_rejected() {
    let message = rejected("tests: []\n");
    assert_mentions(&message, &["`routes` is missing or empty", "routes: {}"]);
}

#[test]
fn routes_key_with_every_route_commented_out_is_rejected() {
    let message = rejected("routes:\n  # users:\n  #   upstream: http://127.0.0.1:9001\n");
    assert_mentions(&message, &["`routes` is missing or empty", "routes: {}"]);
}

#[test]
fn empty_methods_list_is_rejected() {
    let message = rejected(
        "\
routes:
  users:
    methods: []
    upstream: http://127.0.0.1:9001
",
    );
    assert_mentions(
        &message,
        &["routes.users", "`methods` is empty", "line 2 column 3"],
    );
}

#[test]
fn routes_written_as_a_list_is_rejected() {
    let message = rejected(
        "\
routes:
  - users
",
    );
    assert_mentions(&message, &["routes", "mapping", "line 2 column 3"]);
}

// The `tests:` section.

const USERS: &str = "\
routes:
  users:
    host: api.example.com
    prefix: /api/users
    upstream: http://127.0.0.1:9001
  users-canary:
    host: api.example.com
    prefix: /api/users
    headers: { x-canary: \"1\" }
    upstreams: [http://127.0.0.1:9002, http://127.0.0.1:9003]
  writes:
    prefix: /api
    methods: [POST]
    upstream: http://127.0.0.1:9004
";

#[test]
fn passing_tests_are_accepted() {
    let table = accepted(&format!(
        "{USERS}\
tests:
  - {{ host: api.example.com, path: /api/users/7, route: users }}
  - {{ host: API.Example.com, path: /api/users/7, headers: {{ x-canary: \"1\" }}, route: users-canary }}
  - {{ path: /api/orders, method: POST, route: writes }}
  - {{ path: /nowhere, route: null }}
  - {{ path: /api/orders, route: null }}
"
    ));
    assert_eq!(table.routes().len(), 3);
}

#[test]
fn failing_test_is_rejected_with_index_expected_and_actual() {
    let error = rejection(&format!(
        "{USERS}\
tests:
  - {{ host: api.example.com, path: /api/users/7, route: users }}
  - {{ host: api.example.com, path: /api/users/7, route: users-canary }}
"
    ));
    assert!(matches!(error, ConfigError::TestFailed { .. }), "{error:?}");
    assert_mentions(
        &error.to_string(),
        &[
            "tests[1]",
            "api.example.com/api/users/7",
            "expected route `users-canary`",
            "matched route `users`",
        ],
    );
}

#[test]
fn test_expecting_a_route_where_none_matches_is_rejected() {
    let message = rejected(&format!(
        "{USERS}\
tests:
  - {{ path: /api/users/7, route: users }}
"
    ));
    assert_mentions(
        &message,
        &["tests[0]", "expected route `users`", "no route"],
    );
}

#[test]
fn test_expecting_no_route_where_one_matches_is_rejected() {
    let message = rejected(&format!(
        "{USERS}\
tests:
  - {{ path: /api/orders, method: POST, route: null }}
"
    ));
    assert_mentions(
        &message,
        &["tests[0]", "expected no route", "matched route `writes`"],
    );
}

#[test]
fn test_naming_an_undefined_route_is_rejected() {
    let error = rejection(&format!(
        "{USERS}\
tests:
  - {{ path: /nowhere, route: user }}
"
    ));
    assert!(matches!(error, ConfigError::BadTest { .. }), "{error:?}");
    assert_mentions(
        &error.to_string(),
        &["tests[0]", "`user`", "does not define"],
    );
}

#[test]
fn test_without_route_key_is_rejected() {
    let message = rejected(&format!(
        "{USERS}\
tests:
  - {{ path: /nowhere, route: null }}
  - {{ path: /nowhere }}
"
    ));
    assert_mentions(&message, &["tests[1]", "missing field `route`", "line 17"]);
}

#[test]
fn test_with_unknown_field_is_rejected() {
    let message = rejected(&format!(
        "{USERS}\
tests:
  - {{ path: /api/users, rout: users }}
"
    ));
    assert_mentions(&message, &["tests[0]", "unknown field `rout`", "line 16"]);
}

#[test]
fn test_with_lower_case_method_is_rejected() {
    let message = rejected(&format!(
        "{USERS}\
tests:
  - {{ path: /api/users, method: post, route: writes }}
"
    ));
    assert_mentions(&message, &["tests[0]", "`post`", "upper-case", "line 16"]);
}

#[test]
fn test_with_a_path_not_starting_with_slash_is_rejected() {
    let message = rejected(&format!(
        "{USERS}\
tests:
  - {{ path: api/users, route: null }}
"
    ));
    assert_mentions(&message, &["tests[0]", "`api/users`"]);
}

// Defaults.

#[test]
fn omitted_fields_take_their_documented_defaults() {
    let config = parsed(
        "\
routes:
  users:
    upstream: http://127.0.0.1:9001
  hello:
    respond: {}
",
    );
    let users = &config.routes[0];
    assert_eq!(users.name, "users");
    assert_eq!(users.prefix, "/");
    assert_eq!(users.host, None);
    assert!(users.conditions.is_empty());
    assert_eq!(users.methods, None);
    assert!(!users.strip_prefix);
    assert_eq!(users.timeout, Duration::from_secs(30));
    assert_eq!(DEFAULT_TIMEOUT, Duration::from_secs(30));

    let TargetSpec::Respond(respond) = &config.routes[1].target else {
        panic!("not a respond route");
    };
    assert_eq!(respond.status, StatusCode::OK);
    assert!(respond.body.is_empty());
    assert!(respond.headers.is_empty());
    assert!(config.tests.is_empty());
}

#[test]
fn stated_fields_override_the_defaults() {
    let config = parsed(
        "\
routes:
  users:
    prefix: /api/users/
    upstream: http://127.0.0.1:9001
    strip_prefix: true
    timeout: 250ms
  gone:
    respond: { status: 410, body: gone }
",
    );
    let users = &config.routes[0];
    assert_eq!(users.prefix, "/api/users");
    assert!(users.strip_prefix);
    assert_eq!(users.timeout, Duration::from_millis(250));
    let TargetSpec::Respond(respond) = &config.routes[1].target else {
        panic!("not a respond route");
    };
    assert_eq!(respond.status, StatusCode::GONE);
    assert_eq!(&respond.body[..], b"gone");
}

#[test]
fn spec_example_file_is_accepted() {
    let table = accepted(
        "\
routes:
  users:                                  # the route's name: [A-Za-z0-9_.-]+
    prefix: /api/users                    # default \"/\"
    host: api.example.com                 # optional
    upstream: http://127.0.0.1:9001       # exactly one of upstream / upstreams / respond
    strip_prefix: true                    # default false
    timeout: 5s                           # default 30s
  users-canary:
    prefix: /api/users
    host: api.example.com
    headers: { x-canary: \"1\" }            # optional, exact match, names case-insensitive
    upstreams: [http://127.0.0.1:9002, http://127.0.0.1:9003]   # round robin
  hello:
    prefix: /hello
    respond: { status: 200, body: \"hello from switchyard\\n\", headers: { content-type: text/plain } }
tests:
  - { host: api.example.com, path: /api/users/7, route: users }
  - { host: api.example.com, path: /api/users/7, headers: { x-canary: \"1\" }, route: users-canary }
  - { path: /nowhere, route: null }        # null: no route may match
",
    );
    let names: Vec<&str> = table.routes().iter().map(|r| r.name()).collect();
    assert_eq!(names, ["users", "users-canary", "hello"]);
}

#[test]
fn shipped_routes_file_is_accepted() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/routes.yaml"))
        .expect("routes.yaml at the crate root");
    accepted(&text);
}

// Every error in a file (SPEC 1).

#[test]
fn every_broken_route_is_reported_with_its_own_position() {
    let message = rejected(
        "\
routes:
  users:
    prefix: api/users
    upstream: http://127.0.0.1:9001
  legacy:
    upstream: gopher://old.example
  fine:
    upstream: http://127.0.0.1:9002
  both:
    upstream: http://a:1
    respond: {}
  typo:
    prefx: /typo
    upstream: http://a:1
",
    );
    assert_mentions(
        &message,
        &[
            "4 errors",
            "routes.users.prefix",
            "line 3 column 13",
            "routes.legacy.upstream",
            "scheme `gopher`",
            "line 6 column 15",
            "routes.both",
            "only one of",
            "line 9 column 3",
            "routes.typo",
            "unknown field `prefx`",
            "line 13 column 5",
        ],
    );
    assert!(
        !message.contains("fine"),
        "a valid route is not named: {message}"
    );
    let users = message.find("routes.users").expect("users");
    let typo = message.find("routes.typo").expect("typo");
    assert!(users < typo, "in file order: {message}");
}

#[test]
fn a_syntax_error_stops_at_the_first() {
    let message = rejected("routes:\n  a:\n    upstream: \"http://a:1\n  b:\n    prefx: /b\n");
    assert!(!message.contains("errors:"), "{message}");
    assert!(
        !message.contains("prefx"),
        "nothing past a syntax error: {message}"
    );
}
