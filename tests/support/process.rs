//! The real `switchyard` binary, for what only the process shows: exit
//! codes, what it prints, and how it answers signals.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};

/// The binary under test, built by cargo for the integration tests.
pub const BINARY: &str = env!("CARGO_BIN_EXE_switchyard");

/// A process that has not exited (or started listening) by then is stuck.
pub const PROCESS_DEADLINE: Duration = Duration::from_secs(10);

/// Settings the binary reads from the environment; cleared so the test
/// machine's own settings cannot leak in (an OTLP endpoint in the
/// environment would turn tracing on).
const SETTINGS: [&str; 16] = [
    "SWITCHYARD_CONFIG",
    "SWITCHYARD_LISTEN",
    "SWITCHYARD_ADMIN",
    "SWITCHYARD_LOG_FORMAT",
    "SWITCHYARD_DRAIN_TIMEOUT",
    "SWITCHYARD_SHUTDOWN_DELAY",
    "SWITCHYARD_LOG",
    "SWITCHYARD_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_QUEUE_SIZE",
];

/// A route file in a fresh temporary directory, deleted on drop.
pub struct RouteFile {
    dir: TempDir,
    path: PathBuf,
}

impl RouteFile {
    pub fn with_yaml(yaml: &str) -> RouteFile {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("routes.yaml");
        std::fs::write(&path, yaml).expect("write the route file");
        RouteFile { dir, path }
    }

    /// A path in a fresh directory where no file exists.
    pub fn missing() -> RouteFile {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("routes.yaml");
        RouteFile { dir, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().expect("a UTF-8 temporary path")
    }

    pub fn write(&self, yaml: &str) {
        std::fs::write(&self.path, yaml).expect("write the route file");
    }
}

/// `switchyard` with a clean environment, its output captured.
pub fn switchyard_command() -> Command {
    clean_command(BINARY)
}

/// `program` with the binary's settings cleared, its output captured.
fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    for name in SETTINGS {
        command.env_remove(name);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs `switchyard ARGS` to completion; panics if it has not exited
/// within [`PROCESS_DEADLINE`] (a `run` that should have refused to start).
pub async fn run_switchyard(args: &[&str]) -> Output {
    let child = switchyard_command()
        .args(args)
        .spawn()
        .expect("start the switchyard binary");
    tokio::time::timeout(PROCESS_DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("switchyard {args:?} still running after {PROCESS_DEADLINE:?}"))
        .expect("wait for switchyard")
}

/// A running `switchyard` process serving on `127.0.0.1:0`. Killed on drop.
pub struct SwitchyardProcess {
    child: Child,
    proxy: SocketAddr,
    admin: SocketAddr,
    tls: Option<SocketAddr>,
    logs: Arc<Mutex<Vec<String>>>,
    route_file: RouteFile,
}

impl SwitchyardProcess {
    /// Starts `switchyard run` on a route file holding `yaml`, logging JSON
    /// at `info`, plus `extra` arguments (such as `--shutdown-delay`), and
    /// returns once it has logged the addresses it listens on.
    pub async fn run_with_yaml(yaml: &str, extra: &[&str]) -> SwitchyardProcess {
        SwitchyardProcess::run_with_yaml_and_env(yaml, extra, &[]).await
    }

    /// [`SwitchyardProcess::run_with_yaml`] with extra environment variables.
    pub async fn run_with_yaml_and_env(
        yaml: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> SwitchyardProcess {
        SwitchyardProcess::run_wrapped(yaml, extra, env, |_| Vec::new()).await
    }

    /// [`SwitchyardProcess::run_with_yaml_and_env`], started through the
    /// command that `wrapper` returns for the route file's path (such as
    /// `unshare ... sh -c '...; exec "$@"' sh`), which must end by exec-ing
    /// the arguments it is given, so the process signalled is the router.
    pub async fn run_wrapped(
        yaml: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        wrapper: impl FnOnce(&Path) -> Vec<String>,
    ) -> SwitchyardProcess {
        let route_file = RouteFile::with_yaml(yaml);
        let mut command = match wrapper(route_file.path()).split_first() {
            None => switchyard_command(),
            Some((program, args)) => {
                let mut command = clean_command(program);
                command.args(args).arg(BINARY);
                command
            }
        };
        command
            .args(["run", "--config", route_file.path_str()])
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .args(extra)
            .env("SWITCHYARD_LOG", "info")
            .envs(env.iter().copied());
        SwitchyardProcess::spawn(command, route_file).await
    }

    /// Starts `switchyard --config FILE --listen 127.0.0.1:0 --admin
    /// 127.0.0.1:0 EXTRA` as an operator would type it: no subcommand, and
    /// neither a log format nor a log level unless `extra` picks one, so the
    /// binary's defaults (pretty lines at `info`) are what runs. Returns once
    /// it has logged the addresses it listens on.
    pub async fn start_with_defaults(yaml: &str, extra: &[&str]) -> SwitchyardProcess {
        let route_file = RouteFile::with_yaml(yaml);
        let mut command = switchyard_command();
        command
            .args(["--config", route_file.path_str()])
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(extra);
        SwitchyardProcess::spawn(command, route_file).await
    }

    async fn spawn(mut command: Command, route_file: RouteFile) -> SwitchyardProcess {
        let mut child = command.spawn().expect("start the switchyard binary");
        let stderr = child.stderr.take().expect("stderr is piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let Listening { proxy, admin, tls } =
            tokio::time::timeout(PROCESS_DEADLINE, listening(stderr, Arc::clone(&logs)))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "switchyard did not log `switchyard listening` within {PROCESS_DEADLINE:?}; logs: {:?}",
                        logs.lock().unwrap()
                    )
                });
        SwitchyardProcess {
            child,
            proxy,
            admin,
            tls,
            logs,
            route_file,
        }
    }

    pub fn proxy_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The TLS listener's address; panics if the router has none.
    pub fn tls_addr(&self) -> SocketAddr {
        self.tls.expect("the router was started with --tls-listen")
    }

    /// The router's request-serving threads, counted by name in
    /// `/proc/PID/task` (the kernel keeps 15 bytes of a thread's name).
    pub fn worker_threads(&self) -> usize {
        let pid = self.child.id().expect("the router is running");
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .expect("the router's threads are listed in /proc")
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|name| name.starts_with("switchyard-work"))
            .count()
    }

