//! The `switchyard` binary (SPEC 1): `check`, and `run` refusing a bad file.

mod support;

use std::process::Output;

use reqwest::StatusCode;
use support::{client, run_switchyard, RouteFile, SwitchyardProcess, Upstream};

const VALID: &str = "routes:
  users:
    host: api.example.com
    prefix: /api/users
    upstream: http://127.0.0.1:9001/v2
    strip_prefix: true
  hello:
    prefix: /hello
    respond: { body: hi }
";

/// `users` misspells `prefix` on line 6, column 5.
const TYPO: &str = "routes:
  hello:
    prefix: /hello
    respond: { body: hi }
  users:
    prefx: /api/users
    upstream: http://127.0.0.1:9001
";

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn check_accepts_a_valid_file_and_prints_one_line_per_route() {
    let file = RouteFile::with_yaml(VALID);

    let output = run_switchyard(&["check", "--config", file.path_str()]).await;

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let printed = stdout(&output);
    let route_line = |name: &str| {
        printed
            .lines()
            .find(|line| line.trim_start().starts_with(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no line for route {name} in:\n{printed}"))
            .to_owned()
    };
    let users = route_line("users");
    for part in ["api.example.com", "/api/users", "http://127.0.0.1:9001/v2"] {
        assert!(users.contains(part), "{users:?} does not show {part}");
    }
    let hello = route_line("hello");
    assert!(hello.contains("/hello"), "{hello:?}");
    assert!(hello.contains("respond"), "{hello:?}");
}

#[tokio::test]
async fn check_rejects_an_invalid_file_with_line_column_and_route_name() {
    let file = RouteFile::with_yaml(TYPO);

    let output = run_switchyard(&["check", "--config", file.path_str()]).await;

    assert_eq!(output.status.code(), Some(1));
    let error = stderr(&output);
    assert!(error.contains("users"), "no route name: {error}");
    assert!(error.contains("prefx"), "no field: {error}");
    assert!(error.contains("line 6 column 5"), "no position: {error}");
}

#[tokio::test]
async fn check_rejects_a_file_whose_route_tests_fail() {
    let file = RouteFile::with_yaml(
        "routes:
  hello:
    prefix: /hello
    respond: { body: hi }
tests:
  - { path: /hello, route: hello }
  - { path: /elsewhere, route: hello }
",
    );

    let output = run_switchyard(&["check", "--config", file.path_str()]).await;

    assert_eq!(output.status.code(), Some(1));
    let error = stderr(&output);
    assert!(error.contains("tests[1]"), "{error}");
}

#[tokio::test]
async fn check_on_a_missing_file_exits_1() {
    let file = RouteFile::missing();

    let output = run_switchyard(&["check", "--config", file.path_str()]).await;

    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains(file.path_str()),
        "{}",
        stderr(&output)
    );
}

/// `run` on a route file, on ephemeral ports, so a router that wrongly
/// starts binds nothing fixed (and is killed at the deadline).
async fn run_on(file: &RouteFile) -> Output {
    run_switchyard(&[
        "run",
        "--config",
        file.path_str(),
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ])
    .await
}

#[tokio::test]
async fn run_on_an_invalid_file_exits_1_with_the_message_check_prints() {
    let file = RouteFile::with_yaml(TYPO);

    let checked = run_switchyard(&["check", "--config", file.path_str()]).await;
    let ran = run_on(&file).await;

    assert_eq!(ran.status.code(), Some(1));
    let message = stderr(&checked);
    assert!(!message.trim().is_empty());
    assert!(
        stderr(&ran).contains(message.trim()),
        "run said:\n{}\ncheck said:\n{message}",
        stderr(&ran)
    );
}

#[tokio::test]
async fn run_on_a_missing_file_exits_1() {
    let file = RouteFile::missing();

    let ran = run_on(&file).await;

    assert_eq!(ran.status.code(), Some(1));
    assert!(stderr(&ran).contains(file.path_str()), "{}", stderr(&ran));
}

#[tokio::test]
async fn run_on_an_empty_file_exits_1() {
    let file = RouteFile::with_yaml("");

    let ran = run_on(&file).await;

    assert_eq!(ran.status.code(), Some(1));
}

#[tokio::test]
async fn run_serves_the_file_and_exits_0_on_sigterm() {
    let upstream = Upstream::echo("users").start().await;
    let mut router = SwitchyardProcess::run_with_yaml(
        &format!(
            "routes:
  users:
    prefix: /api
    upstream: {}
",
            upstream.url()
        ),
        &[],
    )
    .await;

    let response = client()
        .get(router.proxy_url("/api/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-upstream"], "users");
    router.signal("TERM").await;

    assert_eq!(router.exit_status().await.code(), Some(0));
}

#[tokio::test]
async fn run_ignores_proxy_environment_variables() {
    let upstream = Upstream::echo("direct").start().await;
    let unreachable_proxy = support::closed_port_url().await;
    let mut router = SwitchyardProcess::run_with_yaml_and_env(
        &format!("routes:\n  all:\n    upstream: {}\n", upstream.url()),
        &[],
        &[
            ("HTTP_PROXY", unreachable_proxy.as_str()),
            ("http_proxy", unreachable_proxy.as_str()),
            ("ALL_PROXY", unreachable_proxy.as_str()),
            // No exemption for 127.0.0.1 from the test machine's settings.
            ("NO_PROXY", ""),
            ("no_proxy", ""),
        ],
    )
    .await;

    let response = client().get(router.proxy_url("/")).send().await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-upstream"], "direct");
    router.signal("TERM").await;
    router.exit_status().await;
}
