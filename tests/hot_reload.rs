//! Hot reload the way real deployments change a file (SPEC 5): editors that
//! write in place, in chunks or by rename, delete and re-create, Kubernetes
//! ConfigMap updates through a `..data` symlink, SIGHUP to the real binary,
//! concurrent triggers, a watcher that cannot start, a `subPath` mount, and
//! requests in flight across reloads, under load.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::{client, eventually, greeting, json_of, SwitchyardProcess, TestRouter, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long an edit may take to go live with the watcher. SPEC 5 promises
/// 200 ms; the margin absorbs a loaded CI machine.
const LIVE_WITHIN: Duration = Duration::from_secs(2);

/// The poller needs the same bytes on two reads one interval apart, so an
/// edit can take two intervals; the margin is for a loaded machine.
const POLL_LIVE_WITHIN: Duration = Duration::from_secs(5);

fn sha256_hex(bytes: &str) -> String {
    Sha256::digest(bytes.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn body_at(router: &TestRouter, path: &str) -> String {
    let response = router.get(path).send().await.unwrap();
    response.text().await.unwrap()
}

/// `GET /reloads`, newest first.
async fn history(router: &TestRouter) -> Vec<Value> {
    let (status, body) = router.admin_json("/reloads").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["reloads"].as_array().expect("a reloads list").clone()
}

async fn served_within(router: &TestRouter, deadline: Duration, path: &str, expected: &str) {
    eventually(deadline, || async {
        body_at(router, path).await == expected
    })
    .await;
}

// ---------------------------------------------------------------------------
// Every way a file changes

/// Two routes; a chunked write's first chunk holds only `alpha`.
fn alpha_beta(version: &str) -> String {
    format!("{}{}", alpha_only(version), beta_entry(version))
}

fn alpha_only(version: &str) -> String {
    format!(
        "routes:
  alpha:
    prefix: /alpha
    respond: {{ body: \"alpha {version}\" }}
"
    )
}

fn beta_entry(version: &str) -> String {
    format!(
        "  beta:
    prefix: /beta
    respond: {{ body: \"beta {version}\" }}
"
    )
}

/// Writes the route file in place in two chunks, the first of which is a
/// valid table with fewer routes, holding the file open for `gap` between
/// them, and probes throughout the gap that the old table still serves.
/// Meanwhile another file in the same directory is saved, as an editor's
/// swap file or a neighbouring tool would: its event must not make the
/// router read the half-written route file.
async fn write_in_two_chunks_and_check_the_gap(router: &TestRouter, gap: Duration) {
    let first = alpha_only("2");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(router.config_path())
        .unwrap();
    file.write_all(first.as_bytes()).unwrap();
    file.sync_all().unwrap();

    let gap_ends = Instant::now() + gap;
    let mut probes = 0;
    while Instant::now() < gap_ends {
        if probes == 1 {
            std::fs::write(router.dir().join(".routes.yaml.swp"), "swap").unwrap();
        }
        assert_eq!(
            body_at(router, "/beta").await,
            "beta 1",
            "the half-written file went live"
        );
        probes += 1;
        // Only paces the probes; the gap itself is what the test needs.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    file.write_all(beta_entry("2").as_bytes()).unwrap();
    drop(file);
    assert!(probes > 1, "the gap was too short to probe");
}

async fn assert_only_the_complete_file_went_live(router: &TestRouter) {
    assert_eq!(body_at(router, "/alpha").await, "alpha 2");
    assert_eq!(router.version().await, 2, "a table went live in between");
    let complete = sha256_hex(&alpha_beta("2"));
    let half = sha256_hex(&alpha_only("2"));
    let reloads = history(router).await;
    assert!(
        reloads.iter().all(|attempt| attempt["sha256"] != half),
        "the half-written file was read: {reloads:?}"
    );
    let ok: Vec<&Value> = reloads.iter().filter(|a| a["result"] == "ok").collect();
    assert_eq!(ok.len(), 1, "{reloads:?}");
    assert_eq!(ok[0]["sha256"], complete);
}

#[tokio::test]
async fn chunked_in_place_write_goes_live_only_when_complete() {
    let router = TestRouter::with_yaml(alpha_beta("1")).start().await;

    // Long against the debounce and SPEC's 200 ms: a watcher that acted on
    // the first chunk would have put it live within the gap.
    write_in_two_chunks_and_check_the_gap(&router, Duration::from_millis(500)).await;

    served_within(&router, LIVE_WITHIN, "/beta", "beta 2").await;
    assert_only_the_complete_file_went_live(&router).await;
}

#[tokio::test]
async fn chunked_in_place_write_goes_live_only_when_complete_when_polling() {
    let router = TestRouter::with_yaml(alpha_beta("1"))
        .polling()
        .start()
        .await;

    // Shorter than the poll interval: a poller cannot tell a writer that
    // pauses longer than that from one that has finished, but it must never
    // take a file it has seen only once.
    let gap = switchyard::reload::watch::POLL_INTERVAL * 3 / 5;
    write_in_two_chunks_and_check_the_gap(&router, gap).await;

    served_within(&router, POLL_LIVE_WITHIN, "/beta", "beta 2").await;
    assert_only_the_complete_file_went_live(&router).await;
}

/// The ways editors and tools save a file.
#[derive(Debug, Clone, Copy)]
enum Save {
    /// Truncate and write (`echo >`, VS Code, most plain saves).
    InPlace,
    /// Write a temporary sibling and rename it over (`sed -i`, VS Code's
    /// atomic save, many editors).
    RenameOver,
    /// vim's default: rename the original to a backup, write a new file,
    /// delete the backup.
    VimBackup,
    /// Delete, then create afresh.
    DeleteRecreate,
}

const SAVES: [Save; 4] = [
    Save::InPlace,
    Save::RenameOver,
    Save::VimBackup,
    Save::DeleteRecreate,
];

fn save(config: &Path, yaml: &str, how: Save) {
    let dir = config.parent().unwrap();
    match how {
        Save::InPlace => std::fs::write(config, yaml).unwrap(),
        Save::RenameOver => {
            let staged = dir.join("sedX1b2c3");
            std::fs::write(&staged, yaml).unwrap();
            std::fs::rename(&staged, config).unwrap();
        }
        Save::VimBackup => {
            let backup = dir.join("routes.yaml~");
            std::fs::rename(config, &backup).unwrap();
            std::fs::write(config, yaml).unwrap();
            std::fs::remove_file(&backup).unwrap();
        }
        Save::DeleteRecreate => {
            std::fs::remove_file(config).unwrap();
            std::fs::write(config, yaml).unwrap();
        }
    }
}

/// Saves in every way, twice over, and checks each save goes live once: a
/// lost watch would miss every save after it.
async fn every_save_goes_live(router: &TestRouter, deadline: Duration, trigger: &str) {
    let mut saves = 0;
    for round in 0..2 {
        for how in SAVES {
            let text = format!("{how:?} {round}");
            save(router.config_path(), &greeting(&text), how);
            saves += 1;
            served_within(router, deadline, "/greeting", &text).await;
        }
    }
    assert_eq!(router.version().await, 1 + saves);
    let reloads = history(router).await;
    assert!(
        reloads.iter().all(|attempt| attempt["trigger"] == trigger),
        "every attempt should come from the {trigger} trigger: {reloads:?}"
    );
}

#[tokio::test]
async fn watcher_sees_every_kind_of_save_without_losing_its_watch() {
    let router = TestRouter::with_yaml(greeting("start")).start().await;
    every_save_goes_live(&router, LIVE_WITHIN, "watch").await;
}

#[tokio::test]
async fn poller_sees_every_kind_of_save() {
    let router = TestRouter::with_yaml(greeting("start"))
        .polling()
        .start()
        .await;
    every_save_goes_live(&router, POLL_LIVE_WITHIN, "poll").await;
}

/// A Kubernetes ConfigMap volume, laid out and updated exactly as the
/// kubelet's atomic writer does it.
struct ConfigMapVolume {
    dir: PathBuf,
    updates: u32,
}

impl ConfigMapVolume {
    /// The first timestamped directory, `..data` pointing at it, and
    /// `routes.yaml -> ..data/routes.yaml`; the router's fixture then
    /// writes the first content through the symlinks.
    fn lay_out(dir: &Path) {
        let first = Self::timestamped(0);
        std::fs::create_dir(dir.join(&first)).unwrap();
        std::os::unix::fs::symlink(&first, dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/routes.yaml", dir.join("routes.yaml")).unwrap();
    }

    fn timestamped(n: u32) -> String {
        format!("..2026_11_26_10_{:02}_00.{:03}", n % 60, 123 + n)
    }

    fn update(&mut self, yaml: &str) {
        self.updates += 1;
        let old = std::fs::read_link(self.dir.join("..data")).unwrap();
        let new = Self::timestamped(self.updates);
        std::fs::create_dir(self.dir.join(&new)).unwrap();
        std::fs::write(self.dir.join(&new).join("routes.yaml"), yaml).unwrap();
        std::os::unix::fs::symlink(&new, self.dir.join("..data_tmp")).unwrap();
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).unwrap();
        std::fs::remove_dir_all(self.dir.join(old)).unwrap();
    }
}

async fn configmap_updates_go_live(router: &TestRouter, deadline: Duration, trigger: &str) {
    assert!(router.config_path().is_symlink());
    let mut volume = ConfigMapVolume {
        dir: router.dir().to_path_buf(),
        updates: 0,
    };
    for update in 1..=4u64 {
        let text = format!("configmap {update}");
        volume.update(&greeting(&text));
        served_within(router, deadline, "/greeting", &text).await;
        assert_eq!(router.version().await, 1 + update);
    }
    let reloads = history(router).await;
    assert_eq!(reloads.len(), 4, "one attempt per update: {reloads:?}");
    for attempt in &reloads {
        assert_eq!(attempt["trigger"], trigger, "{attempt}");
        assert_eq!(attempt["result"], "ok", "{attempt}");
    }
    assert_eq!(reloads[0]["sha256"], sha256_hex(&greeting("configmap 4")));
}

#[tokio::test]
async fn watcher_follows_kubernetes_configmap_updates() {
    let router = TestRouter::with_yaml(greeting("configmap 0"))
        .prepare(ConfigMapVolume::lay_out)
        .start()
        .await;
    configmap_updates_go_live(&router, LIVE_WITHIN, "watch").await;
}

#[tokio::test]
async fn poller_follows_kubernetes_configmap_updates() {
    let router = TestRouter::with_yaml(greeting("configmap 0"))
        .prepare(ConfigMapVolume::lay_out)
        .polling()
        .start()
        .await;
    configmap_updates_go_live(&router, POLL_LIVE_WITHIN, "poll").await;
}

// ---------------------------------------------------------------------------
// Triggers and the history

#[tokio::test]
async fn watcher_records_its_changes_but_not_unchanged_rereads() {
    let router = TestRouter::with_yaml(greeting("one")).start().await;
    router.write_config(&greeting("two"));
    served_within(&router, LIVE_WITHIN, "/greeting", "two").await;

    // Events that leave the route file's bytes as they are.
    std::fs::write(router.dir().join("notes.txt"), "unrelated").unwrap();
    router.replace_config(&greeting("two"));
    // A later edit going live shows the watcher has handled those events.
    router.replace_config(&greeting("three"));
    served_within(&router, LIVE_WITHIN, "/greeting", "three").await;
    let (status, _) = router.reload().await;
    assert_eq!(status, StatusCode::OK);

    let reloads = history(&router).await;
    let seen: Vec<(&str, &str, u64)> = reloads
        .iter()
        .map(|a| {
            (
                a["trigger"].as_str().unwrap(),
                a["result"].as_str().unwrap(),
                a["version"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("admin", "unchanged", 3),
            ("watch", "ok", 3),
            ("watch", "ok", 2)
        ],
        "{reloads:?}"
    );
}

#[tokio::test]
async fn rejected_file_is_reported_once_however_many_events_follow() {
    let router = TestRouter::with_yaml(greeting("one")).start().await;
    router.write_config("routes:\n  greeting:\n    prefx: /greeting\n");
    eventually(LIVE_WITHIN, || async {
        history(&router)
            .await
            .first()
            .map(|a| a["result"] == "error")
            == Some(true)
    })
    .await;

    // Other files in the directory change; the bad file does not. The gaps
    // (longer than the watcher's debounce) make each change its own event.
    for note in ["a", "b", "c"] {
        std::fs::write(router.dir().join("notes.txt"), note).unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    // A later good edit going live shows the watcher handled those events.
    router.write_config(&greeting("two"));
    served_within(&router, LIVE_WITHIN, "/greeting", "two").await;

    let results: Vec<String> = history(&router)
        .await
        .iter()
        .map(|a| format!("{} {}", a["trigger"], a["result"]))
        .collect();
    assert_eq!(
        results,
        [r#""watch" "ok""#, r#""watch" "error""#],
        "the bad file was reported more than once"
    );
}

#[tokio::test]
async fn file_deleted_and_recreated_at_once_is_not_reported_missing() {
    let router = TestRouter::with_yaml(greeting("one")).start().await;
    for round in ["two", "three"] {
        std::fs::remove_file(router.config_path()).unwrap();
        // An editor's gap between delete and re-create: longer than the
        // watcher's debounce, well inside its grace for a missing file.
        tokio::time::sleep(Duration::from_millis(60)).await;
        std::fs::write(router.config_path(), greeting(round)).unwrap();
        served_within(&router, LIVE_WITHIN, "/greeting", round).await;
    }
    let errors: Vec<Value> = history(&router)
        .await
        .into_iter()
        .filter(|a| a["result"] == "error")
        .collect();
    assert!(
        errors.is_empty(),
        "a brief absence was reported: {errors:?}"
    );
}

#[tokio::test]
async fn poller_records_its_changes_and_every_admin_attempt() {
    let router = TestRouter::with_yaml(greeting("one"))
        .polling()
        .start()
        .await;
    router.write_config(&greeting("two"));
    served_within(&router, POLL_LIVE_WITHIN, "/greeting", "two").await;
    router.write_config(&greeting("two"));
    for _ in 0..2 {
        let (status, body) = router.reload().await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["reload"]["result"], "unchanged", "{body}");
    }
    router.write_config(&greeting("three"));
    served_within(&router, POLL_LIVE_WITHIN, "/greeting", "three").await;

    let reloads = history(&router).await;
    let seen: Vec<(&str, &str)> = reloads
        .iter()
        .map(|a| {
            (
                a["trigger"].as_str().unwrap(),
                a["result"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("poll", "ok"),
            ("admin", "unchanged"),
            ("admin", "unchanged"),
            ("poll", "ok")
        ],
        "{reloads:?}"
    );
}

/// Newest-first attempts as the real binary's `/reloads` shows them.
async fn process_history(process: &SwitchyardProcess) -> Vec<Value> {
    let response = client()
        .get(process.admin_url("/reloads"))
        .send()
        .await
        .unwrap();
    json_of(response).await["reloads"]
        .as_array()
        .expect("a reloads list")
        .clone()
}

async fn process_body(process: &SwitchyardProcess, path: &str) -> String {
    let response = client().get(process.proxy_url(path)).send().await.unwrap();
    response.text().await.unwrap()
}

#[tokio::test]
async fn sighup_reloads_the_real_binary_and_is_recorded_as_signal() {
    let process = SwitchyardProcess::run_with_yaml(&greeting("one"), &[]).await;
    // A hard link in another directory: a write through it changes the
    // route file's bytes without any event in the watched directory, so
    // only the signal can make the router see it.
    let elsewhere = tempfile::tempdir().unwrap();
    let link = elsewhere.path().join("routes.yaml");
    std::fs::hard_link(process.route_file().path(), &link).unwrap();
    std::fs::write(&link, greeting("two")).unwrap();

    process.signal("HUP").await;

    eventually(LIVE_WITHIN, || async {
        process_body(&process, "/greeting").await == "two"
    })
    .await;
    let reloads = process_history(&process).await;
    assert_eq!(reloads.len(), 1, "{reloads:?}");
    assert_eq!(reloads[0]["trigger"], "signal");
    assert_eq!(reloads[0]["result"], "ok");
    assert_eq!(reloads[0]["version"], 2);
    assert_eq!(reloads[0]["diff"]["changed"][0], "greeting");
    assert_eq!(reloads[0]["sha256"], sha256_hex(&greeting("two")));

    // Every signal is recorded, even one that changes nothing.
    process.signal("HUP").await;
    let reloads = eventually(LIVE_WITHIN, || async {
        let reloads = process_history(&process).await;
        (reloads.len() == 2).then_some(reloads)
    })
    .await;
    assert_eq!(reloads[0]["trigger"], "signal");
    assert_eq!(reloads[0]["result"], "unchanged");
    assert_eq!(reloads[0]["version"], 2);

    // The reload logged its diff by route name (the log writer flushes
    // every 50 ms, so the line may arrive after the history has it).
    let logged = eventually(LIVE_WITHIN, || async {
        process
            .logs()
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|entry| entry["message"] == "route table reloaded")
    })
    .await;
    assert!(
        logged["changed"].to_string().contains("greeting"),
        "{logged}"
    );
    for field in ["added", "removed", "trigger", "version"] {
        assert!(logged.get(field).is_some(), "no `{field}` in {logged}");
    }
    // A plain file in a plain directory is not a single-file mount.
    let logs = process.logs();
    assert!(
        !logs
            .iter()
            .any(|line| line.contains("single-file bind mount")),
        "{logs:?}"
    );
}

#[tokio::test]
async fn concurrent_signals_admin_reloads_and_edits_never_go_back() {
    const ROUNDS: usize = 25;
    let process = SwitchyardProcess::run_with_yaml(&greeting("edit 0"), &[]).await;
    let client = client();
    let config = process.route_file().path().to_path_buf();

    let admin = |_| {
        let client = client.clone();
        let url = process.admin_url("/reload");
        async move {
            for _ in 0..ROUNDS {
                let response = client.post(&url).send().await.unwrap();
                // 422 is a fair answer when the file was caught mid-write.
                assert!(
                    matches!(
                        response.status(),
                        StatusCode::OK | StatusCode::UNPROCESSABLE_ENTITY
                    ),
                    "{}",
                    response.status()
                );
            }
        }
    };
    let signals = async {
        for _ in 0..ROUNDS {
            process.signal("HUP").await;
        }
    };
    let edits = async {
        for edit in 1..=ROUNDS {
            let how = if edit % 2 == 0 {
                Save::InPlace
            } else {
                Save::RenameOver
            };
            save(&config, &greeting(&format!("edit {edit}")), how);
            tokio::task::yield_now().await;
        }
    };
    futures_util::future::join3(
        futures_util::future::join_all((0..3).map(admin)),
        signals,
        edits,
    )
    .await;

    let last = greeting("final");
    save(&config, &last, Save::RenameOver);
    let routes = eventually(LIVE_WITHIN, || async {
        let response = client.get(process.admin_url("/routes")).send().await;
        let routes = json_of(response.unwrap()).await;
        (routes["sha256"] == sha256_hex(&last)).then_some(routes)
    })
    .await;
    assert_eq!(process_body(&process, "/greeting").await, "final");

    // After the storm, a signal and an admin reload are both recorded.
    process.signal("HUP").await;
    eventually(LIVE_WITHIN, || async {
        process_history(&process).await[0]["trigger"] == "signal"
    })
    .await;
    let response = client
        .post(process.admin_url("/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let mut reloads = process_history(&process).await;
    assert_eq!(reloads.len(), switchyard::reload::reloader::HISTORY_LEN);
    reloads.reverse();
    for pair in reloads.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        let step = after["version"].as_u64().unwrap() - before["version"].as_u64().unwrap();
        let expected = u64::from(after["result"] == "ok");
        assert_eq!(
            step, expected,
            "versions must grow by one per table that goes live and never go back:\n{before}\n{after}"
        );
    }
    let newest = reloads.last().unwrap();
    assert_eq!(newest["trigger"], "admin");
    assert_eq!(newest["version"], routes["version"]);
}

// ---------------------------------------------------------------------------
// Start-up conditions, in namespaces of their own

/// Runs `sh -c script` with `args` and reports whether it succeeded; tests
/// that need namespaces skip (saying why) where the sandbox forbids them.
fn can_run(script: &str, args: &[&str]) -> Result<(), String> {
    let output = std::process::Command::new("unshare")
        .args(["-Urm", "sh", "-c", script, "sh"])
        .args(args)
        .output()
        .map_err(|e| format!("cannot run unshare: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// In a user namespace of its own, the router may open no inotify instance
/// (the limit is per user namespace), as when a node's limits are spent.
const NO_INOTIFY: &str = "echo 0 > /proc/sys/user/max_inotify_instances && exec \"$@\"";

#[tokio::test]
async fn router_polls_and_says_so_when_the_watcher_cannot_start() {
    if let Err(why) = can_run(NO_INOTIFY, &["true"]) {
        eprintln!("skipped: cannot limit inotify in a user namespace here: {why}");
        return;
    }
    let process = SwitchyardProcess::run_wrapped(&greeting("one"), &[], &[], |_| {
        ["unshare", "-Ur", "sh", "-c", NO_INOTIFY, "sh"]
            .map(String::from)
            .to_vec()
    })
    .await;
    let logs = process.logs();
    assert!(
        logs.iter()
            .any(|line| line.contains("polling the file instead") && line.contains("WARN")),
        "{logs:?}"
    );

    std::fs::write(process.route_file().path(), greeting("two")).unwrap();

    eventually(POLL_LIVE_WITHIN, || async {
        process_body(&process, "/greeting").await == "two"
    })
    .await;
    assert_eq!(process_history(&process).await[0]["trigger"], "poll");
}

/// Bind-mounts `$1` onto `$2`, as the kubelet does for a `subPath` mount.
const BIND_MOUNT: &str = "mount --bind \"$1\" \"$2\" && shift 2 && exec \"$@\"";

#[tokio::test]
async fn single_file_bind_mount_is_warned_about_at_start_up() {
    let source = tempfile::tempdir().unwrap();
    let mounted = source.path().join("routes.yaml");
    std::fs::write(&mounted, greeting("mounted")).unwrap();
    let probe = source.path().join("probe");
    std::fs::write(&probe, "").unwrap();
    let (from, onto) = (mounted.to_str().unwrap(), probe.to_str().unwrap());
    if let Err(why) = can_run(BIND_MOUNT, &[from, onto, "true"]) {
        eprintln!("skipped: cannot bind-mount in a mount namespace here: {why}");
        return;
    }
    let from = from.to_owned();
    let process = SwitchyardProcess::run_wrapped(&greeting("one"), &[], &[], |config| {
        let onto = config.to_str().unwrap().to_owned();
        let wrapper = ["unshare", "-Urm", "sh", "-c", BIND_MOUNT, "sh"];
        let mut args: Vec<String> = wrapper.map(String::from).to_vec();
        args.extend([from, onto]);
        args
    })
    .await;

    // The router serves what the mount shows.
    assert_eq!(process_body(&process, "/greeting").await, "mounted");
    let logs = process.logs();
    let warning = logs
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|entry| {
            entry["message"]
                .as_str()
                .is_some_and(|m| m.contains("single-file bind mount"))
        })
        .unwrap_or_else(|| panic!("no subPath warning in {logs:?}"));
    assert_eq!(warning["level"], "WARN");
    assert_eq!(
        warning["mount_point"],
        process.route_file().path_str(),
        "{warning}"
    );
}

// ---------------------------------------------------------------------------
// Requests in flight

/// An upstream that answers each request only when `release` is notified.
async fn held_upstream() -> (Upstream, Arc<tokio::sync::Notify>) {
    let release = Arc::new(tokio::sync::Notify::new());
    let waiter = Arc::clone(&release);
    let upstream = Upstream::handler(axum::Router::new().fallback(move || {
        let waiter = Arc::clone(&waiter);
        async move {
            waiter.notified().await;
            "released"
        }
    }))
    .start()
    .await;
    (upstream, release)
}

fn slow_and_greeting(slow: &Upstream, text: &str) -> String {
    format!(
        "{}  slow:
    prefix: /slow
    upstream: {}
",
        greeting(text),
        slow.url()
    )
}

#[tokio::test]
async fn long_request_keeps_its_table_without_blocking_a_reload_and_frees_it_at_its_end() {
    let (slow, release) = held_upstream().await;
    let router = TestRouter::with_yaml(slow_and_greeting(&slow, "one"))
        .start()
        .await;
    assert_eq!(router.reloader().generations_live(), 1);

    let pending = tokio::spawn(router.get("/slow/request").send());
    eventually(LIVE_WITHIN, || async { slow.requests() == 1 }).await;

    router.write_config(&greeting("two"));
    served_within(&router, LIVE_WITHIN, "/greeting", "two").await;
    assert_eq!(
        router.reloader().generations_live(),
        2,
        "the in-flight request holds the old table, the new one is live"
    );
    // The new table has no `/slow`; the request in flight still has it.
    assert_eq!(
        router.get("/slow").send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );

    release.notify_one();
    let answer = pending.await.unwrap().unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.text().await.unwrap(), "released");
    eventually(LIVE_WITHIN, || async {
        router.reloader().generations_live() == 1
    })
    .await;
}

/// Reads one response with a `Content-Length` body off a kept-alive
/// connection and returns its body.
async fn read_one_response(stream: &mut tokio::net::TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("a content-length");
            if received.len() >= end + 4 + length {
                return String::from_utf8_lossy(&received[end + 4..end + 4 + length]).into_owned();
            }
        }
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the connection closed mid-response");
        received.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn open_keep_alive_connection_holds_no_old_table() {
    let router = TestRouter::with_yaml(greeting("one")).start().await;
    let mut connection = tokio::net::TcpStream::connect(router.proxy_addr())
        .await
        .unwrap();
    let request = b"GET /greeting HTTP/1.1\r\nHost: test\r\n\r\n";
    connection.write_all(request).await.unwrap();
    assert_eq!(read_one_response(&mut connection).await, "one");

    router.write_config(&greeting("two"));
    served_within(&router, LIVE_WITHIN, "/greeting", "two").await;

    // The idle connection is still open, and the old table is gone.
    eventually(LIVE_WITHIN, || async {
        router.reloader().generations_live() == 1
    })
    .await;
    connection.write_all(request).await.unwrap();
    assert_eq!(read_one_response(&mut connection).await, "two");
}

// ---------------------------------------------------------------------------
// Under load

/// Client tasks send requests without pause through the proxy while the
/// route file is rewritten `edits` times, alternating the target between
/// two real upstreams and the way it is saved; each edit waits for its own
/// table, so every edit is a reload.
async fn reload_under_load(edits: usize) {
    const CLIENTS: usize = 4;
    let a = Upstream::echo("a").start().await;
    let b = Upstream::echo("b").start().await;
    let table = |target: &Upstream| {
        format!(
            "routes:\n  load:\n    prefix: /load\n    upstream: {}\n",
            target.url()
        )
    };
    let router = TestRouter::with_yaml(table(&a)).start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (stop, requests, failures) = (
                Arc::clone(&stop),
                Arc::clone(&requests),
                Arc::clone(&failures),
            );
            let url = router.proxy_url("/load/x");
            let client = client();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    requests.fetch_add(1, Ordering::Relaxed);
                    let outcome = match client.get(&url).send().await {
                        Ok(response) => {
                            let from = response
                                .headers()
                                .get("x-upstream")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            let status = response.status();
                            match response.bytes().await {
                                Ok(_)
                                    if status == StatusCode::OK
                                        && matches!(from.as_deref(), Some("a" | "b")) =>
                                {
                                    Ok(())
                                }
                                Ok(_) => Err(format!("{status} from {from:?}")),
                                Err(error) => Err(format!("body: {error}")),
                            }
                        }
                        Err(error) => Err(format!("request: {error}")),
                    };
                    if let Err(failure) = outcome {
                        failures.lock().unwrap().push(failure);
                    }
                }
            })
        })
        .collect();

    let started = Instant::now();
    for edit in 1..=edits {
        let target = if edit % 2 == 1 { &b } else { &a };
        let how = if edit % 2 == 0 {
            Save::InPlace
        } else {
            Save::RenameOver
        };
        save(router.config_path(), &table(target), how);
        let expected = 1 + edit as u64;
        eventually(LIVE_WITHIN, || async {
            router.reloader().live().load().meta.version == expected
        })
        .await;
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    let requests = requests.load(Ordering::Relaxed);
    let reloads = router.version().await - 1;
    let report = format!(
        "reload under load: {requests} requests, {} failed, {reloads} reloads in {:.1} s",
        failures.len(),
        elapsed.as_secs_f64()
    );
    println!("{report}");
    assert!(failures.is_empty(), "{report}: {failures:?}");
    assert_eq!(reloads, edits as u64, "{report}");
    assert!(requests > edits, "{report}");
    assert!(a.requests() > 0 && b.requests() > 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_loses_no_request() {
    reload_under_load(100).await;
}

/// `SWITCHYARD_LOAD_EDITS` sets the length (default 5,000 edits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long run by hand: cargo test --release --test hot_reload -- --ignored --nocapture"]
async fn reload_under_load_loses_no_request_long_run() {
    let edits = std::env::var("SWITCHYARD_LOAD_EDITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    reload_under_load(edits).await;
}
