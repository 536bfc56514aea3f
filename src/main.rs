//! The `switchyard` binary: parses the command line, sets up logging, binds
//! the listeners and hands over to the library. Exits 1 when the route file
//! is missing or invalid.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use switchyard::observe::access::{self, AccessOutput};
use switchyard::observe::log_format::LineFormat;
use switchyard::observe::log_writer::{BatchedStderr, FlushGuard};
use switchyard::routes::config::Source;
use switchyard::routes::table::RouteTable;
use switchyard::tls::{Certificates, PairPaths, TlsError};
use switchyard::trace::TraceConfig;
use switchyard::{Options, Switchyard};
use tokio::net::TcpListener;

/// The proxy allocates a request's buffers on one thread and often frees
/// them on another (the upstream connection's task). glibc's malloc takes an
/// arena lock for that, which showed in profiles as lock waits; mimalloc
/// frees into per-thread lists without one. Measured: about a fifth less
/// CPU per proxied request (README, Performance).
///
/// It is mimalloc 2 (the crate's `v2` feature), not 3: version 3 keeps
/// freed pages for a second before returning them to the OS, where 2 waits
/// 10 ms, and under 1 MiB downloads on 8 connections that held 31-37 MiB
/// at peak against 20-21 MiB with version 2, for no gain in CPU per request.
/// Setting the delay on version 3 would take `unsafe` FFI at start-up.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "A sidecar HTTP router that reloads its routes while it serves"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default when no subcommand is given).
    Run(RunArgs),
    /// Validate a route file, print a summary, exit 0 (valid) or 1 (invalid).
    Check(CheckArgs),
}

#[derive(Args)]
struct RunArgs {
    /// The route file; watched for changes.
    #[arg(long, env = "SWITCHYARD_CONFIG", default_value = "routes.yaml")]
    config: PathBuf,
    /// The proxy listener.
    #[arg(long, env = "SWITCHYARD_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// The admin listener (never the same socket as the proxy).
    #[arg(long, env = "SWITCHYARD_ADMIN", default_value = "127.0.0.1:9901")]
    admin: String,
    /// Log output format.
    #[arg(long, env = "SWITCHYARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
    /// How long in-flight requests may finish after SIGTERM.
    #[arg(long, env = "SWITCHYARD_DRAIN_TIMEOUT", default_value = "25s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Keep serving this long after SIGTERM before closing the listener.
    #[arg(long, env = "SWITCHYARD_SHUTDOWN_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    shutdown_delay: Duration,
    /// Request-serving threads; the default is one per CPU the process may
    /// run on.
    #[arg(long, env = "SWITCHYARD_WORKERS", default_value_t = switchyard::run::default_workers())]
    workers: NonZeroUsize,
    /// Accept `POST /reload` from admin peers other than loopback (the
    /// admin port may be bound on all interfaces for probes; reads are
    /// served to every peer either way).
    #[arg(long, env = "SWITCHYARD_ADMIN_ALLOW_REMOTE_CHANGES")]
    admin_allow_remote_changes: bool,
    /// A TLS listener (HTTP/1.1 and HTTP/2 by ALPN) serving the same
    /// routes, beside the proxy listener.
    #[arg(long, env = "SWITCHYARD_TLS_LISTEN")]
    tls_listen: Option<String>,
    #[command(flatten)]
    tls: TlsPairArgs,
    /// Where spans go (OTLP over HTTP, protobuf), as a base URL such as
    /// http://collector:4318 (`/v1/traces` is appended). Without it, and
    /// without OpenTelemetry's OTEL_EXPORTER_OTLP_ENDPOINT or
    /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, tracing is off.
    #[arg(long, env = "SWITCHYARD_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// Follow the route file by polling instead of a file-system watcher.
    #[arg(long, env = "SWITCHYARD_POLL", hide = true)]
    poll: bool,
    /// Skip per-request metrics and access logs; only for measuring their
    /// cost (benches/observe.sh).
    #[arg(long, hide = true)]
    no_request_observability: bool,
    /// Start with this route file as a shadow candidate, as `POST
    /// /candidate?mode=shadow` would load it; only for measuring what a
    /// candidate costs each request (`benches/candidate.sh`), which needs
    /// it loaded before the first request.
    #[arg(long, hide = true, value_name = "PATH")]
    shadow_candidate: Option<PathBuf>,
}

