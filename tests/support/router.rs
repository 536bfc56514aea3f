//! A real router, loaded from a route file in a fresh temporary directory
//! and serving on two `127.0.0.1:0` listeners, as the binary would.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use switchyard::reload::reloader::Reloader;
use switchyard::routes::config::ConfigError;
use switchyard::tls::{Certificates, PairPaths};
use switchyard::{Options, Switchyard};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{client, eventually, json_of};

/// The route file's name inside the router's directory.
pub const CONFIG_FILE: &str = "routes.yaml";

/// A router that is not up within this long after `start` is broken.
const STARTUP_DEADLINE: Duration = Duration::from_secs(5);

/// Short, so a test that forgets to finish its requests still ends quickly;
/// shutdown tests set their own.
const TEST_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// A router not yet started: its route file and options.
pub struct TestRouterBuilder {
    yaml: String,
    options: Options,
    prepare: Option<Prepare>,
    tls: Vec<PairPaths>,
}

/// Sets up the router's directory before the route file is written.
type Prepare = Box<dyn FnOnce(&Path)>;

/// A running router. Dropping it stops it (without waiting for the drain)
/// and deletes its directory.
pub struct TestRouter {
    dir: TempDir,
    config: PathBuf,
    proxy: SocketAddr,
    admin: SocketAddr,
    tls: Option<SocketAddr>,
    reloader: Arc<Reloader>,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    served: Option<JoinHandle<Result<(), switchyard::ServeError>>>,
}

impl TestRouter {
    /// A router whose `routes.yaml` holds `yaml`.
    pub fn with_yaml(yaml: impl Into<String>) -> TestRouterBuilder {
        TestRouterBuilder {
            yaml: yaml.into(),
            options: Options {
                drain_timeout: TEST_DRAIN_TIMEOUT,
                ..Options::new(PathBuf::new())
            },
            prepare: None,
            tls: Vec::new(),
        }
    }
}

impl TestRouterBuilder {
    /// Follow the file by polling instead of a file-system watcher.
    pub fn polling(mut self) -> Self {
        self.options.force_poll = true;
        self
    }

    /// Runs `prepare` on the fresh directory before the route file is
    /// written, for layouts such as a Kubernetes ConfigMap volume, where
    /// `routes.yaml` is a symlink and the write goes through it.
    pub fn prepare(mut self, prepare: impl FnOnce(&Path) + 'static) -> Self {
        self.prepare = Some(Box::new(prepare));
        self
    }

    /// Also serves TLS on `127.0.0.1:0` with these pairs, which must load.
    pub fn tls(mut self, pairs: Vec<PairPaths>) -> Self {
        self.tls = pairs;
        self
    }

    /// Serves with `workers` request threads (the default is one per CPU).
    pub fn workers(mut self, workers: usize) -> Self {
        self.options.workers = std::num::NonZeroUsize::new(workers).expect("at least one worker");
        self
    }

    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.options.drain_timeout = timeout;
        self
    }

    pub fn shutdown_delay(mut self, delay: Duration) -> Self {
        self.options.shutdown_delay = delay;
        self
    }

    /// Starts the router; panics if the route file is rejected.
    pub async fn start(self) -> TestRouter {
        match self.try_start().await {
            Ok(router) => router,
            Err(error) => panic!("the router did not start: {error}"),
        }
    }

    /// Starts the router, or returns why the route file was rejected.
    /// Returns once `/readyz` answers 200, so the file watcher is running
    /// and an edit made right after is seen.
    pub async fn try_start(self) -> Result<TestRouter, ConfigError> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = dir.path().join(CONFIG_FILE);
        if let Some(prepare) = self.prepare {
            prepare(dir.path());
        }
        std::fs::write(&config, &self.yaml).expect("write the route file");
        let mut options = self.options;
        options.config = config.clone();
        let mut switchyard = Switchyard::load(options)?;
        let reloader = Arc::clone(switchyard.reloader());
        let tls = if self.tls.is_empty() {
            None
        } else {
            let certificates = Certificates::load(self.tls).expect("the test's pairs load");
            let listener = bind_local().await;
            let addr = listener.local_addr().expect("the TLS address");
            switchyard.add_tls_listener(listener, Arc::new(certificates));
            Some(addr)
        };

        let proxy_listener = bind_local().await;
        let admin_listener = bind_local().await;
        let proxy = proxy_listener.local_addr().expect("the proxy address");
        let admin = admin_listener.local_addr().expect("the admin address");
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(
            switchyard.serve(proxy_listener, admin_listener, async move {
                // A dropped sender stops the router too.
                let _ = stopped.await;
            }),
        );

        let router = TestRouter {
            dir,
            config,
            proxy,
            admin,
            tls,
            reloader,
            client: client(),
            stop: Some(stop),
            served: Some(served),
        };
        eventually(STARTUP_DEADLINE, || async {
            matches!(
                router.client.get(router.admin_url("/readyz")).send().await,
                Ok(response) if response.status() == StatusCode::OK
            )
        })
        .await;
        Ok(router)
    }
}

