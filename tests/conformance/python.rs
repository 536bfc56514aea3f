//! The Python the WebSocket and TLS suites run: a venv under the target
//! directory with the pinned packages of `requirements.txt`, made on
//! first use (or beforehand by `.ci/run`). Where it cannot be made (no
//! `python3`, no `venv` module, no route to PyPI) a suite is skipped with
//! the reason printed, except under `CI=true`, where that is a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// Where the venv lives: under cargo's scratch directory for integration
/// tests, so `cargo clean` removes it.
const VENV: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/conformance-venv");

/// The pinned packages.
const REQUIREMENTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/conformance/requirements.txt"
);

/// Written into the venv once every package is installed, holding the
/// requirements it was made from, so a changed pin makes a new install.
const STAMP: &str = "installed-requirements.txt";

/// The suites' scripts.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/conformance")
        .join(name)
}

/// Tests of one binary run on several threads; one of them makes the venv.
static MAKING: Mutex<()> = Mutex::new(());

/// The venv's `python`, ready; or `None` after printing why `suite` is
/// skipped (a panic under `CI=true`).
pub async fn python_or_skip(suite: &str) -> Option<PathBuf> {
    let made = tokio::task::spawn_blocking(ready_venv)
        .await
        .expect("the venv set-up did not panic");
    match made {
        Ok(python) => Some(python),
        Err(reason) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true requires the {suite} suite's Python packages: {reason}"
            );
            eprintln!("skipping the {suite} suite: {reason}");
            None
        }
    }
}

fn ready_venv() -> Result<PathBuf, String> {
    let _making = MAKING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let venv = Path::new(VENV);
    let python = venv.join("bin/python");
    let requirements =
        std::fs::read_to_string(REQUIREMENTS).map_err(|e| format!("{REQUIREMENTS}: {e}"))?;
    let stamp = venv.join(STAMP);
    if python.is_file() && std::fs::read_to_string(&stamp).ok().as_ref() == Some(&requirements) {
        return Ok(python);
    }
    run(
        Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(venv),
        "python3 -m venv (apt-get install python3 python3-venv)",
    )?;
    run(
        Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            REQUIREMENTS,
        ]),
        "pip install -r tests/conformance/requirements.txt",
    )?;
    std::fs::write(&stamp, requirements).map_err(|e| format!("{}: {e}", stamp.display()))?;
    Ok(python)
}

fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
