//! Starting and stopping a router: wires the reloader, the file watcher,
//! SIGHUP, the listeners (proxy, admin, and TLS when asked for) together,
//! and runs the shutdown sequence of SPEC 6 when told to stop.
//!
//! Requests are served by `workers` threads, each running a current-thread
//! runtime with its own accept loop on the one proxy socket and its own
//! upstream client, so a request, its upstream connection and the pool task
//! that drives it stay on one thread: no work-stealing scheduler, no
//! cross-thread wake-up between a request and its upstream. Everything
//! else (reloads, the watcher, SIGHUP, the admin API) runs on the runtime
//! that calls [`Switchyard::serve`], off the request threads; the log
//! writer has a thread of its own.
//!
//! Each worker keeps its own pool of upstream connections, so with N
//! workers an upstream may see up to N times the idle connections of a
//! single pool (a connection opened by one worker is never reused by
//! another); under load the count is what the concurrency needs either way.

use std::future::Future;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind};
use tokio::sync::{oneshot, watch as signal};

use crate::admin::{self, AdminState};
use crate::observe::history::{self, History};
use crate::observe::log_writer;
use crate::proxy::client::ClientError;
use crate::proxy::handler;
use crate::proxy::server::Transport;
use crate::proxy::state::{Listener, ProxyState};
use crate::proxy::tunnel::Tunnels;
use crate::proxy::{health, server};
use crate::reload::candidate::judge_canaries;
use crate::reload::reloader::{Reloader, Trigger};
use crate::reload::watch;
use crate::routes::config::ConfigError;
use crate::tls::{Certificates, OnFailure};
use crate::trace::{ExporterError, TraceConfig, Tracer};

/// The admin listener gets this long to finish its own requests at shutdown;
/// its answers are small and fast, and the proxy has drained by then.
const ADMIN_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// How often the live certificates are checked for a near expiry, which
/// comes with time and no reload.
const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

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
    /// Request-serving threads.
    pub workers: NonZeroUsize,
    /// Accept `POST /reload` from non-loopback admin peers.
    pub admin_allow_remote_changes: bool,
    /// Tracing (SPEC 9); `None` is off. It rides on request observation:
    /// with `observe_requests` off, nothing is traced either.
    pub tracing: Option<TraceConfig>,
}

/// The CPUs this process may run on (its affinity mask and cgroup quota, as
/// `std::thread::available_parallelism` reads them): one worker each.
pub fn default_workers() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

