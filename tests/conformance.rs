//! The router held to outside standards, against the real binary on both
//! of its HTTP/2 listeners (cleartext with prior knowledge, and TLS with
//! ALPN): h2spec's server cases frame by frame, abuse that the 2023-2024
//! HTTP/2 advisories describe (each with the router's memory and a
//! well-behaved client's p99 beside it), the Autobahn WebSocket cases
//! through the router and directly, and a TLS scan.
//!
//! The suites live in `tests/conformance/`; docs/conformance.md has every
//! case and its verdict. The WebSocket and TLS suites need Python
//! packages, installed into a venv under the target directory on first
//! use (`conformance/python.rs`); where that cannot be done they skip,
//! except under `CI=true`, where they fail.

mod support;

#[path = "conformance/abuse.rs"]
mod abuse;
#[path = "conformance/h2wire.rs"]
mod h2wire;
#[path = "conformance/http2_cases.rs"]
mod http2_cases;
#[path = "conformance/python.rs"]
mod python;
#[path = "conformance/target.rs"]
mod target;
#[path = "conformance/tls_scan.rs"]
mod tls_scan;
#[path = "conformance/websocket.rs"]
mod websocket;

use std::time::Duration;

use h2wire::Listener;
use target::Target;

/// A case that has not finished by then is stuck (each of its waits is
/// bounded by `h2wire::FRAME_WAIT`; some wait several times).
const CASE_DEADLINE: Duration = Duration::from_secs(30);

/// Runs every h2spec server case against the cleartext and the TLS
/// listener, prints one line per case and listener as h2spec does, and
/// fails listing every case whose answer was not the RFC's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_frames_conform_on_both_listeners() {
    let target = Target::start().await;
    let mut failures = Vec::new();
    let mut passed = 0;
    let mut deviating = 0;
    for listener in [target.plain(), target.tls()] {
        println!("{}:", listener.name());
        for case in http2_cases::CASES {
            let outcome = run_case(case, listener.clone()).await;
            match (&outcome, case.deviates) {
                (Ok(()), None) => {
                    passed += 1;
                    println!("  ok    {:<16} {}", case.id, case.title);
                }
                (Ok(()), Some(how)) => {
                    deviating += 1;
                    println!("  dev   {:<16} {}: {how}", case.id, case.title);
                }
                (Err(why), _) => {
                    println!("  FAIL  {:<16} {}: {why}", case.id, case.title);
                    failures.push(format!("{} {}: {why}", listener.name(), case.id));
                }
            }
        }
    }
    println!(
        "h2spec cases on both listeners: {passed} as the RFC says, \
         {deviating} as h2 answers instead (documented), {} failed",
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
}

async fn run_case(case: &http2_cases::Case, listener: Listener) -> Result<(), String> {
    tokio::time::timeout(CASE_DEADLINE, (case.run)(listener))
        .await
        .unwrap_or_else(|_| Err(format!("no verdict within {CASE_DEADLINE:?}")))
}