async fn bind_local() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
}

impl TestRouter {
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// The TLS listener's address; panics if the router was built without
    /// [`TestRouterBuilder::tls`].
    pub fn tls_addr(&self) -> SocketAddr {
        self.tls.expect("the router serves TLS")
    }

    /// `http://127.0.0.1:PORT{path}` on the proxy listener.
    pub fn proxy_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    /// `http://127.0.0.1:PORT{path}` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// A GET through the proxy, ready for more headers.
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.proxy_url(path))
    }

    /// Any request through the proxy, ready for headers and a body.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.proxy_url(path))
    }

    async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.admin_url(path))
            .send()
            .await
            .expect("the admin listener answers")
    }

    /// GETs an admin endpoint and reads its JSON answer.
    pub async fn admin_json(&self, path: &str) -> (StatusCode, Value) {
        let response = self.admin_get(path).await;
        (response.status(), json_of(response).await)
    }

    /// GETs an admin endpoint that answers text (such as `/metrics`).
    pub async fn admin_text(&self, path: &str) -> (StatusCode, String) {
        let response = self.admin_get(path).await;
        let status = response.status();
        (status, response.text().await.expect("a text body"))
    }

    /// `GET /healthz`.
    pub async fn healthz(&self) -> Value {
        let (status, body) = self.admin_json("/healthz").await;
        assert_eq!(status, StatusCode::OK, "/healthz: {body}");
        body
    }

    /// The live table's version, from `/healthz`.
    pub async fn version(&self) -> u64 {
        self.healthz().await["config"]["version"]
            .as_u64()
            .expect("/healthz config.version is a number")
    }

    /// `POST /reload`.
    pub async fn reload(&self) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.admin_url("/reload"))
            .send()
            .await
            .expect("the admin listener answers");
        (response.status(), json_of(response).await)
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The directory holding the route file, which the router watches.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Overwrites the route file in place (truncate, then write), as
    /// `echo > routes.yaml` or most editors' plain save would.
    pub fn write_config(&self, yaml: &str) {
        std::fs::write(&self.config, yaml).expect("write the route file");
    }

    /// Replaces the route file by writing a sibling and renaming it over
    /// the original, as editors that save atomically do.
    pub fn replace_config(&self, yaml: &str) {
        let staged = self.dir.path().join(".routes.yaml.tmp");
        std::fs::write(&staged, yaml).expect("write the staged route file");
        std::fs::rename(&staged, &self.config).expect("rename over the route file");
    }

    /// The library's reloader, for what the admin API does not show (such
    /// as how many route tables are still alive).
    pub fn reloader(&self) -> &Arc<Reloader> {
        &self.reloader
    }

    /// Sends the shutdown signal without waiting: `/readyz` turns 503 and
    /// the drain begins. Finish with [`TestRouter::stop`].
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Signals shutdown (if not yet done) and waits until `serve` returns.
    pub async fn stop(&mut self) {
        self.begin_shutdown();
        if let Some(served) = self.served.take() {
            served
                .await
                .expect("the serve task did not panic")
                .expect("serve returned no error");
        }
    }
}
