//! A TLS scan of the router's TLS listener with sslyze: no protocol below
//! TLS 1.2, no weak cipher suite (see `tls_scan.py` for what counts as
//! weak), no insecure renegotiation and no client-initiated one (rustls
//! never renegotiates; it signals RFC 5746 secure renegotiation in TLS
//! 1.2 hellos, which sslyze reports as supported). Prints a verdict line
//! to quote.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::python::{python_or_skip, script};
use crate::target::Target;

/// A scan of one listener on loopback takes a few seconds.
const SCAN_DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_offers_only_strong_protocols_and_suites() {
    let Some(python) = python_or_skip("TLS scan").await else {
        return;
    };
    let target = Target::start().await;
    let port = target.router.tls_addr().port().to_string();
    let scan = Command::new(&python)
        .arg(script("tls_scan.py"))
        .args([port.as_str(), "localhost"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(SCAN_DEADLINE, scan)
        .await
        .expect("the scan finishes in time")
        .expect("run tls_scan.py");
    assert!(
        output.status.success(),
        "tls_scan.py: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("tls_scan.py prints JSON");
    println!("tls scan: {report}");

    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
    let accepted: Vec<&str> = report["protocols"]
        .as_object()
        .expect("protocols")
        .iter()
        .filter(|(_, accepted)| accepted.as_bool() == Some(true))
        .map(|(protocol, _)| protocol.as_str())
        .collect();
    assert_eq!(accepted, ["TLS 1.2", "TLS 1.3"], "{report}");
    let suites = report["suites"].as_array().expect("suites");
    let weak: Vec<&serde_json::Value> = suites.iter().filter(|s| s["weak"] == true).collect();
    assert!(weak.is_empty(), "weak suites accepted: {weak:?}");
    let renegotiation = &report["renegotiation"];
    assert_eq!(
        renegotiation["secure"], true,
        "insecure renegotiation: {report}"
    );
    assert_eq!(renegotiation["client_initiated_dos"], false, "{report}");
    println!(
        "TLS scan verdict (sslyze 6.3.1): protocols {} only; {} cipher suites accepted, none weak \
         (all forward-secret AEAD); no insecure renegotiation (RFC 5746 signalled), \
         client-initiated renegotiation refused; pass",
        accepted.join(" and "),
        suites.len()
    );
}
