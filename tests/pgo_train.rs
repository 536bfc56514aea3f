//! The profile-guided build's training workload (`examples/pgo_train.rs`)
//! still runs clean against the router as it is: every request of every
//! kind answered 200, the reload live, SIGTERM ending the process with
//! success. A workload that broke would fail `scripts/pgo-build.sh`, or
//! worse, train the build on error paths.

use std::path::Path;
use std::time::Duration;

#[path = "../examples/pgo_train.rs"]
#[allow(dead_code)] // its `main`
mod pgo_train;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_training_workload_runs_clean_against_the_router() {
    let binary = Path::new(env!("CARGO_BIN_EXE_switchyard"));
    let sent = tokio::time::timeout(Duration::from_secs(120), pgo_train::train(binary, 20))
        .await
        .expect("the workload finishes within two minutes")
        .expect("every request answered 200 and a clean exit");
    // Two passes of 32 + 4 connections x 75 requests and 8 + 2 TLS x 25.
    assert_eq!(sent, 2 * ((32 + 4) * 75 + (8 + 2) * 25));
}
