//! A small fixture for the observability tests: a router started in-process
//! on `127.0.0.1:0` listeners from a YAML string, a tiny upstream, an
//! `eventually` helper and a `/metrics` reader.

#![allow(dead_code)] // Each test file uses a different part of it.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use switchyard::{Options, Switchyard};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify};

/// How long `eventually` waits for an effect before failing the test:
/// generous for a loaded CI machine, still short for a real failure.
pub const EVENTUALLY_DEADLINE: Duration = Duration::from_secs(10);

/// Pause between checks in `eventually`.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `check` until it returns `Some`, failing the test with `what` if
/// the deadline passes first.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + EVENTUALLY_DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a plain client builds")
}

/// A router serving a route file written from a string.
pub struct TestRouter {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub config: PathBuf,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    client: reqwest::Client,
}

pub struct TestRouterBuilder {
    yaml: String,
}

impl TestRouter {
    pub fn with_yaml(yaml: &str) -> TestRouterBuilder {
        TestRouterBuilder {
            yaml: yaml.to_owned(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("the proxy answers")
    }

    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.admin_url(path))
            .send()
            .await
            .expect("the admin API answers")
    }

    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        let body = self.admin_get(path).await.bytes().await.expect("a body");
        serde_json::from_slice(&body).expect("the admin API answers JSON")
    }

    /// `POST /reload`, returning its status code.
    pub async fn reload(&self) -> u16 {
        self.client
            .post(self.admin_url("/reload"))
            .send()
            .await
            .expect("the admin API answers")
            .status()
            .as_u16()
    }

    /// Replaces the route file's contents (the watcher may also pick it up).
    pub fn write_routes(&self, yaml: &str) {
        std::fs::write(&self.config, yaml).expect("the route file is writable");
    }

    pub async fn metrics(&self) -> Metrics {
        let response = self.admin_get("/metrics").await;
        assert_eq!(response.status(), 200);
        Metrics(response.text().await.expect("a text body"))
    }
}

impl TestRouterBuilder {
    pub async fn start(self) -> TestRouter {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = dir.path().join("routes.yaml");
        std::fs::write(&config, &self.yaml).expect("the route file is writable");
        let router = Switchyard::load(Options::new(&config)).expect("the route file is valid");
        let proxy_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let proxy = proxy_listener.local_addr().expect("bound");
        let admin = admin_listener.local_addr().expect("bound");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(router.serve(proxy_listener, admin_listener, async move {
            let _ = stopped.await;
        }));
        TestRouter {
            proxy,
            admin,
            config,
            _dir: dir,
            stop: Some(stop),
            client: client(),
        }
    }
}

impl Drop for TestRouter {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A `/metrics` answer, read sample by sample.
pub struct Metrics(pub String);

impl Metrics {
    /// The value of the sample written exactly as `series`, e.g.
    /// `switchyard_requests_total{route="hello",code="200"}`.
    pub fn get(&self, series: &str) -> Option<f64> {
        self.0.lines().find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            value.trim().parse().ok()
        })
    }

    pub fn value(&self, series: &str) -> f64 {
        self.get(series)
            .unwrap_or_else(|| panic!("no sample {series} in:\n{}", self.0))
    }
}

/// A tiny upstream on 127.0.0.1:0: `/slow` waits for [`Gate::open`], every
/// other path answers 200 with `upstream saw <path>`.
pub struct Upstream {
    pub addr: SocketAddr,
    pub gate: Arc<Gate>,
}

/// Holds `/slow` requests until opened, and says when one has arrived.
#[derive(Default)]
pub struct Gate {
    arrived: Notify,
    release: Notify,
}

impl Gate {
    pub async fn arrived(&self) {
        self.arrived.notified().await;
    }

    pub fn open(&self) {
        self.release.notify_one();
    }
}

impl Upstream {
    pub async fn start() -> Upstream {
        use axum::extract::{Request, State};
        let gate = Arc::new(Gate::default());
        let app = axum::Router::new()
            .route(
                "/slow",
                axum::routing::get(|State(gate): State<Arc<Gate>>| async move {
                    gate.arrived.notify_one();
                    gate.release.notified().await;
                    "slow answer"
                }),
            )
            .fallback(
                |request: Request| async move { format!("upstream saw {}", request.uri().path()) },
            )
            .with_state(Arc::clone(&gate));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("bound");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Upstream { addr, gate }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A port that was free a moment ago and has nothing listening now, for an
/// upstream that refuses connections.
pub async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("bound").port()
}
