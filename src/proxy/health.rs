//! Active health checks (SPEC 2, `health:`): one background task per
//! distinct upstream URL that a live route asks to check, on the control
//! plane's runtime, never on a request's path.
//!
//! A supervisor follows the live table: it starts a check when a URL gains
//! one, and stops it when no route of the live table checks that URL any
//! more. It wakes only when a reload swaps a table in, so a sidecar whose
//! routes check nothing has nothing here that wakes it. A check only
//! writes the verdict into the URL's shared [`UpstreamHealth`]; requests
//! read it with one atomic load.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use url::Url;

use crate::proxy::client::{ClientError, UpstreamClients};
use crate::routes::config::HealthSpec;
use crate::routes::table::RouteTable;
use crate::routes::upstreams::{CheckVerdict, RouteUpstream, UpstreamHealth};

/// A check running for one URL.
struct Running {
    spec: HealthSpec,
    health: Arc<UpstreamHealth>,
    task: JoinHandle<()>,
}

impl Running {
    fn stop(self) {
        self.task.abort();
        self.health.set_checked(false);
    }
}

/// Starts the supervisor on the table in `live`, and again on each table
/// that `swaps` announces. It runs until the returned handle is aborted.
pub fn spawn(
    live: Arc<ArcSwap<RouteTable>>,
    mut swaps: watch::Receiver<u64>,
) -> Result<JoinHandle<()>, ClientError> {
    let clients = UpstreamClients::new()?;
    Ok(tokio::spawn(async move {
        let mut running: HashMap<Url, Running> = HashMap::new();
        loop {
            // Marked seen before the load: a swap after it is announced
            // again, so the supervisor never sleeps on a stale table.
            swaps.borrow_and_update();
            follow(&live.load_full(), &mut running, &clients);
            if swaps.changed().await.is_err() {
                // The reloader is gone, and no table will follow this one.
                std::future::pending::<()>().await;
            }
        }
    }))
}

/// Makes the running checks those `table` asks for.
fn follow(table: &RouteTable, running: &mut HashMap<Url, Running>, clients: &UpstreamClients) {
    // The first route in file order that checks a URL decides how.
    let mut wanted: HashMap<&Url, (&HealthSpec, &RouteUpstream)> = HashMap::new();
    for route in table.routes() {
        let Some(spec) = &route.spec.health else {
            continue;
        };
        for upstream in route.upstreams() {
            wanted.entry(&upstream.spec.url).or_insert((spec, upstream));
        }
    }
    let stale: Vec<Url> = running
        .iter()
        .filter(|(url, check)| {
            wanted.get(url).is_none_or(|(spec, upstream)| {
                check.spec != **spec || !Arc::ptr_eq(&check.health, &upstream.health)
            })
        })
        .map(|(url, _)| url.clone())
        .collect();
    for url in stale {
        if let Some(check) = running.remove(&url) {
            tracing::info!(upstream = %url, "health check stopped");
            check.stop();
        }
    }
    for (url, (spec, upstream)) in wanted {
        if running.contains_key(url) {
            continue;
        }
        let client = match clients.for_upstream(&upstream.connect) {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(upstream = %url, %error, "cannot make a client to check the upstream");
                continue;
            }
        };
        tracing::info!(upstream = %url, path = %spec.path, interval = ?spec.interval, "health check started");
        let health = &upstream.health;
        health.set_checked(true);
        let target = format!(
            "{}{}",
            upstream.origin.as_str().trim_end_matches('/'),
            spec.path
        );
        let task = tokio::spawn(check_forever(
            client,
            url.clone(),
            target,
            spec.clone(),
            Arc::clone(health),
        ));
        running.insert(
            url.clone(),
            Running {
                spec: spec.clone(),
                health: Arc::clone(health),
                task,
            },
        );
    }
}

/// Checks one URL every `interval` and flips its verdict after `healthy`
/// good or `unhealthy` bad answers in a row.
/// `target` is the check's URL on the upstream's origin (the one requests
/// go to, `http://` for an `h2c://` upstream), sent with the client its
/// protocol asks for.
async fn check_forever(
    client: reqwest::Client,
    url: Url,
    target: String,
    spec: HealthSpec,
    health: Arc<UpstreamHealth>,
) {
    let mut ticks = tokio::time::interval(spec.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut good, mut bad) = (0u32, 0u32);
    loop {
        ticks.tick().await;
        let answer = tokio::time::timeout(spec.timeout, client.get(&target).send()).await;
        let healthy = match answer {
            Ok(Ok(response)) => {
                let status = response.status();
                status.is_success() || status.is_redirection()
            }
            Ok(Err(_)) | Err(_) => false,
        };
        let unix_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        health.checked_at(unix_ms);
        if healthy {
            (good, bad) = (good.saturating_add(1), 0);
            if good >= spec.healthy && health.verdict() != CheckVerdict::Healthy {
                tracing::info!(upstream = %url, "health check: upstream healthy");
                health.set_verdict(CheckVerdict::Healthy);
            }
        } else {
            (good, bad) = (0, bad.saturating_add(1));
            if bad >= spec.unhealthy && health.verdict() != CheckVerdict::Unhealthy {
                tracing::warn!(upstream = %url, "health check: upstream unhealthy");
                health.set_verdict(CheckVerdict::Unhealthy);
            }
        }
    }
}