/// Why a router could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot build the upstream HTTP clients: {0}")]
    Client(#[from] ClientError),
    #[error("cannot start a worker thread: {0}")]
    Worker(#[from] std::io::Error),
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot set up tracing: {0}")]
    Trace(#[from] ExporterError),
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
            workers: default_workers(),
            admin_allow_remote_changes: false,
            tracing: None,
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
    tls: Option<TlsListener>,
}

/// The TLS listener, its certificates and the watcher that follows them.
struct TlsListener {
    listener: TcpListener,
    certificates: Arc<Certificates>,
    watch: watch::WatchHandle,
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
            tls: None,
        })
    }

    /// Serves the same routes over TLS on `listener` with `certificates`,
    /// which are followed (and reloaded on SIGHUP and `POST /reload`) from
    /// now on.
    pub fn add_tls_listener(&mut self, listener: TcpListener, certificates: Arc<Certificates>) {
        let watch = crate::tls::watch::spawn(Arc::clone(&certificates), self.options.force_poll);
        self.reloader.metrics().attach(certificates.collector());
        self.tls = Some(TlsListener {
            listener,
            certificates,
            watch,
        });
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
    ) -> Result<(), ServeError> {
        let Switchyard {
            options,
            reloader,
            watch: _watch,
            hangups,
            tls,
        } = self;
        let certificates = tls.as_ref().map(|tls| Arc::clone(&tls.certificates));
        let (stop_proxy, proxy_stopped) = signal::channel(false);
        // The watcher is kept until `serve` returns.
        let (tls_socket, _cert_watch) = match tls {
            Some(TlsListener {
                listener,
                certificates,
                watch,
            }) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(certificates.server_config()?);
                (Some((listener.into_std()?, acceptor)), Some(watch))
            }
            None => (None, None),
        };
        // Spans are exported from this runtime, never a request thread's.
        let tracing = match options.tracing.clone() {
            Some(config) => {
                tracing::info!(endpoint = %config.endpoint, sampler = ?config.sampler, "tracing on");
                let dropped = Arc::clone(reloader.metrics().trace_spans_dropped());
                Some(Tracer::start(config, dropped)?)
            }
            None => None,
        };
        let tracer = tracing.as_ref().map(|(tracer, _)| Arc::clone(tracer));
        let workers = spawn_workers(
            proxy_listener,
            tls_socket,
            &options,
            &reloader,
            tracer,
            proxy_stopped,
        )?;
        // The registry's own flag, so `switchyard_ready` and `/readyz` agree.
        let readiness = Arc::clone(reloader.metrics().readiness());
        // Registered before the spawn, so SIGHUP is handled from here on.
        let hangups = hangups.or_else(hangup_listener);
        let hangups = tokio::spawn(reload_on_sighup(
            Arc::clone(&reloader),
            certificates.clone(),
            hangups,
        ));
        let health_checks = health::spawn(Arc::clone(reloader.live()), reloader.swaps())?;
        let sweeper = crate::proxy::sweeper::spawn(Arc::clone(reloader.live()), reloader.swaps());
        let upstream_tls = crate::tls::upstream::spawn(
            Arc::clone(reloader.live()),
            reloader.swaps(),
            options.force_poll,
        );
        // The dashboard's charts: a sample a second, read here, off the
        // request threads.
        let history = Arc::new(History::default());
        let sampler = history::spawn(Arc::clone(reloader.live()), Arc::clone(&history));
        let canary_judge = tokio::spawn(judge_canaries(Arc::clone(&reloader)));
        let expiry_checks = certificates.clone().map(|certificates| {
            tokio::spawn(async move {
                let mut daily = tokio::time::interval(EXPIRY_CHECK_INTERVAL);
                // The first tick is now, and the load has just warned.
                daily.tick().await;
                loop {
                    daily.tick().await;
                    certificates.warn_if_expiring();
                }
            })
        });

        let (stop_admin, admin_stopped) = oneshot::channel::<()>();
        let admin = tokio::spawn(server::serve(
            admin_listener,
            Transport::Plain,
            server::with_peer_extension(admin::app(AdminState {
                reloader: Arc::clone(&reloader),
                readiness: Arc::clone(&readiness),
                allow_remote_changes: options.admin_allow_remote_changes,
                tls: certificates,
                history,
            })),
            async move {
                let _ = admin_stopped.await;
            },
            ADMIN_DRAIN_TIMEOUT,
            Arc::clone(&reloader.metrics().open().admin_connections),
        ));
        readiness.set(true);

        shutdown.await;
        readiness.set(false);
        tracing::info!(delay = ?options.shutdown_delay, drain = ?options.drain_timeout, "shutting down");
        tokio::time::sleep(options.shutdown_delay).await;
        let _ = stop_proxy.send(true);
        for worker in workers {
            if worker.await.is_err() {
                tracing::error!("a proxy worker thread ended without draining");
            }
        }
        // The spans of the last requests, sent within a short bound.
        if let Some((_, exporting)) = tracing {
            exporting.shutdown().await;
        }
        let _ = stop_admin.send(());
        if let Err(error) = admin.await {
            tracing::error!(%error, "admin listener task failed");
        }
        hangups.abort();
        health_checks.abort();
        upstream_tls.abort();
        sweeper.abort();
        sampler.abort();
        canary_judge.abort();
        if let Some(expiry_checks) = expiry_checks {
            expiry_checks.abort();
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Starts one request-serving thread per worker, each accepting on its own
/// handle to the proxy socket (the kernel hands each connection to one of
/// them), and to the TLS socket if there is one, until `stop` turns true,
/// then draining its own connections. Each returned receiver completes
/// when its worker has drained.
fn spawn_workers(
    listener: TcpListener,
    tls: Option<(std::net::TcpListener, tokio_rustls::TlsAcceptor)>,
    options: &Options,
    reloader: &Reloader,
    tracer: Option<Arc<Tracer>>,
    stop: signal::Receiver<bool>,
) -> Result<Vec<oneshot::Receiver<()>>, ServeError> {
    let listener = listener.into_std()?;
    let mut drained = Vec::with_capacity(options.workers.get());
    for worker in 0..options.workers.get() {
        let open = reloader.metrics().open();
        let tunnels = Tunnels::new(Arc::clone(&open.tunnels));
        let connections = Arc::clone(&open.proxy_connections);
        let tls_connections = Arc::clone(&open.tls_connections);
        let mut state = ProxyState::new(Arc::clone(reloader.live()), tunnels.clone())?;
        state.candidate = Arc::clone(reloader.candidate());
        state.observe = options.observe_requests;
        state.tracer = tracer.clone().filter(|_| options.observe_requests);
        let listener = listener.try_clone()?;
        let tls = match &tls {
            Some((socket, acceptor)) => Some((socket.try_clone()?, acceptor.clone())),
            None => None,
        };
        let stop = stop.clone();
        let drain_timeout = options.drain_timeout;
        let (done, finished) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(format!("switchyard-worker-{worker}"))
            .spawn(move || {
                // This thread's access lines go to the log writer a buffer
                // at a time, on a timer of the worker's own that runs only
                // while lines wait.
                log_writer::batch_this_thread();
                // Boxed: `block_on` would otherwise keep the whole worker
                // future (both listeners' accept loops) in its stack frame,
                // and every request's polls would run below it, ~9 KiB
                // deeper. cachegrind, a proxied small GET: 1,532 -> 1,502
                // L1d misses.
                runtime.block_on(Box::pin(async move {
                    tokio::spawn(log_writer::hand_off_when_lines_wait());
                    let listener = match TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(error) => {
                            tracing::error!(worker, %error, "worker cannot use the proxy socket");
                            return;
                        }
                    };
                    let stopped_at = std::cell::Cell::new(None);
                    let stopped = || {
                        let mut stop = stop.clone();
                        let stopped_at = &stopped_at;
                        async move {
                            let _ = stop.wait_for(|stopped| *stopped).await;
                            if stopped_at.get().is_none() {
                                stopped_at.set(Some(tokio::time::Instant::now()));
                            }
                        }
                    };
                    let plain = server::serve(
                        listener,
                        Transport::Plain,
                        handler::app(state.clone()),
                        stopped(),
                        drain_timeout,
                        connections,
                    );
                    let tls = async {
                        let Some((socket, acceptor)) = tls else {
                            return;
                        };
                        let listener = match TcpListener::from_std(socket) {
                            Ok(listener) => listener,
                            Err(error) => {
                                tracing::error!(worker, %error, "worker cannot use the TLS socket");
                                return;
                            }
                        };
                        let state = ProxyState {
                            listener: Listener::Tls,
                            ..state.clone()
                        };
                        server::serve(
                            listener,
                            Transport::Tls(acceptor),
                            handler::app(state),
                            stopped(),
                            drain_timeout,
                            tls_connections,
                        )
                        .await;
                    };
                    tokio::join!(plain, tls);
                    // Upgraded tunnels are not HTTP connections: they get
                    // what is left of the same deadline, then are closed
                    // with this runtime.
                    let deadline =
                        stopped_at.get().unwrap_or_else(tokio::time::Instant::now) + drain_timeout;
                    let left = tunnels.drained_by(deadline).await;
                    if left > 0 {
                        tracing::warn!(
                            worker,
                            tunnels = left,
                            "drain deadline passed; closing the remaining tunnels"
                        );
                    }
                }));
                log_writer::hand_off_this_thread();
                let _ = done.send(());
            })?;
        drained.push(finished);
    }
    Ok(drained)
}

/// SIGHUP reloads the routes, and the certificates if there are any,
/// through the same path as the watchers and the admin API.
async fn reload_on_sighup(
    reloader: Arc<Reloader>,
    certificates: Option<Arc<Certificates>>,
    hangups: Option<Signal>,
) {
    let Some(mut hangups) = hangups else {
        return;
    };
    while hangups.recv().await.is_some() {
        let reloader = Arc::clone(&reloader);
        let certificates = certificates.clone();
        let reloaded = tokio::task::spawn_blocking(move || {
            reloader.reload(Trigger::Signal);
            if let Some(certificates) = certificates {
                certificates.reload(Trigger::Signal, OnFailure::Report);
            }
        });
        if let Err(error) = reloaded.await {
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
