//! The files under `deploy/` checked against the code: every variable and
//! flag they set exists with that meaning, ports and probes match the
//! listeners and admin routes, the ConfigMap is mounted as a directory, the
//! grace period covers the drain, and the image serves the file it ships.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use serde_yaml::Value;
use support::{run_switchyard, RouteFile, TestRouter};

fn deploy_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `switchyard run --help`: each environment variable with the flag it
/// belongs to.
async fn env_flags() -> BTreeMap<String, String> {
    let output = run_switchyard(&["run", "--help"]).await;
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut flags = BTreeMap::new();
    let mut flag = None;
    for line in help.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("--") {
            flag = rest.split([' ', '=']).next().map(str::to_owned);
        }
        if let Some((_, rest)) = line.split_once("[env: ") {
            let name = rest.split('=').next().expect("a name").to_owned();
            flags.insert(name, flag.clone().expect("a flag before its env var"));
        }
    }
    flags
}

/// The variable and flag name for the same setting, by the one convention
/// the command line follows.
fn expected_var(flag: &str) -> String {
    format!("SWITCHYARD_{}", flag.to_uppercase().replace('-', "_"))
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("ADDR:PORT")
}

fn duration(text: &str) -> Duration {
    humantime::parse_duration(text).unwrap_or_else(|e| panic!("`{text}` is not a duration: {e}"))
}

/// The volume mounted at `file`'s directory, which must not be a `subPath`
/// mount: those are single-file bind mounts that never see updates.
fn directory_volume<'a>(container: &Value, pod: &'a Value, file: &Path) -> &'a Value {
    let dir = file.parent().expect("a directory");
    let mount = container["volumeMounts"]
        .as_sequence()
        .expect("mounts")
        .iter()
        .find(|m| Path::new(m["mountPath"].as_str().unwrap_or("")) == dir)
        .unwrap_or_else(|| panic!("a mount at {}", dir.display()));
    assert!(
        mount.get("subPath").is_none(),
        "{}: a subPath mount never sees updates",
        file.display()
    );
    pod["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume")
}

#[tokio::test]
async fn the_kubernetes_example_agrees_with_the_code() {
    let flags = env_flags().await;
    let text = deploy_file("kubernetes-sidecar.yaml");
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .collect();
    let kind = |k: &str| docs.iter().find(|d| d["kind"] == k).expect(k).clone();
    let config_map = kind("ConfigMap");
    let deployment = kind("Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = pod["containers"]
        .as_sequence()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == "switchyard")
        .expect("the switchyard container");

    let mut env = BTreeMap::new();
    for var in container["env"].as_sequence().expect("env") {
        let name = var["name"].as_str().expect("a name").to_owned();
        let value = var["value"].as_str().expect("a value").to_owned();
        let flag = flags
            .get(&name)
            .unwrap_or_else(|| panic!("{name} is not a variable the router reads"));
        assert_eq!(name, expected_var(flag), "{name} belongs to --{flag}");
        env.insert(name, value);
    }
    assert_eq!(container["args"][0], "run");

    // Ports and probes.
    let ports: BTreeMap<&str, u64> = container["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().expect("a name"),
                p["containerPort"].as_u64().expect("a port"),
            )
        })
        .collect();
    assert_eq!(ports["http"], port_of(&env["SWITCHYARD_LISTEN"]));
    assert_eq!(ports["admin"], port_of(&env["SWITCHYARD_ADMIN"]));
    let router = TestRouter::with_yaml("routes: {}\n").start().await;
    for probe in ["readinessProbe", "livenessProbe"] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["port"], "admin", "{probe} asks the admin listener");
        let path = get["path"].as_str().expect("a probe path");
        let (status, _) = router.admin_text(path).await;
        assert_eq!(status, StatusCode::OK, "{probe} {path}");
    }

    // The ConfigMap is mounted as the directory that holds the route file.
    let config = Path::new(&env["SWITCHYARD_CONFIG"]);
    let volume = directory_volume(container, pod, config);
    assert_eq!(volume["configMap"]["name"], config_map["metadata"]["name"]);
    let file = config
        .file_name()
        .and_then(|f| f.to_str())
        .expect("a file name");
    let routes = config_map["data"][file]
        .as_str()
        .expect("the route file in the ConfigMap");
    let route_file = RouteFile::with_yaml(routes);
    let checked = run_switchyard(&["check", "--config", route_file.path_str()]).await;
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );

    // The TLS Secret is mounted as the directory of the pair, and the port
    // named https is the TLS listener's.
    assert_eq!(ports["https"], port_of(&env["SWITCHYARD_TLS_LISTEN"]));
    for var in ["SWITCHYARD_TLS_CERT", "SWITCHYARD_TLS_KEY"] {
        let volume = directory_volume(container, pod, Path::new(&env[var]));
        assert!(
            volume["secret"]["secretName"].is_string(),
            "{var} comes from a Secret"
        );
    }

    // The grace period covers the delay and the drain.
    let grace = Duration::from_secs(
        pod["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("seconds"),
    );
    let needed =
        duration(&env["SWITCHYARD_SHUTDOWN_DELAY"]) + duration(&env["SWITCHYARD_DRAIN_TIMEOUT"]);
    assert!(
        grace > needed,
        "grace {grace:?} must exceed delay + drain {needed:?}"
    );
}