    /// How many times each of the router's threads has been switched out
    /// so far (voluntary and involuntary context switches, from
    /// `/proc/PID/task/TID/status`), by thread id: each wake-up of a
    /// sleeping thread adds one.
    pub fn switches_by_thread(&self) -> HashMap<String, (String, u64)> {
        let pid = self.child.id().expect("the router is running");
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .expect("the router's threads are listed in /proc")
            .filter_map(|task| {
                let path = task.ok()?.path();
                let name = std::fs::read_to_string(path.join("comm")).ok()?;
                let status = std::fs::read_to_string(path.join("status")).ok()?;
                let switches = status
                    .lines()
                    .filter(|l| l.contains("ctxt_switches:"))
                    .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                    .sum();
                let tid = path.file_name()?.to_string_lossy().into_owned();
                Some((tid, (name.trim().to_owned(), switches)))
            })
            .collect()
    }

    /// The router's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the router is running")
    }

    /// The router's resident memory now (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("the router is running");
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .expect("the router's status in /proc")
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmRSS line")
    }

    pub fn route_file(&self) -> &RouteFile {
        &self.route_file
    }

    /// Log lines so far, in arrival order (JSON unless started with the
    /// default pretty format).
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Sends a signal by name (`TERM`, `INT`, `HUP`) with kill(1).
    pub async fn signal(&self, name: &str) {
        let pid = self.child.id().expect("the process is running").to_string();
        let status = Command::new("kill")
            .args(["-s", name, &pid])
            .status()
            .await
            .expect("run kill(1)");
        assert!(status.success(), "kill -s {name} {pid} failed");
    }

    /// Waits for the process to exit; panics after [`PROCESS_DEADLINE`].
    pub async fn exit_status(&mut self) -> ExitStatus {
        tokio::time::timeout(PROCESS_DEADLINE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("switchyard still running after {PROCESS_DEADLINE:?}"))
            .expect("wait for switchyard")
    }
}

/// The addresses of the start-up line.
struct Listening {
    proxy: SocketAddr,
    admin: SocketAddr,
    tls: Option<SocketAddr>,
}

/// Reads log lines until the start-up line with the addresses, then keeps
/// collecting the rest in the background.
async fn listening(stderr: ChildStderr, logs: Arc<Mutex<Vec<String>>>) -> Listening {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        logs.lock().unwrap().push(line.clone());
        let Some(found) = listening_addresses(&line) else {
            continue;
        };
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                logs.lock().unwrap().push(line);
            }
        });
        return found;
    }
    panic!(
        "switchyard exited before listening; logs: {:?}",
        logs.lock().unwrap()
    );
}

/// The proxy, admin and TLS addresses of the start-up line, in JSON
/// (`"proxy":"ADDR"`) or pretty (`proxy=ADDR`) format; `None` for any other
/// line.
fn listening_addresses(line: &str) -> Option<Listening> {
    let (proxy, admin, tls) = match serde_json::from_str::<Value>(line) {
        Ok(entry) if entry["message"] == "switchyard listening" => (
            entry["proxy"].as_str().map(str::to_owned),
            entry["admin"].as_str().map(str::to_owned),
            entry["tls"].as_str().map(str::to_owned),
        ),
        Err(_) if line.contains("switchyard listening") => {
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|part| part.strip_prefix(name)?.strip_prefix('='))
                    .map(str::to_owned)
            };
            (field("proxy"), field("admin"), field("tls"))
        }
        _ => return None,
    };
    let addr = |name: &str, value: Option<String>| -> SocketAddr {
        value
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no `{name}` address in {line}"))
    };
    Some(Listening {
        proxy: addr("proxy", proxy),
        admin: addr("admin", admin),
        tls: tls.map(|tls| addr("tls", Some(tls))),
    })
}
