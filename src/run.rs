//! Starting and stopping a router: wires the reloader, the file watcher,
//! SIGHUP, and both listeners together, and runs the shutdown sequence of
//! SPEC 6 when told to stop.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind};
use tokio::sync::oneshot;

use crate::admin::{self, AdminState, Readiness};
use crate::proxy::handler::{self, ProxyState};
use crate::proxy::server;
use crate::reload::reloader::{Reloader, Trigger};
use crate::reload::watch;
use crate::routes::config::ConfigError;

/// The admin listener gets this long to finish its own requests at shutdown;
/// its answers are small and fast, and the proxy has drained by then.
const ADMIN_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    pub drain_timeout: Duration,
    pub shutdown_delay: Duration,
    /// Follow the file by polling even where a watcher could start.
    pub force_poll: bool,
    /// Per-request metrics and access log. Always on in production; off
    /// only to measure what they cost (`benches/observe.sh`).
    pub observe_requests: bool,
}

impl Options {
    /// The command line's defaults, for `config`.
    pub fn new(config: impl Into<PathBuf>) -> Self {
        Options {
            config: config.into(),
            drain_timeout: Duration::from_secs(25),
            shutdown_delay: Duration::ZERO,
            force_poll: false,
            observe_requests: true,
        }
    }
}

/// A router whose route file has been loaded, ready to serve. It follows
/// the file from the moment it is loaded, so an edit made before `serve` is
/// called is not missed.
pub struct Switchyard {
    options: Options,
    reloader: Arc<Reloader>,
    watch: watch::WatchHandle,
    hangups: Option<Signal>,
}

impl Switchyard {
    /// Loads the route file; an error means the router must not start.
    pub fn load(options: Options) -> Result<Self, ConfigError> {
        let reloader = Arc::new(Reloader::start(&options.config)?);
        watch::warn_if_file_mount(&options.config);
        let watch = watch::spawn(Arc::clone(&reloader), options.force_poll);
        Ok(Switchyard {
            options,
            reloader,
            watch,
            hangups: None,
        })
    }

    /// Takes over SIGHUP now rather than when `serve` first runs: until a
    /// listener exists, SIGHUP has its default action and ends the process.
    /// Call it inside the runtime, before announcing that the router is up.
    pub fn listen_for_hangups(&mut self) {
        if self.hangups.is_none() {
            self.hangups = hangup_listener();
        }
    }

    pub fn reloader(&self) -> &Arc<Reloader> {
        &self.reloader
    }

    /// Serves until `shutdown` completes, then drains: `/readyz` turns 503 at
    /// once, the proxy keeps accepting for `shutdown_delay`, then stops and
    /// gives in-flight requests up to `drain_timeout`.
    pub async fn serve(
        self,
        proxy_listener: TcpListener,
        admin_listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), reqwest::Error> {
        let Switchyard {
            options,
            reloader,
            watch: _watch,
            hangups,
        } = self;
        let mut proxy_state = ProxyState::new(Arc::clone(reloader.live()))?;
        proxy_state.observe = options.observe_requests;
        let readiness = Arc::new(Readiness::default());
        // Registered before the spawn, so SIGHUP is handled from here on.
        let hangups = hangups.or_else(hangup_listener);
        let hangups = tokio::spawn(reload_on_sighup(Arc::clone(&reloader), hangups));

        let (stop_proxy, proxy_stopped) = oneshot::channel::<()>();
        let proxy = tokio::spawn(server::serve(
            proxy_listener,
            handler::app(proxy_state),
            async move {
                let _ = proxy_stopped.await;
            },
            options.drain_timeout,
        ));
        let (stop_admin, admin_stopped) = oneshot::channel::<()>();
        let admin = tokio::spawn(server::serve(
            admin_listener,
            admin::app(AdminState {
                reloader: Arc::clone(&reloader),
                readiness: Arc::clone(&readiness),
            }),
            async move {
                let _ = admin_stopped.await;
            },
            ADMIN_DRAIN_TIMEOUT,
        ));
        readiness.set(true);

        shutdown.await;
        readiness.set(false);
        tracing::info!(delay = ?options.shutdown_delay, drain = ?options.drain_timeout, "shutting down");
        tokio::time::sleep(options.shutdown_delay).await;
        let _ = stop_proxy.send(());
        if let Err(error) = proxy.await {
            tracing::error!(%error, "proxy listener task failed");
        }
        let _ = stop_admin.send(());
        if let Err(error) = admin.await {
            tracing::error!(%error, "admin listener task failed");
        }
        hangups.abort();
        tracing::info!("stopped");
        Ok(())
    }
}

/// SIGHUP reloads through the same path as the watcher and the admin API.
async fn reload_on_sighup(reloader: Arc<Reloader>, hangups: Option<Signal>) {
    let Some(mut hangups) = hangups else {
        return;
    };
    while hangups.recv().await.is_some() {
        let reloader = Arc::clone(&reloader);
        if let Err(error) =
            tokio::task::spawn_blocking(move || reloader.reload(Trigger::Signal)).await
        {
            tracing::error!(%error, "reload task failed");
        }
    }
}

fn hangup_listener() -> Option<Signal> {
    tokio::signal::unix::signal(SignalKind::hangup())
        .inspect_err(|error| {
            tracing::warn!(%error, "cannot listen for SIGHUP; reload by file change or POST /reload");
        })
        .ok()
}
