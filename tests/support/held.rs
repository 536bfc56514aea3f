//! An upstream that holds `/hold` requests until the test releases them,
//! for tests of what happens to requests in flight.

use std::time::Duration;

use axum::routing::get;
use tokio::sync::{mpsc, watch};

use super::Upstream;

/// The body the held upstream answers with once released.
pub const RELEASED: &str = "released";

/// An upstream whose `/hold` answers only when the test releases it, and
/// says on `arrived` when a request is waiting; `/quick` answers at once.
pub struct Held {
    pub upstream: Upstream,
    arrived: mpsc::UnboundedReceiver<()>,
    release: watch::Sender<bool>,
}

pub async fn held_upstream() -> Held {
    let (arrived_tx, arrived) = mpsc::unbounded_channel();
    let (release, released) = watch::channel(false);
    let upstream = Upstream::handler(
        axum::Router::new()
            .route(
                "/hold",
                get(move || {
                    let arrived = arrived_tx.clone();
                    let mut released = released.clone();
                    async move {
                        let _ = arrived.send(());
                        let _ = released.wait_for(|&go| go).await;
                        RELEASED
                    }
                }),
            )
            .route("/quick", get(|| async { "quick" })),
    )
    .start()
    .await;
    Held {
        upstream,
        arrived,
        release,
    }
}

impl Held {
    /// Waits until a request is held at the upstream.
    pub async fn arrival(&mut self) {
        tokio::time::timeout(Duration::from_secs(5), self.arrived.recv())
            .await
            .expect("the request reaches the upstream")
            .expect("the upstream is running");
    }

    pub fn release(&self) {
        let _ = self.release.send(true);
    }
}
