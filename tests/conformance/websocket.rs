//! The Autobahn WebSocket cases through the router, compared with the
//! same cases against the upstream directly: a router that relays
//! upgraded connections byte for byte changes no verdict, whatever the
//! echo server's own verdict is (a case `websockets` fails directly must
//! fail the same way through the router). Only the difference between `OK`
//! and `NON-STRICT` is let pass, as timing (see [`agree`]).
//!
//! The cases run with kosoku, which drives the Autobahn TestSuite's own
//! case files on Python 3. Sections 1 to 10 run whole (framing, pings,
//! reserved bits, opcodes, fragmentation, UTF-8, closing, limits and
//! performance); of the compression sections 12 and 13, the first group
//! of each (12.1 and 13.1): the full 12 and 13 take over four minutes
//! each way, for code paths of the echo server, not of the relay.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::python::{python_or_skip, script};
use crate::support::SwitchyardProcess;

/// The cases run, as kosoku's globs.
const CASES: &[&str] = &[
    "1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*", "12.1.*", "13.1.*",
];

/// Cases run at once: the suite is mostly waiting on loopback.
const CONCURRENCY: &str = "4";

/// One run of every case must finish within this on a loaded machine
/// (about 25 s each way on two cores, the router a debug build).
const RUN_DEADLINE: Duration = Duration::from_secs(300);

/// A case's two verdicts: the message exchange and the closing handshake.
type Verdicts = BTreeMap<String, (String, String)>;

/// Whether two verdicts of a case agree. `NON-STRICT` is Autobahn's word
/// for a right answer that did not fail fast (a peer that went on to
/// answer a ping after a protocol error, say): whether it does depends on
/// how the frames of one write arrive, which any relay shifts by a few
/// microseconds, so it counts as `OK`. Every other verdict, `FAILED`
/// above all, must be the same both ways.
fn agree(direct: &(String, String), routed: &(String, String)) -> bool {
    let lenient = |verdict: &str| match verdict {
        "NON-STRICT" => "OK".to_owned(),
        other => other.to_owned(),
    };
    lenient(&direct.0) == lenient(&routed.0) && lenient(&direct.1) == lenient(&routed.1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_cases_give_the_same_verdicts_through_the_router() {
    let Some(python) = python_or_skip("WebSocket").await else {
        return;
    };
    let mut echo = Command::new(&python)
        .arg(script("ws_echo.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the WebSocket echo server");
    let mut lines = BufReader::new(echo.stdout.take().expect("piped")).lines();
    let port = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the echo server says its port in time")
        .expect("read the echo server's port")
        .expect("the echo server's port");
    let echo_url = format!("ws://127.0.0.1:{port}");
    let router = SwitchyardProcess::run_with_yaml(
        &format!("routes:\n  ws:\n    upstream: http://127.0.0.1:{port}\n"),
        &[],
    )
    .await;
    let routed_url = router.proxy_url("").replacen("http://", "ws://", 1);

    let started = Instant::now();
    let direct = run_cases(&python, &echo_url).await;
    let direct_took = started.elapsed();
    let started = Instant::now();
    let routed = run_cases(&python, &routed_url).await;
    let routed_took = started.elapsed();

    assert!(direct.len() > 300, "only {} cases ran", direct.len());
    let mut differing = Vec::new();
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for (case, verdict) in &direct {
        *tally
            .entry(format!("{}/{}", verdict.0, verdict.1))
            .or_default() += 1;
        match routed.get(case) {
            Some(through) if agree(verdict, through) => {
                if through != verdict {
                    println!(
                        "autobahn: case {case}: {verdict:?} directly, {through:?} routed (timing)"
                    );
                }
            }
            through => differing.push(format!("{case}: direct {verdict:?}, routed {through:?}")),
        }
    }
    println!(
        "autobahn: {} cases, the same verdict both ways for {}; \
         verdicts (exchange/close) {tally:?}; {:.0} s directly, {:.0} s through the router",
        direct.len(),
        direct.len() - differing.len(),
        direct_took.as_secs_f64(),
        routed_took.as_secs_f64()
    );
    for (case, verdict) in direct.iter().filter(|(_, v)| v.0 != "OK" || v.1 != "OK") {
        println!(
            "autobahn: case {case}: {}/{} both ways",
            verdict.0, verdict.1
        );
    }
    assert!(
        differing.is_empty() && routed.len() == direct.len(),
        "verdicts differ: {differing:#?}"
    );
}

/// Runs [`CASES`] against `url` and returns each case's verdicts.
async fn run_cases(python: &std::path::Path, url: &str) -> Verdicts {
    let output = Command::new(python)
        .arg(script("autobahn.py"))
        .args([url, CONCURRENCY])
        .args(CASES)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RUN_DEADLINE, output)
        .await
        .unwrap_or_else(|_| panic!("the cases against {url} did not finish in {RUN_DEADLINE:?}"))
        .expect("run autobahn.py");
    assert!(
        output.status.success(),
        "autobahn.py {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let case: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            let text = |field: &str| case[field].as_str().unwrap_or_default().to_owned();
            (text("case"), (text("behavior"), text("close")))
        })
        .collect()
}
