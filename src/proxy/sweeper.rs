//! Forgets the rate-limit buckets that have refilled completely, off the
//! request path: the only buckets a bound on keys may forget (SPEC 7.4:
//! forgetting a full bucket changes nothing a request could see, so a
//! limit is never lifted). It runs on the control plane's runtime, once a
//! second while the live table limits by key, and sleeps on table swaps
//! otherwise, so a router without keyed limits has nothing here that wakes.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::routes::table::RouteTable;

/// How often full buckets are forgotten: a key whose bucket has refilled
/// takes a slot for at most this long after it could have given it up.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Starts sweeping the table in `live`, and each table `swaps` announces.
pub fn spawn(live: Arc<ArcSwap<RouteTable>>, mut swaps: watch::Receiver<u64>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            swaps.borrow_and_update();
            let keyed = live.load_full().routes().iter().any(|route| {
                route
                    .protection
                    .rate_limit
                    .as_ref()
                    .is_some_and(|limiter| limiter.is_keyed())
            });
            if keyed {
                tokio::select! {
                    () = tokio::time::sleep(SWEEP_INTERVAL) => sweep(&live.load_full()),
                    changed = swaps.changed() => if changed.is_err() { return },
                }
            } else if swaps.changed().await.is_err() {
                return;
            }
        }
    })
}

fn sweep(table: &RouteTable) {
    for route in table.routes() {
        if let Some(limiter) = &route.protection.rate_limit {
            let forgotten = limiter.forget_full();
            if forgotten > 0 {
                tracing::debug!(
                    route = route.name(),
                    forgotten,
                    kept = limiter.keys(),
                    "forgot full rate-limit buckets"
                );
            }
        }
    }
}
