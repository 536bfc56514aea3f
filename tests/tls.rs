//! The TLS listener (SPEC 4.11) against real TLS clients: ALPN, SNI,
//! certificate files rotated by rename and by a Kubernetes Secret `..data`
//! swap, broken pairs that must not replace a working one, reloads under
//! load, the handshake timeout, and `check` on certificate pairs.
//! Certificates are made for each test by a CA of its own.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use support::{
    client, eventually, json_of, run_switchyard, Echoed, HttpsConnection, Leaf, Metrics,
    SwitchyardProcess, TestCa, Upstream,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// New connections must see a rotated certificate within this long: the
/// reload deadline of SPEC 5 with room for a loaded test machine.
const RELOAD_DEADLINE: Duration = Duration::from_secs(5);

const H2_AND_H1: [&[u8]; 2] = [b"h2", b"http/1.1"];
const H1_ONLY: [&[u8]; 1] = [b"http/1.1"];

fn routes_to(upstream: &Upstream) -> String {
    format!(
        "routes:\n  all:\n    prefix: /\n    upstream: {}\n",
        upstream.url()
    )
}

fn tls_args(listen: &str, pairs: &[(&Path, &Path)]) -> Vec<String> {
    let mut args = vec!["--tls-listen".to_owned(), listen.to_owned()];
    for (cert, key) in pairs {
        args.push("--tls-cert".to_owned());
        args.push(cert.display().to_string());
        args.push("--tls-key".to_owned());
        args.push(key.display().to_string());
    }
    args
}

async fn start(yaml: &str, pairs: &[(&Path, &Path)]) -> SwitchyardProcess {
    let args = tls_args("127.0.0.1:0", pairs);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    SwitchyardProcess::run_with_yaml(yaml, &args).await
}

async fn healthz(router: &SwitchyardProcess) -> Value {
    let response = client()
        .get(router.admin_url("/healthz"))
        .send()
        .await
        .expect("GET /healthz");
    json_of(response).await
}

