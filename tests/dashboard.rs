//! The admin dashboard in a real headless browser: the page renders the live
//! routes from the admin API, charts each route's recent rate, 5xx share
//! and p99 and each upstream's state, shows a new route and version after
//! the route file is edited, and lists the TLS certificates with their days
//! left.
//!
//! Needs Debian's `chromium`. Without it the test is skipped with a printed
//! reason, except under `CI=true`, where a missing browser is a failure.
//!
//! The browser also takes a screenshot of the page; set
//! `SWITCHYARD_DASHBOARD_PNG=docs/dashboard.png` to keep it (that is how
//! `docs/dashboard.png` is made).

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use support::{eventually, TestCa, TestRouter};
use switchyard::tls::PairPaths;

/// A hung browser fails the test instead of hanging it.
const BROWSER_DEADLINE: Duration = Duration::from_secs(90);

/// How long the watcher may take to make the edited file live: generous for
/// a loaded CI machine (with a browser running), still short for a failure.
const LIVE_WITHIN: Duration = Duration::from_secs(10);

/// Virtual time the page gets before its DOM is dumped: enough for the
/// first fetch round and a couple of 2 s refreshes, which is how the page
/// gets its first rates. Virtual time only runs while nothing is loading.
const VIRTUAL_TIME_BUDGET_MS: u32 = 5_000;

fn find_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// The browser, or `None` after saying why `test` is skipped; under
/// `CI=true` a missing browser fails the test instead.
fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    let found = find_chromium();
    if found.is_none() {
        let reason = "chromium not found (apt-get install -y chromium, or set CHROMIUM)";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true requires a browser: {reason}"
        );
        eprintln!("skipping {test}: {reason}");
    }
    found
}

