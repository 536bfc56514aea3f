//! `switchyard check --diff ADMIN_URL` (SPEC 1): the real binary compares a
//! file with the table a running router serves, before the file is saved.

mod support;

use std::process::Output;

use support::{closed_port_url, run_switchyard, RouteFile, TestRouter};

const LIVE: &str = "routes:
  hello:
    prefix: /hello
    respond: { body: hi }
  users:
    prefix: /api/users
    upstream: http://127.0.0.1:9001
  old:
    prefix: /old
    respond: { status: 410 }
";

/// `hello` as it is, `users` moved to another upstream, `old` gone and
/// `new` added.
const EDITED: &str = "routes:
  hello:
    prefix: /hello
    respond: { body: hi }
  users:
    prefix: /api/users
    upstream: http://127.0.0.1:9002
  new:
    prefix: /new
    respond: { body: new }
";

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

async fn check_diff(file: &RouteFile, admin: &str) -> Output {
    run_switchyard(&["check", "--config", file.path_str(), "--diff", admin]).await
}

/// The printed lines that start with `marker` (after indentation).
fn marked<'a>(printed: &'a str, marker: &str) -> Vec<&'a str> {
    printed
        .lines()
        .map(str::trim_start)
        .filter(|line| line.starts_with(&format!("{marker} ")))
        .collect()
}

#[tokio::test]
async fn check_diff_shows_added_changed_and_removed_routes_against_a_running_router() {
    let router = TestRouter::with_yaml(LIVE).start().await;
    let file = RouteFile::with_yaml(EDITED);

    let output = check_diff(&file, &router.admin_url("")).await;

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let printed = stdout(&output);
    let added = marked(&printed, "+");
    let changed = marked(&printed, "~");
    let removed = marked(&printed, "-");
    assert!(
        matches!(added.as_slice(), [line] if line.contains("new") && line.contains("/new")),
        "{printed}"
    );
    assert!(
        matches!(changed.as_slice(), [line] if line.contains("users") && line.contains("9002")),
        "{printed}"
    );
    assert!(
        matches!(removed.as_slice(), [line] if line.contains("old")),
        "{printed}"
    );
    assert!(
        !printed
            .lines()
            .any(|l| l.contains("hello") && l.trim_start().starts_with(['+', '~', '-'])),
        "an unchanged route was listed: {printed}"
    );
    assert!(printed.contains("version 1"), "{printed}");
    // Checking changes nothing on the router.
    assert_eq!(router.version().await, 1);
}

#[tokio::test]
async fn check_diff_of_the_live_file_reports_no_change() {
    let router = TestRouter::with_yaml(LIVE).start().await;
    let file = RouteFile::with_yaml(LIVE);

    let output = check_diff(&file, &router.admin_url("/")).await;

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let printed = stdout(&output);
    assert!(printed.contains("no change"), "{printed}");
    for marker in ["+", "~", "-"] {
        assert!(marked(&printed, marker).is_empty(), "{printed}");
    }
}

#[tokio::test]
async fn check_diff_against_an_unreachable_router_exits_1_and_says_why() {
    let file = RouteFile::with_yaml(EDITED);
    let admin = closed_port_url().await;

    let output = check_diff(&file, &admin).await;

    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    let error = stderr(&output);
    assert!(error.contains("cannot compare with"), "{error}");
    assert!(error.contains(&admin), "{error}");
}

#[tokio::test]
async fn check_diff_of_an_invalid_file_exits_1_with_the_error() {
    let router = TestRouter::with_yaml(LIVE).start().await;
    let file = RouteFile::with_yaml("routes:\n  hello:\n    prefx: /hello\n");

    let output = check_diff(&file, &router.admin_url("")).await;

    assert_eq!(output.status.code(), Some(1));
    let error = stderr(&output);
    assert!(error.contains("prefx"), "{error}");
    assert!(error.contains("line 3"), "{error}");
}