#[tokio::test]
async fn the_dockerfile_serves_the_file_it_ships() {
    let flags = env_flags().await;
    let text = deploy_file("Dockerfile");
    let mut env = BTreeMap::new();
    let mut copies = Vec::new();
    let mut entrypoint = None;
    // Continuation lines joined, so `ENV A=1 \ B=2` is one instruction.
    for instruction in text.replace("\\\n", " ").lines() {
        let mut words = instruction.split_whitespace();
        match words.next() {
            Some("ENV") => {
                for pair in words {
                    let (name, value) = pair.split_once('=').expect("ENV NAME=value");
                    let flag = flags
                        .get(name)
                        .unwrap_or_else(|| panic!("{name} is not read"));
                    assert_eq!(name, expected_var(flag));
                    env.insert(name.to_owned(), value.to_owned());
                }
            }
            Some("COPY") => copies.push(words.map(str::to_owned).collect::<Vec<_>>()),
            Some("ENTRYPOINT") => entrypoint = Some(instruction.to_owned()),
            _ => {}
        }
    }
    let config = &env["SWITCHYARD_CONFIG"];
    let shipped = copies
        .iter()
        .find(|c| c.last() == Some(config))
        .unwrap_or_else(|| panic!("no COPY puts a route file at {config}"));
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(&shipped[shipped.len() - 2]);
    let checked = run_switchyard(&["check", "--config", source.to_str().expect("UTF-8")]).await;
    assert!(checked.status.success(), "the shipped file is valid");
    let binary = copies
        .iter()
        .find(|c| c.iter().any(|w| w.ends_with("release/switchyard")))
        .and_then(|c| c.last())
        .expect("the binary is copied into the image");
    assert!(
        entrypoint.is_some_and(|e| e.contains(binary.as_str())),
        "ENTRYPOINT runs {binary}"
    );
    assert!(text.contains(&format!(
        "EXPOSE {} {}",
        port_of(&env["SWITCHYARD_LISTEN"]),
        port_of(&env["SWITCHYARD_ADMIN"])
    )));
}

#[tokio::test]
async fn the_systemd_unit_agrees_with_the_code() {
    let flags = env_flags().await;
    let unit = deploy_file("switchyard.service");
    let line = |key: &str| {
        unit.lines()
            .filter_map(|l| l.strip_prefix(key))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    for assignment in line("Environment=") {
        let (name, _) = assignment.split_once('=').expect("NAME=value");
        let flag = flags
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not read"));
        assert_eq!(name, expected_var(flag));
    }
    let exec = line("ExecStart=").pop().expect("ExecStart");
    for word in exec.split_whitespace().filter(|w| w.starts_with("--")) {
        assert!(
            flags.values().any(|f| format!("--{f}") == word),
            "{word} is not a flag"
        );
    }
    // Stopping waits for the drain (default 25 s, no shutdown delay here).
    let stop = line("TimeoutStopSec=").pop().expect("TimeoutStopSec");
    assert!(duration(&format!("{stop}s")) > Duration::from_secs(25));

    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("skipping systemd-analyze verify: systemd-analyze is not installed");
        return;
    };
    // Verified with the built binary in place of the installed path, which
    // this machine does not have.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let copy = dir.path().join("switchyard.service");
    let binary = env!("CARGO_BIN_EXE_switchyard");
    std::fs::write(&copy, unit.replace("/usr/local/bin/switchyard", binary))
        .expect("write the unit");
    let verified = tokio::process::Command::new(analyze)
        .arg("verify")
        .arg(&copy)
        .output()
        .await
        .expect("systemd-analyze runs");
    assert!(
        verified.status.success(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verified.stderr)
    );
}

fn which(tool: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(tool))
        .find(|path| path.is_file())
        .ok_or(())
}