/// Loads `url` headless and returns the DOM after its scripts have run.
async fn dump_dom(chromium: &PathBuf, url: &str) -> String {
    let output = run_chromium(chromium, &["--dump-dom".as_ref(), url.as_ref()]).await;
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Loads `url` headless and saves what it shows as a PNG at `path`.
async fn screenshot(chromium: &PathBuf, url: &str, path: &std::path::Path) {
    let mut target = std::ffi::OsString::from("--screenshot=");
    target.push(path);
    run_chromium(
        chromium,
        &[
            target.as_os_str(),
            "--window-size=1400,760".as_ref(),
            "--hide-scrollbars".as_ref(),
            url.as_ref(),
        ],
    )
    .await;
}

/// Runs the browser headless on a fresh profile with `args`, once the
/// page has had its virtual time.
async fn run_chromium(chromium: &PathBuf, args: &[&std::ffi::OsStr]) -> std::process::Output {
    let profile = tempfile::tempdir().expect("a temporary profile directory");
    let mut user_data_dir = std::ffi::OsString::from("--user-data-dir=");
    user_data_dir.push(profile.path());
    let output = tokio::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(user_data_dir)
        .arg(format!("--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}"))
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(BROWSER_DEADLINE, output)
        .await
        .expect("chromium finished within its deadline")
        .expect("chromium runs");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The markup of the table row of `route`.
fn route_row<'d>(dom: &'d str, route: &str) -> &'d str {
    let start = dom
        .find(&format!(r#"data-route="{route}""#))
        .unwrap_or_else(|| panic!("no row for {route}:\n{dom}"));
    let row = &dom[start..];
    &row[..row.find("</tr>").unwrap_or(row.len())]
}

/// How many samples the `chart` sparkline of `route` draws.
fn chart_points(dom: &str, route: &str, chart: &str) -> usize {
    let row = route_row(dom, route);
    let marker = format!(r#"data-chart="{chart}" data-points=""#);
    let at = row
        .find(&marker)
        .unwrap_or_else(|| panic!("no {chart} chart for {route}:\n{row}"));
    let digits: String = row[at + marker.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().expect("a count of points")
}

/// Seconds of traffic behind the kept screenshot.
const PICTURE_SECONDS: u32 = 45;

/// [`PICTURE_SECONDS`] of traffic that rises and falls, with some 5xx and
/// requests to nowhere, paced a second a round so each round is a sample.
async fn varied_traffic(router: &TestRouter) {
    let mut pace = tokio::time::interval(Duration::from_secs(1));
    for round in 0..PICTURE_SECONDS {
        pace.tick().await;
        let hello = 2 + (round % 9).min(9 - round % 9);
        let mut paths = vec!["/hello"; hello as usize];
        if round % 4 == 0 {
            paths.extend(["/broken", "/nowhere"]);
        }
        if round % 10 == 5 {
            paths.push("/added");
        }
        for path in paths {
            router.get(path).send().await.expect("the proxy answers");
        }
    }
}

/// Waits until `/history` has a one-second sample in which `route` served
/// requests, so the page has something to draw.
async fn sampled_with_traffic(router: &TestRouter, route: &str) {
    eventually(LIVE_WITHIN, || async {
        let (_, history) = router.admin_json("/history").await;
        history["routes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["route"] == route)
            .flat_map(|r| r["rate"].as_array().cloned().unwrap_or_default())
            .any(|rate| rate.as_f64() > Some(0.0))
    })
    .await;
}

/// Waits until `/history` has a sample with an upstream of `route` in
/// `state`.
async fn sampled_in_state(router: &TestRouter, route: &str, state: &str) {
    eventually(LIVE_WITHIN, || async {
        let (_, history) = router.admin_json("/history").await;
        history["upstreams"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|u| u["route"] == route)
            .flat_map(|u| u["states"].as_array().cloned().unwrap_or_default())
            .any(|run| run[0] == state)
    })
    .await;
}

const ROUTES: &str = r#"
routes:
  hello:
    prefix: /hello
    respond: { body: "hello\n" }
  broken:
    prefix: /broken
    respond: { status: 503 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_live_routes_and_follows_reloads() {
    let Some(chromium) = chromium_or_skip("dashboard_shows_live_routes_and_follows_reloads") else {
        return;
    };
    let router = TestRouter::with_yaml(ROUTES).start().await;
    for path in ["/hello", "/hello", "/broken", "/nowhere"] {
        router.get(path).send().await.expect("the proxy answers");
    }
    sampled_with_traffic(&router, "hello").await;
    sampled_with_traffic(&router, "broken").await;

    let dom = dump_dom(&chromium, &router.admin_url("/")).await;
    assert!(
        dom.contains(r#"data-version="1""#),
        "version 1 not shown:\n{dom}"
    );
    for route in ["hello", "broken", "_none"] {
        assert!(
            dom.contains(&format!(r#"data-route="{route}""#)),
            "route {route} missing:\n{dom}"
        );
    }
    assert!(dom.contains("no reloads yet"), "{dom}");
    // Each route charts its last minutes; the seconds with requests in
    // them are drawn as points.
    for route in ["hello", "broken"] {
        for chart in ["rate", "errors", "p99"] {
            assert!(
                chart_points(&dom, route, chart) >= 1,
                "{route}'s {chart} chart drew nothing:\n{}",
                route_row(&dom, route)
            );
        }
        assert!(
            route_row(&dom, route).contains(r#"<path class="line" d="M"#),
            "{route}'s lines:\n{dom}"
        );
    }
    assert!(
        route_row(&dom, "broken").contains(">100.0%<"),
        "broken's 5xx share:\n{dom}"
    );
    assert!(chart_points(&dom, "_none", "rate") >= 1, "{dom}");
    assert!(
        dom.contains(r#"<span id="status" class="muted">updated"#),
        "the page did not finish a refresh:\n{dom}"
    );

    // The watcher picks up the edit; no admin call needed.
    let refusing = support::closed_port_url().await;
    router.write_config(&format!(
        "{ROUTES}  added:\n    prefix: /added\n    upstream: {refusing}\n"
    ));
    // Version 2 live.
    eventually(LIVE_WITHIN, || async {
        let (_, health) = router.admin_json("/healthz").await;
        health["config"]["version"] == 2
    })
    .await;
    // Three refused connects eject the new route's upstream.
    for _ in 0..3 {
        router
            .get("/added")
            .send()
            .await
            .expect("the proxy answers");
    }
    sampled_in_state(&router, "added", "ejected").await;

    let dom = dump_dom(&chromium, &router.admin_url("/")).await;
    assert!(
        dom.contains(r#"data-version="2""#),
        "version 2 not shown:\n{dom}"
    );
    assert!(
        dom.contains(r#"data-route="added""#),
        "new route missing:\n{dom}"
    );
    assert!(
        dom.contains(&format!("{refusing}/")),
        "new route's target missing:\n{dom}"
    );
    assert!(
        dom.contains(r#"data-state="ejected""#),
        "the upstream's state missing:\n{dom}"
    );
    assert!(
        dom.contains(r#"data-result="ok""#),
        "reload history missing:\n{dom}"
    );
    assert!(dom.contains("added added"), "reload diff missing:\n{dom}");
    let added = route_row(&dom, "added");
    assert!(
        added.contains(r#"<svg class="timeline" data-runs=""#),
        "no state timeline for the new upstream:\n{added}"
    );
    assert!(
        added.contains("<title>ejected for "),
        "the ejection is not on the timeline:\n{added}"
    );

    let kept = std::env::var_os("SWITCHYARD_DASHBOARD_PNG").map(PathBuf::from);
    if kept.is_some() {
        // A picture worth keeping has some history to show.
        varied_traffic(&router).await;
    }
    let scratch = tempfile::tempdir().expect("a directory");
    let png = kept.unwrap_or_else(|| scratch.path().join("dashboard.png"));
    screenshot(&chromium, &router.admin_url("/"), &png).await;
    let bytes = std::fs::read(&png).expect("the screenshot was written");
    assert!(
        bytes.starts_with(b"\x89PNG"),
        "not a PNG: {}",
        png.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_certificates_and_the_days_they_have_left() {
    let Some(chromium) =
        chromium_or_skip("dashboard_shows_certificates_and_the_days_they_have_left")
    else {
        return;
    };
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("a directory");
    let (cert, key) = ca.leaf(&["a.test"]).write(dir.path(), "a");
    let (soon_cert, soon_key) = ca
        .leaf_expiring_in(&["soon.test"], 5)
        .write(dir.path(), "soon");
    let router = TestRouter::with_yaml(ROUTES)
        .tls(vec![
            PairPaths { cert, key },
            PairPaths {
                cert: soon_cert,
                key: soon_key,
            },
        ])
        .start()
        .await;

    let dom = dump_dom(&chromium, &router.admin_url("/")).await;
    assert!(
        dom.contains(r#"<section id="tls">"#),
        "the certificates section is hidden:\n{dom}"
    );
    assert!(dom.contains("<td>a.test</td>"), "a.test missing:\n{dom}");
    assert!(
        dom.contains("<td>soon.test</td>"),
        "soon.test missing:\n{dom}"
    );
    // 90 days from yesterday, and 5 from now: whole days left, rounded down.
    assert!(
        dom.contains(r#"<td class="num">89</td>"#),
        "a.test's days left:\n{dom}"
    );
    assert!(
        dom.contains(r#"<td class="num bad">4</td>"#),
        "soon.test's days left, marked:\n{dom}"
    );
    assert!(
        dom.contains(r#"<b id="tls-last-reload" class="ok">ok</b>"#),
        "the last certificate reload:\n{dom}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_the_candidate_and_its_gates() {
    let Some(chromium) = chromium_or_skip("dashboard_shows_the_candidate_and_its_gates") else {
        return;
    };
    let rollout = "rollout: { percent: 50, for: 1h, min_requests: 1000 }\n";
    let router = TestRouter::with_yaml(format!("{rollout}{ROUTES}"))
        .start()
        .await;
    router.write_config(&format!(
        "{rollout}{ROUTES}  hello-v2:\n    prefix: /hello/v2\n    respond: {{ body: \"v2\\n\" }}\n"
    ));
    eventually(LIVE_WITHIN, || async {
        router.admin_json("/candidate").await.0 == http::StatusCode::OK
    })
    .await;
    for _ in 0..3 {
        router
            .get("/hello/v2")
            .send()
            .await
            .expect("the proxy answers");
    }

    let dom = dump_dom(&chromium, &router.admin_url("/")).await;
    assert!(
        dom.contains(r#"data-candidate="canary""#) && dom.contains(r#"<section id="candidate">"#),
        "the candidate section is hidden:\n{dom}"
    );
    for table in ["live", "candidate"] {
        assert!(
            dom.contains(&format!(r#"data-table="{table}""#)),
            "the {table} table's figures are missing:\n{dom}"
        );
    }
    assert!(
        dom.contains("50% of keys on the candidate, running; gates: 50% by client_ip"),
        "the gates are missing:\n{dom}"
    );
    assert!(
        dom.contains(r#"data-move="hello|hello-v2""#) && dom.contains("/hello/v2<"),
        "the move and its example are missing:\n{dom}"
    );
    assert!(
        dom.contains(r#"data-result="canary""#),
        "the reload that started the canary is missing:\n{dom}"
    );
}