#[derive(Args)]
struct CheckArgs {
    /// The route file to validate.
    #[arg(long, env = "SWITCHYARD_CONFIG", default_value = "routes.yaml")]
    config: PathBuf,
    /// Also show what would change against the router whose admin API is at
    /// this URL (for example http://127.0.0.1:9901).
    #[arg(long, value_name = "ADMIN_URL")]
    diff: Option<url::Url>,
    /// Route every request of this JSON access log with the file and say
    /// which would go to another route than the one that served it.
    #[arg(long, value_name = "ACCESS_LOG")]
    replay: Option<PathBuf>,
    /// With --replay: exit 1 when any logged request would move.
    #[arg(long, requires = "replay")]
    fail_on_move: bool,
    #[command(flatten)]
    tls: TlsPairArgs,
}

/// Certificate pairs: the n-th `--tls-cert` goes with the n-th `--tls-key`.
#[derive(Args)]
struct TlsPairArgs {
    /// A PEM certificate chain; repeat with `--tls-key` for more names
    /// (picked by SNI). Watched like the route file. In the environment,
    /// several are separated by commas.
    #[arg(long, env = "SWITCHYARD_TLS_CERT", value_delimiter = ',')]
    tls_cert: Vec<PathBuf>,
    /// The private key of the `--tls-cert` in the same position.
    #[arg(long, env = "SWITCHYARD_TLS_KEY", value_delimiter = ',')]
    tls_key: Vec<PathBuf>,
}

impl TlsPairArgs {
    fn pairs(&self) -> Result<Vec<PairPaths>, String> {
        if self.tls_cert.len() != self.tls_key.len() {
            return Err(format!(
                "{} --tls-cert and {} --tls-key given; each certificate needs its key",
                self.tls_cert.len(),
                self.tls_key.len()
            ));
        }
        Ok(self
            .tls_cert
            .iter()
            .zip(&self.tls_key)
            .map(|(cert, key)| PairPaths {
                cert: cert.clone(),
                key: key.clone(),
            })
            .collect())
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check(args)) => check(&args),
        Some(Command::Run(args)) => run(args),
        None => run(cli.run),
    }
}

