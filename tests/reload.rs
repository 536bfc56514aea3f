//! Hot reload by file edit (SPEC 5): a real router watching its route file
//! in a temporary directory.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use support::{eventually, greeting, TestRouter};

/// How long an edit may take to go live in these tests. SPEC 5 promises
/// 200 ms; the margin absorbs a loaded CI machine.
const LIVE_WITHIN: Duration = Duration::from_secs(1);

/// `greeting` with a misspelled field (`prefx`) on line 3.
const TYPO: &str = "routes:
  greeting:
    prefx: /greeting
    respond: { body: \"typo\" }
";

async fn body_at(router: &TestRouter, path: &str) -> String {
    let response = router.get(path).send().await.unwrap();
    response.text().await.unwrap()
}

/// Waits until the router has rejected the file, and returns `/healthz`.
async fn rejected(router: &TestRouter) -> Value {
    eventually(LIVE_WITHIN, || async {
        let health = router.healthz().await;
        (health["last_reload"]["ok"] == false).then_some(health)
    })
    .await
}

#[tokio::test]
async fn edit_is_served_within_a_second() {
    let router = TestRouter::with_yaml(greeting("one")).start().await;
    assert_eq!(body_at(&router, "/greeting").await, "one");

    router.write_config(&greeting("two"));

    eventually(LIVE_WITHIN, || async {
        body_at(&router, "/greeting").await == "two"
    })
    .await;
    assert_eq!(router.version().await, 2);
}

#[tokio::test]
async fn edit_saved_by_rename_is_served_within_a_second() {
    let router = TestRouter::with_yaml(greeting("one")).start().await;

    router.replace_config(&greeting("renamed"));

    eventually(LIVE_WITHIN, || async {
        body_at(&router, "/greeting").await == "renamed"
    })
    .await;
}

#[tokio::test]
async fn invalid_edit_keeps_serving_old_routes() {
    let router = TestRouter::with_yaml(greeting("one")).start().await;

    router.write_config(TYPO);
    let health = rejected(&router).await;

    let error = health["last_reload"]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no last_reload.error in {health}"));
    assert!(error.contains("prefx"), "{error}");
    assert!(error.contains("line 3"), "{error}");
    assert_eq!(health["config"]["version"], 1);
    assert_eq!(body_at(&router, "/greeting").await, "one");
}

#[tokio::test]
async fn valid_edit_after_an_invalid_one_is_picked_up() {
    let router = TestRouter::with_yaml(greeting("one")).start().await;
    router.write_config(TYPO);
    rejected(&router).await;

    router.write_config(&greeting("fixed"));

    eventually(LIVE_WITHIN, || async {
        body_at(&router, "/greeting").await == "fixed"
    })
    .await;
    let health = router.healthz().await;
    assert_eq!(health["last_reload"]["ok"], true, "{health}");
    assert_eq!(health["last_reload"]["error"], Value::Null, "{health}");
    assert_eq!(health["config"]["version"], 2);
}

#[tokio::test]
async fn edit_whose_route_tests_fail_is_rejected() {
    let router = TestRouter::with_yaml(greeting("one")).start().await;

    router.write_config(
        "routes:
  greeting:
    prefix: /greetings
    respond: { body: \"moved\" }
tests:
  - { path: /greeting, route: greeting }
",
    );
    let health = rejected(&router).await;

    let error = health["last_reload"]["error"].as_str().unwrap();
    assert!(error.contains("tests[0]"), "{error}");
    assert_eq!(health["config"]["version"], 1);
    assert_eq!(body_at(&router, "/greeting").await, "one");
}

#[tokio::test]
async fn emptied_file_is_rejected_and_old_routes_keep_serving() {
    let router = TestRouter::with_yaml(greeting("one")).start().await;

    router.write_config("");
    rejected(&router).await;

    assert_eq!(router.version().await, 1);
    assert_eq!(body_at(&router, "/greeting").await, "one");
}

#[tokio::test]
async fn deleted_file_keeps_old_routes_and_a_recreated_one_is_picked_up() {
    let router = TestRouter::with_yaml(greeting("one")).start().await;

    std::fs::remove_file(router.config_path()).unwrap();
    rejected(&router).await;
    assert_eq!(body_at(&router, "/greeting").await, "one");

    router.write_config(&greeting("back"));
    eventually(LIVE_WITHIN, || async {
        body_at(&router, "/greeting").await == "back"
    })
    .await;
}

#[tokio::test]
async fn identical_bytes_rewritten_change_nothing() {
    let yaml = greeting("one");
    let router = TestRouter::with_yaml(yaml.as_str()).start().await;

    router.write_config(&yaml);
    let (status, body) = router.reload().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["reload"]["result"], "unchanged", "{body}");
    // An invalid edit afterwards shows that the watcher has caught up with
    // the identical rewrite, whatever it made of it.
    router.write_config(TYPO);
    rejected(&router).await;

    assert_eq!(router.version().await, 1);
    let (_, history) = router.admin_json("/reloads").await;
    let reloads = history["reloads"].as_array().unwrap();
    assert!(
        reloads.iter().all(|attempt| attempt["result"] != "ok"),
        "identical bytes were reloaded: {history}"
    );
    assert!(
        reloads
            .iter()
            .all(|attempt| attempt["trigger"] != "watch" || attempt["result"] != "unchanged"),
        "an unchanged watch attempt was recorded: {history}"
    );
}

#[tokio::test]
async fn version_grows_by_one_per_live_table_and_never_goes_back() {
    let router = TestRouter::with_yaml(greeting("v1")).start().await;
    let mut seen = vec![router.version().await];

    for yaml in [
        greeting("v2"),
        TYPO.to_owned(),
        greeting("v3"),
        greeting("v4"),
    ] {
        router.write_config(&yaml);
        if yaml.as_str() == TYPO {
            rejected(&router).await;
        } else {
            let expected = format!("v{}", seen.last().unwrap() + 1);
            eventually(LIVE_WITHIN, || async {
                body_at(&router, "/greeting").await == expected
            })
            .await;
        }
        seen.push(router.version().await);
    }

    assert_eq!(seen, [1, 2, 2, 3, 4]);
    let (_, history) = router.admin_json("/reloads").await;
    let versions: Vec<u64> = history["reloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|attempt| attempt["version"].as_u64().unwrap())
        .collect();
    assert!(
        versions.windows(2).all(|w| w[0] >= w[1]),
        "versions in /reloads, newest first, went up: {versions:?}"
    );
}