async fn metrics(router: &SwitchyardProcess) -> Metrics {
    let text = client()
        .get(router.admin_url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("a metrics body");
    Metrics(text)
}

/// The certificate a new connection asking for `name` is given.
async fn presented(router: &SwitchyardProcess, name: &str, ca: &TestCa) -> Leaf {
    let connection = HttpsConnection::open(router.tls_addr(), name, &ca.client(&H2_AND_H1))
        .await
        .expect("a TLS connection");
    Leaf {
        cert_pem: String::new(),
        key_pem: String::new(),
        der: connection.presented,
    }
}

/// Waits until new connections for `name` get `leaf`.
async fn serves_within(router: &SwitchyardProcess, name: &str, ca: &TestCa, leaf: &Leaf) {
    eventually(RELOAD_DEADLINE, || async {
        presented(router, name, ca).await.der == leaf.der
    })
    .await;
}

/// A router serving one pair for `a.test` from files in a fresh directory,
/// with the CA that signed it. Destructure it with `_dir` and `_upstream`
/// bound: dropped, they would delete the files and stop the upstream.
struct OnePair {
    router: SwitchyardProcess,
    ca: TestCa,
    leaf: Leaf,
    cert: PathBuf,
    key: PathBuf,
    _dir: tempfile::TempDir,
    _upstream: Upstream,
}

impl OnePair {
    async fn start() -> OnePair {
        let upstream = Upstream::echo("app").start().await;
        let ca = TestCa::new();
        let dir = tempfile::tempdir().expect("a directory");
        let leaf = ca.leaf(&["a.test"]);
        let (cert, key) = leaf.write(dir.path(), "tls");
        let router = start(&routes_to(&upstream), &[(&cert, &key)]).await;
        OnePair {
            router,
            ca,
            leaf,
            cert,
            key,
            _dir: dir,
            _upstream: upstream,
        }
    }
}

#[tokio::test]
async fn https_over_http1_and_http2_picks_each_certificate_by_sni() {
    let upstream = Upstream::echo("app").start().await;
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("a directory");
    // The first pair also answers for the loopback address, so a client
    // that sends no SNI (it connects by IP) can still verify it.
    let a = ca.leaf(&["a.test", "*.w.test", "127.0.0.1"]);
    let b = ca.leaf(&["b.test"]);
    let (a_cert, a_key) = a.write(dir.path(), "a");
    let (b_cert, b_key) = b.write(dir.path(), "b");
    let router = start(
        &routes_to(&upstream),
        &[(&a_cert, &a_key), (&b_cert, &b_key)],
    )
    .await;

    let mut h2 = HttpsConnection::open(router.tls_addr(), "b.test", &ca.client(&H2_AND_H1))
        .await
        .expect("an HTTPS connection to b.test");
    assert_eq!(h2.presented, b.der, "b.test gets its own certificate");
    assert_eq!(h2.alpn.as_deref(), Some(&b"h2"[..]));
    let (status, body) = h2.get("/over-h2").await.expect("a response over h2");
    assert_eq!(status, StatusCode::OK);
    let echoed = Echoed::from_body(body.as_bytes());
    assert_eq!(echoed.header("x-forwarded-proto"), Some("https"));
    assert_eq!(echoed.header("host"), Some("b.test"));
    assert_eq!(echoed.path, "/over-h2");

    let mut h1 = HttpsConnection::open(router.tls_addr(), "a.test", &ca.client(&H1_ONLY))
        .await
        .expect("an HTTPS connection to a.test");
    assert_eq!(h1.presented, a.der);
    assert_eq!(h1.alpn.as_deref(), Some(&b"http/1.1"[..]));
    for _ in 0..3 {
        let (status, body) = h1.get("/over-h1").await.expect("a response over HTTP/1.1");
        assert_eq!(status, StatusCode::OK);
        let echoed = Echoed::from_body(body.as_bytes());
        assert_eq!(echoed.header("x-forwarded-proto"), Some("https"));
    }

    let wildcard = presented(&router, "x.w.test", &ca).await;
    assert_eq!(wildcard.der, a.der, "a wildcard name matches one label");
    let no_sni = presented(&router, "127.0.0.1", &ca).await;
    assert_eq!(no_sni.der, a.der, "without SNI the first pair serves");

    // The cleartext listener still says http.
    let plain = client()
        .get(router.proxy_url("/plain"))
        .send()
        .await
        .expect("a cleartext request");
    let echoed = Echoed::from_response(plain).await;
    assert_eq!(echoed.header("x-forwarded-proto"), Some("http"));

    let line = eventually(RELOAD_DEADLINE, || async {
        router
            .logs()
            .into_iter()
            .find(|line| line.contains("\"/over-h2\""))
    })
    .await;
    let entry: Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(entry["listener"], "tls", "{line}");
    let plain_line = eventually(RELOAD_DEADLINE, || async {
        router
            .logs()
            .into_iter()
            .find(|line| line.contains("\"/plain\""))
    })
    .await;
    let entry: Value = serde_json::from_str(&plain_line).expect("a JSON log line");
    assert_eq!(entry["listener"], "proxy", "{plain_line}");

    let health = healthz(&router).await;
    let certificates = health["tls"]["certificates"].as_array().expect("a list");
    assert_eq!(certificates.len(), 2);
    assert_eq!(certificates[1]["names"], serde_json::json!(["b.test"]));
    assert!(certificates[0]["not_after"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(health["tls"]["last_reload"]["ok"], true);
    let scrape = metrics(&router).await;
    let expiry =
        scrape.value("switchyard_tls_certificate_expiry_timestamp_seconds{name=\"b.test\"}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    assert!(
        expiry > now + 80.0 * 86_400.0 && expiry < now + 91.0 * 86_400.0,
        "{expiry}"
    );
    assert_eq!(
        scrape.value("switchyard_tls_reloads_total{result=\"error\"}"),
        0.0
    );
}

#[tokio::test]
async fn a_certificate_replaced_by_rename_serves_new_connections_and_spares_open_ones() {
    let OnePair {
        router,
        ca,
        leaf: old,
        cert,
        key,
        _dir,
        _upstream,
        ..
    } = OnePair::start().await;
    let mut open = HttpsConnection::open(router.tls_addr(), "a.test", &ca.client(&H1_ONLY))
        .await
        .expect("a connection before the rotation");
    assert_eq!(open.presented, old.der);

    let new = ca.leaf(&["a.test"]);
    new.rename_over(&cert, &key);
    serves_within(&router, "a.test", &ca, &new).await;

    let (status, _) = open
        .get("/still")
        .await
        .expect("the old connection still answers");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(open.presented, old.der);
    let scrape = metrics(&router).await;
    assert!(scrape.value("switchyard_tls_reloads_total{result=\"ok\"}") >= 1.0);
    assert_eq!(
        scrape.value("switchyard_tls_reloads_total{result=\"error\"}"),
        0.0
    );
}

/// A Kubernetes Secret volume: `tls.crt` and `tls.key` are symlinks into
/// `..data`, itself a symlink to a timestamped directory; an update writes
/// a new directory and renames a new `..data` over the old one.
struct SecretVolume {
    dir: PathBuf,
    generation: usize,
}

impl SecretVolume {
    fn new(dir: &Path, leaf: &Leaf) -> SecretVolume {
        let mut volume = SecretVolume {
            dir: dir.to_path_buf(),
            generation: 0,
        };
        volume.update(leaf);
        for file in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{file}"), dir.join(file))
                .expect("link the file into ..data");
        }
        volume
    }

    fn update(&mut self, leaf: &Leaf) {
        self.generation += 1;
        let version = format!("..2026_12_04_00_00_0{}", self.generation);
        let version_dir = self.dir.join(&version);
        std::fs::create_dir(&version_dir).expect("a version directory");
        std::fs::write(version_dir.join("tls.crt"), &leaf.cert_pem).expect("write tls.crt");
        std::fs::write(version_dir.join("tls.key"), &leaf.key_pem).expect("write tls.key");
        let staged = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &staged).expect("stage ..data");
        std::fs::rename(&staged, self.dir.join("..data")).expect("swap ..data");
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }

    fn key(&self) -> PathBuf {
        self.dir.join("tls.key")
    }
}

#[tokio::test]
async fn a_secret_volume_update_swaps_the_certificate() {
    let upstream = Upstream::echo("app").start().await;
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("a directory");
    let first = ca.leaf(&["a.test"]);
    let mut volume = SecretVolume::new(dir.path(), &first);
    let router = start(&routes_to(&upstream), &[(&volume.cert(), &volume.key())]).await;
    assert_eq!(presented(&router, "a.test", &ca).await.der, first.der);

    for _ in 0..3 {
        let next = ca.leaf(&["a.test"]);
        volume.update(&next);
        serves_within(&router, "a.test", &ca, &next).await;
    }
    let health = healthz(&router).await;
    assert_eq!(health["tls"]["last_reload"]["ok"], true, "{health}");
}

/// Waits until `/healthz` reports a failed certificate reload whose error
/// contains `expected`, and returns that error.
async fn reported(router: &SwitchyardProcess, expected: &str) -> String {
    eventually(RELOAD_DEADLINE, || async {
        let health = healthz(router).await;
        let last = &health["tls"]["last_reload"];
        let error = last["error"].as_str().unwrap_or_default();
        (last["ok"] == false && error.contains(expected)).then(|| error.to_owned())
    })
    .await
}

#[tokio::test]
async fn a_broken_pair_keeps_the_old_one_serving_and_is_reported() {
    let OnePair {
        router,
        ca,
        leaf: good,
        cert,
        key,
        _dir,
        _upstream,
        ..
    } = OnePair::start().await;

    // A key that belongs to another certificate.
    let other = ca.leaf(&["a.test"]);
    std::fs::write(&key, &other.key_pem).expect("write a foreign key");
    let error = reported(&router, "is not the key of the certificate").await;
    assert!(error.contains("tls.key"), "{error}");
    assert_eq!(presented(&router, "a.test", &ca).await.der, good.der);

    // A certificate file cut short.
    std::fs::write(&key, &good.key_pem).expect("restore the key");
    let cut = &good.cert_pem[..good.cert_pem.len() / 2];
    std::fs::write(&cert, cut).expect("write half a certificate");
    let error = reported(&router, "not a PEM certificate chain").await;
    assert!(error.contains("tls.pem"), "{error}");
    assert_eq!(presented(&router, "a.test", &ca).await.der, good.der);

    // A pair that matches but has expired.
    let expired = ca.expired_leaf(&["a.test"]);
    expired.rename_over(&cert, &key);
    reported(&router, "expired").await;
    assert_eq!(presented(&router, "a.test", &ca).await.der, good.der);

    let scrape = metrics(&router).await;
    assert!(scrape.value("switchyard_tls_reloads_total{result=\"error\"}") >= 3.0);
    assert_eq!(
        scrape.value("switchyard_tls_reloads_total{result=\"ok\"}"),
        0.0
    );
    // The log writer batches its lines, so the third may still be on its way.
    eventually(RELOAD_DEADLINE, || async {
        router
            .logs()
            .iter()
            .filter(|line| line.contains("certificate reload rejected"))
            .count()
            >= 3
    })
    .await;

    // POST /reload reports the same failure and keeps the pair.
    let response = client()
        .post(router.admin_url("/reload"))
        .send()
        .await
        .expect("POST /reload");
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = json_of(response).await;
    assert_eq!(body["tls_reload"]["result"], "error", "{body}");

    // And a good pair after all that is taken.
    let fixed = ca.leaf(&["a.test"]);
    fixed.rename_over(&cert, &key);
    serves_within(&router, "a.test", &ca, &fixed).await;
}

#[tokio::test]
async fn a_certificate_written_before_its_key_is_not_reported() {
    let OnePair {
        router,
        ca,
        cert,
        key,
        _dir,
        _upstream,
        ..
    } = OnePair::start().await;

    // The certificate lands, and its key a little later (well within the
    // watcher's patience for a pair to become whole).
    let new = ca.leaf(&["a.test"]);
    std::fs::write(&cert, &new.cert_pem).expect("write the new certificate");
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::write(&key, &new.key_pem).expect("write the new key");
    serves_within(&router, "a.test", &ca, &new).await;

    let health = healthz(&router).await;
    assert_eq!(health["tls"]["last_reload"]["ok"], true, "{health}");
    let scrape = metrics(&router).await;
    assert_eq!(
        scrape.value("switchyard_tls_reloads_total{result=\"error\"}"),
        0.0
    );
}

#[tokio::test]
async fn certificates_rotating_under_load_lose_no_request() {
    let OnePair {
        router,
        ca,
        leaf,
        cert,
        key,
        _dir,
        _upstream,
        ..
    } = OnePair::start().await;
    let leaves = [leaf, ca.leaf(&["a.test"])];
    let router = Arc::new(router);

    let done = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for task in 0..4 {
        let (router, done, ok, failed) = (
            Arc::clone(&router),
            Arc::clone(&done),
            Arc::clone(&ok),
            Arc::clone(&failed),
        );
        let connector = ca.client(if task % 2 == 0 { &H2_AND_H1 } else { &H1_ONLY });
        clients.push(tokio::spawn(async move {
            // Bounded in count as well as by the rotations.
            for _ in 0..20_000 {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                // A new connection every few requests, so handshakes meet
                // every certificate that goes live.
                let result = async {
                    let mut connection =
                        HttpsConnection::open(router.tls_addr(), "a.test", &connector).await?;
                    for _ in 0..4 {
                        let (status, _) = connection.get("/load").await?;
                        if status != StatusCode::OK {
                            return Err(format!("status {status}"));
                        }
                    }
                    Ok::<_, String>(())
                }
                .await;
                match result {
                    Ok(()) => ok.fetch_add(4, Ordering::Relaxed),
                    Err(error) => {
                        eprintln!("request failed: {error}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    let rotations = 10;
    for round in 1..=rotations {
        let leaf = &leaves[round % 2];
        leaf.rename_over(&cert, &key);
        serves_within(&router, "a.test", &ca, leaf).await;
        // Requests keep coming between rotations, not only around them.
        let before = ok.load(Ordering::Relaxed);
        eventually(RELOAD_DEADLINE, || async {
            ok.load(Ordering::Relaxed) >= before + 100
        })
        .await;
    }
    done.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("a client task");
    }
    let ok = ok.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    eprintln!("{ok} requests over TLS across {rotations} rotations, {failed} failed");
    assert_eq!(failed, 0);
    assert!(ok > 0);
    let scrape = metrics(&router).await;
    assert!(scrape.value("switchyard_tls_reloads_total{result=\"ok\"}") >= rotations as f64);
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_dropped_after_ten_seconds() {
    let OnePair {
        router,
        ca,
        _dir,
        _upstream,
        ..
    } = OnePair::start().await;

    let mut stalled = TcpStream::connect(router.tls_addr())
        .await
        .expect("connect to the TLS listener");
    // The first bytes of a ClientHello record, and then nothing.
    stalled
        .write_all(&[0x16, 0x03, 0x01])
        .await
        .expect("write part of a handshake");
    let started = Instant::now();
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(30), stalled.read(&mut buffer))
        .await
        .expect("the router closes a stalled handshake");
    let waited = started.elapsed();
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "closed without an answer: {read:?}"
    );
    assert!(
        waited >= Duration::from_secs(9),
        "closed after {waited:?}, before the timeout"
    );

    // Meanwhile and afterwards, real clients are served.
    let mut connection = HttpsConnection::open(router.tls_addr(), "a.test", &ca.client(&H2_AND_H1))
        .await
        .expect("a TLS connection");
    assert_eq!(
        connection.get("/").await.expect("an answer").0,
        StatusCode::OK
    );
    drop(connection);
    eventually(RELOAD_DEADLINE, || async {
        metrics(&router)
            .await
            .value("switchyard_connections_open{listener=\"tls\"}")
            == 0.0
    })
    .await;
}

#[tokio::test]
async fn check_prints_names_and_expiry_and_start_up_refuses_a_bad_pair() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("a directory");
    let (a_cert, a_key) = ca.leaf(&["a.test", "*.w.test"]).write(dir.path(), "a");
    let (b_cert, b_key) = ca.leaf(&["b.test"]).write(dir.path(), "b");
    let routes = dir.path().join("routes.yaml");
    std::fs::write(&routes, "routes:\n  hello:\n    respond: { body: hi }\n")
        .expect("write routes");
    let path = |p: &Path| p.display().to_string();

    let output = run_switchyard(&[
        "check",
        "--config",
        &path(&routes),
        "--tls-cert",
        &path(&a_cert),
        "--tls-key",
        &path(&a_key),
        "--tls-cert",
        &path(&b_cert),
        "--tls-key",
        &path(&b_key),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("certificates: ok, 2 pairs"), "{stdout}");
    assert!(stdout.contains("a.test, *.w.test (expires 20"), "{stdout}");
    assert!(stdout.contains("b.test (expires 20"), "{stdout}");

    // The key of b with the certificate of a.
    let mismatched = [
        "check",
        "--config",
        &path(&routes),
        "--tls-cert",
        &path(&a_cert),
        "--tls-key",
        &path(&b_key),
    ];
    let output = run_switchyard(&mismatched).await;
    assert_eq!(output.status.code(), Some(1));
    let check_error = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        check_error.contains("is not the key of the certificate in"),
        "{check_error}"
    );

    let output = run_switchyard(&[
        "run",
        "--config",
        &path(&routes),
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        &path(&a_cert),
        "--tls-key",
        &path(&b_key),
    ])
    .await;
    assert_eq!(output.status.code(), Some(1));
    let run_error = String::from_utf8_lossy(&output.stderr);
    assert!(
        run_error.contains(check_error.trim()),
        "{run_error} vs {check_error}"
    );

    let output = run_switchyard(&[
        "run",
        "--config",
        &path(&routes),
        "--tls-listen",
        "127.0.0.1:0",
    ])
    .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("needs at least one --tls-cert"));
}

#[tokio::test]
async fn sighup_and_post_reload_reload_certificates_the_watcher_cannot_see() {
    let upstream = Upstream::echo("app").start().await;
    let ca = TestCa::new();
    // The files the router is given are links into a directory it does
    // not watch, so only an explicit reload finds the new pair.
    let linked = tempfile::tempdir().expect("a directory");
    let real = tempfile::tempdir().expect("a directory");
    let first = ca.leaf(&["a.test"]);
    let (real_cert, real_key) = first.write(real.path(), "real");
    let cert = linked.path().join("tls.pem");
    let key = linked.path().join("tls.key");
    std::os::unix::fs::symlink(&real_cert, &cert).expect("link the certificate");
    std::os::unix::fs::symlink(&real_key, &key).expect("link the key");
    let router = start(&routes_to(&upstream), &[(&cert, &key)]).await;

    let second = ca.leaf(&["a.test"]);
    second.rename_over(&real_cert, &real_key);
    router.signal("HUP").await;
    serves_within(&router, "a.test", &ca, &second).await;

    let third = ca.leaf(&["a.test"]);
    third.rename_over(&real_cert, &real_key);
    let response = client()
        .post(router.admin_url("/reload"))
        .send()
        .await
        .expect("POST /reload");
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_of(response).await;
    assert_eq!(body["tls_reload"]["result"], "ok", "{body}");
    assert_eq!(presented(&router, "a.test", &ca).await.der, third.der);
}