/// Validates and prints either the errors or one line per route, then the
/// certificate pairs if any were given.
fn check(args: &CheckArgs) -> ExitCode {
    // Both are checked and printed, whichever fails.
    let routes = check_routes(args);
    let certificates = check_certificates(&args.tls);
    if routes && certificates {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Every refused pair's message, one per line.
fn one_per_line(errors: &TlsError) -> String {
    let lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

/// Loads every pair and prints its names and expiry, or every error.
fn check_certificates(args: &TlsPairArgs) -> bool {
    let pairs = match args.pairs() {
        Ok(pairs) if pairs.is_empty() => return true,
        Ok(pairs) => pairs,
        Err(error) => {
            eprintln!("{error}");
            return false;
        }
    };
    match Certificates::load(pairs) {
        Ok(certificates) => {
            let live = certificates.live();
            println!("certificates: ok, {} pairs", live.pairs().len());
            for pair in live.pairs() {
                println!(
                    "  {}: {} (expires {})",
                    pair.paths,
                    pair.names_joined(),
                    switchyard::pki::rfc3339(pair.not_after)
                );
            }
            true
        }
        Err(errors) => {
            eprintln!("{}", one_per_line(&errors));
            false
        }
    }
}

fn check_routes(args: &CheckArgs) -> bool {
    let table = Source::read(&args.config)
        .and_then(|source| switchyard::reload::reloader::build(&source, 1));
    match table {
        Ok(table) => {
            println!(
                "{}: ok, {} routes",
                args.config.display(),
                table.routes().len()
            );
            for route in table.routes() {
                println!("  {}", route.spec.summary());
            }
            let diffed = match &args.diff {
                None => true,
                Some(admin) => match diff_against(admin, &table) {
                    Ok(()) => true,
                    Err(error) => {
                        eprintln!("cannot compare with {admin}: {error:#}");
                        false
                    }
                },
            };
            let replayed = match &args.replay {
                None => true,
                Some(log) => replay(log, &table, args.fail_on_move),
            };
            diffed && replayed
        }
        Err(error) => {
            eprintln!("{}: {error}", args.config.display());
            false
        }
    }
}

/// Replays `log` with `table` and prints the report; `false` when the log
/// cannot be read, or when a request would move and `fail_on_move`.
fn replay(log: &std::path::Path, table: &RouteTable, fail_on_move: bool) -> bool {
    let report = std::fs::File::open(log).and_then(|file| {
        switchyard::candidate::replay::replay(table, std::io::BufReader::new(file))
    });
    match report {
        Ok(report) => {
            print!("{report}");
            !(fail_on_move && report.moved() > 0)
        }
        Err(error) => {
            eprintln!("cannot read {}: {error}", log.display());
            false
        }
    }
}

/// Prints the routes that saving this file would add, remove and change.
fn diff_against(admin: &url::Url, table: &RouteTable) -> anyhow::Result<()> {
    let routes_url = admin.join("routes")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let live: serde_json::Value = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()?;
        let response = client
            .get(routes_url.clone())
            .send()
            .await?
            .error_for_status()?;
        let bytes = response.bytes().await?;
        anyhow::Ok(serde_json::from_slice(&bytes)?)
    })?;
    let diff = switchyard::admin::diff_against_live(&live, table).map_err(anyhow::Error::msg)?;
    let version = live
        .get("version")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    if diff.added.is_empty() && diff.removed.is_empty() && diff.changed.is_empty() {
        println!("no change against the live table (version {version})");
        return Ok(());
    }
    println!("against the live table (version {version}):");
    let summary = |name: &str| {
        table
            .routes()
            .iter()
            .find(|r| r.name() == name)
            .map_or_else(|| name.to_owned(), |r| r.spec.summary())
    };
    for name in &diff.added {
        println!("  + {}", summary(name));
    }
    for name in &diff.changed {
        println!("  ~ {}", summary(name));
    }
    for name in &diff.removed {
        println!("  - {name}");
    }
    Ok(())
}

fn run(args: RunArgs) -> ExitCode {
    // Held until `run` returns, so buffered log lines are written at exit.
    let _log_writer = init_logging(args.log_format);
    let tracing = match TraceConfig::from_env(args.otlp_endpoint.as_deref()) {
        Ok(tracing) => tracing,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let options = Options {
        config: args.config.clone(),
        drain_timeout: args.drain_timeout,
        shutdown_delay: args.shutdown_delay,
        force_poll: args.poll,
        observe_requests: !args.no_request_observability,
        workers: args.workers,
        admin_allow_remote_changes: args.admin_allow_remote_changes,
        tracing,
    };
    // The same message `check` prints, so the two never disagree.
    let router = match Switchyard::load(options) {
        Ok(router) => router,
        Err(error) => {
            eprintln!("{}: {error}", args.config.display());
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &args.shadow_candidate {
        let proposed = std::fs::read_to_string(path)
            .map_err(|error| error.to_string())
            .and_then(|text| {
                router
                    .reloader()
                    .propose(text, switchyard::candidate::Mode::Shadow)
                    .map_err(|error| error.to_string())
            });
        if let Err(error) = proposed {
            eprintln!("{}: {error}", path.display());
            return ExitCode::FAILURE;
        }
    }
    let tls = match tls_setup(&args) {
        Ok(tls) => tls,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    // The control plane (signals, reloads, the watcher, the admin API) needs
    // no more than one thread; requests are served on the workers' own.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(router, &args.listen, &args.admin, tls)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Where the TLS listener goes and its certificates, loaded and checked
/// before anything is bound: an invalid pair stops the start with the
/// messages `check` prints.
fn tls_setup(args: &RunArgs) -> Result<Option<(String, Certificates)>, String> {
    let pairs = args.tls.pairs()?;
    match (&args.tls_listen, pairs.is_empty()) {
        (None, true) => Ok(None),
        (None, false) => Err("--tls-cert and --tls-key need --tls-listen".to_owned()),
        (Some(_), true) => {
            Err("--tls-listen needs at least one --tls-cert and --tls-key".to_owned())
        }
        (Some(listen), false) => match Certificates::load(pairs) {
            Ok(certificates) => Ok(Some((listen.clone(), certificates))),
            Err(errors) => Err(one_per_line(&errors)),
        },
    }
}

async fn serve(
    mut router: Switchyard,
    listen: &str,
    admin: &str,
    tls: Option<(String, Certificates)>,
) -> anyhow::Result<()> {
    // Signal handlers are installed before the listeners exist: a SIGTERM
    // that arrives as soon as the router is reachable must drain, and a
    // SIGHUP must reload, not end the process.
    let shutdown = shutdown_signal();
    router.listen_for_hangups();
    let proxy_listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let admin_listener = TcpListener::bind(admin)
        .await
        .with_context(|| format!("cannot listen on {admin} for the admin API"))?;
    let tls_addr = match tls {
        Some((listen, certificates)) => {
            let listener = TcpListener::bind(&listen)
                .await
                .with_context(|| format!("cannot listen on {listen} for TLS"))?;
            let addr = listener.local_addr()?;
            router.add_tls_listener(listener, std::sync::Arc::new(certificates));
            Some(addr)
        }
        None => None,
    };
    let table = router.reloader().live().load_full();
    tracing::info!(
        proxy = %proxy_listener.local_addr()?,
        tls = tls_addr.map(tracing::field::display),
        admin = %admin_listener.local_addr()?,
        config = %router.reloader().path().display(),
        routes = table.routes().len(),
        version = table.meta.version,
        "switchyard listening"
    );
    drop(table);
    router
        .serve(proxy_listener, admin_listener, shutdown)
        .await
        .map_err(anyhow::Error::from)
}

/// The exit status after a second SIGTERM or SIGINT cut the drain short:
/// 128 plus the signal's number, what a shell reports for a process that
/// signal killed (143 for SIGTERM, 130 for SIGINT). It tells a supervisor
/// that the process was stopped, not that it finished draining (0) or failed
/// to start (1).
const EXIT_SIGNALLED: i32 = 128;
const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

/// Installs the SIGTERM and SIGINT handlers now and returns a future that
/// completes at the first of them; a second one ends the process at once
/// with [`EXIT_SIGNALLED`] plus its number, for an operator who does not
/// want to wait for the drain.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let signals = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = signals else {
            tracing::error!("cannot listen for SIGTERM/SIGINT; stop the process with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
        tokio::spawn(async move {
            let signal = tokio::select! {
                _ = term.recv() => SIGTERM,
                _ = int.recv() => SIGINT,
            };
            tracing::warn!(signal, "second signal received; exiting without draining");
            std::process::exit(EXIT_SIGNALLED + signal);
        });
    }
}

/// Logs are written by a background thread in batches (see
/// `switchyard::observe::log_writer`): a request writes its access line
/// straight into its thread's buffer, with no syscall and no thread wake-up.
fn init_logging(format: LogFormat) -> Option<FlushGuard> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: escape codes in a file, a
    // pipe or a container log make every line harder to search.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let line_format = match format {
        LogFormat::Pretty => LineFormat::Pretty,
        LogFormat::Json => LineFormat::Json,
    };
    let (writer, guard) = match BatchedStderr::start() {
        Ok((writer, guard)) => (Some(writer), Some(guard)),
        Err(error) => {
            eprintln!("cannot start the log writer thread ({error}); logging directly to stderr");
            (None, None)
        }
    };
    access::write_lines_to(AccessOutput {
        format: line_format,
        batched: writer.clone(),
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match (format, writer) {
        (LogFormat::Pretty, Some(writer)) => builder.with_writer(writer).init(),
        (LogFormat::Json, Some(writer)) => builder
            .with_writer(writer)
            .json()
            .flatten_event(true)
            .init(),
        (LogFormat::Pretty, None) => builder.with_writer(std::io::stderr).init(),
        (LogFormat::Json, None) => builder
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .init(),
    }
    guard
}
