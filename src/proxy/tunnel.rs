//! Upgraded connections (WebSocket and others, SPEC 4.7): the switch to
//! the upstream's `101` and the byte copy both ways, and the count each
//! worker keeps of them so its drain can wait for them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use http::StatusCode;
use hyper_util::rt::TokioIo;
use tokio::sync::Notify;

use crate::proxy::headers::strip_hop_by_hop;
use crate::routes::counters::InFlight;

/// The upgraded connections (WebSocket and others) one worker relays. They
/// outlive the HTTP connection they came from, so the drain waits for them
/// separately and the worker closes whatever is left at the deadline.
#[derive(Clone, Debug)]
pub struct Tunnels {
    here: Arc<(AtomicUsize, Notify)>,
    /// The process-wide gauge (`switchyard_tunnels_open`).
    gauge: Arc<AtomicUsize>,
}

impl Tunnels {
    pub fn new(gauge: Arc<AtomicUsize>) -> Self {
        Tunnels {
            here: Arc::default(),
            gauge,
        }
    }

    pub(crate) fn open(&self) -> TunnelGuard {
        self.here.0.fetch_add(1, Ordering::Relaxed);
        self.gauge.fetch_add(1, Ordering::Relaxed);
        TunnelGuard(self.clone())
    }

    /// Returns once this worker relays no tunnel, or at `deadline`, with
    /// the number still open. The caller closes them by dropping the
    /// worker's runtime, which cancels their tasks and closes both sockets.
    pub async fn drained_by(&self, deadline: tokio::time::Instant) -> usize {
        loop {
            let open = self.here.0.load(Ordering::Acquire);
            if open == 0 {
                return 0;
            }
            tokio::select! {
                () = self.here.1.notified() => {}
                () = tokio::time::sleep_until(deadline) => return open,
            }
        }
    }
}

/// Counts one tunnel until its task ends, however it ends.
pub(crate) struct TunnelGuard(Tunnels);

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.0.gauge.fetch_sub(1, Ordering::Relaxed);
        if self.0.here.0.fetch_sub(1, Ordering::AcqRel) == 1 {
            // A stored permit if nobody waits yet: the drain sees it.
            self.0.here.1.notify_one();
        }
    }
}

/// Answers the client's upgrade with the upstream's `101` and, once both
/// sides have switched, copies bytes both ways until either side closes. The
/// copy holds no table snapshot, so a reload never touches an open tunnel.
/// Out of line, as every path the common request does not take: the
/// spawned copy's future is built on the stack.
#[inline(never)]
pub(crate) fn switch_protocols(
    route: &str,
    upstream_response: reqwest::Response,
    client_upgrade: hyper::upgrade::OnUpgrade,
    tunnels: &Tunnels,
    in_flight: Option<InFlight>,
) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *response.headers_mut() = upstream_response.headers().clone();
    strip_hop_by_hop(response.headers_mut(), true);
    let route = route.to_owned();
    let tunnel = tunnels.open();
    tokio::spawn(async move {
        let _tunnel = tunnel;
        // A tunnel counts in its route's `max_in_flight` until it closes.
        let _in_flight = in_flight;
        let (client, upstream) = match tokio::try_join!(
            async { client_upgrade.await.map_err(|e| e.to_string()) },
            async { upstream_response.upgrade().await.map_err(|e| e.to_string()) },
        ) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%route, %error, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = upstream;
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((sent, received)) => {
                tracing::debug!(%route, sent, received, "upgraded connection closed")
            }
            Err(error) => {
                tracing::debug!(%route, %error, "upgraded connection ended with an error")
            }
        }
    });
    response
}
