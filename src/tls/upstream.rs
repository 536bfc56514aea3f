//! Follows the files of the live table's `upstream_tls` settings (SPEC 8):
//! a rotated client certificate or CA bundle is loaded without an edit of
//! the route file, and new upstream connections present it, while streams
//! on the old ones run to their end.
//!
//! The directories are watched as the listener's certificates are (see
//! [`crate::tls::watch`]); which settings to reload is read from a list the
//! supervisor replaces after each reload of the routes, so the watcher
//! thread never holds an old table's settings. A setting whose files fail
//! to load keeps what it had, and the failure is logged.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;

use arc_swap::ArcSwap;
use notify::Event;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::reload::watch::{
    follow, is_relevant, watched_dir, Following, WatchHandle, DEBOUNCE, POLL_INTERVAL,
};
use crate::routes::table::RouteTable;
use crate::routes::upstream_tls::UpstreamTls;
use crate::routes::upstreams::Connect;
use crate::tls::watch::{next_change, quiet_for, Next, PAIR_PATIENCE};

/// The settings to reload when their files change.
type Settings = Arc<ArcSwap<Vec<Arc<UpstreamTls>>>>;

/// Starts following the settings of the table in `live`, and of each table
/// `swaps` announces; it runs until the returned handle is aborted.
pub fn spawn(
    live: Arc<ArcSwap<RouteTable>>,
    mut swaps: watch::Receiver<u64>,
    force_poll: bool,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let settings: Settings = Arc::default();
        let mut following: Option<(BTreeSet<PathBuf>, WatchHandle)> = None;
        loop {
            // Marked seen before the load, as the health checks do.
            swaps.borrow_and_update();
            let now = settings_of(&live.load_full());
            let dirs: BTreeSet<PathBuf> = now.iter().flat_map(|tls| dirs_of(tls)).collect();
            settings.store(Arc::new(now));
            let same_dirs = following.as_ref().is_some_and(|(old, _)| *old == dirs);
            if !same_dirs {
                following = (!dirs.is_empty()).then(|| {
                    let list: Vec<PathBuf> = dirs.iter().cloned().collect();
                    let (watched, polled) = (Arc::clone(&settings), Arc::clone(&settings));
                    let handle = follow(
                        &list,
                        force_poll,
                        Following {
                            what: "the upstream TLS files",
                            thread: "switchyard-upstream-tls",
                        },
                        move |rx| watch_loop(&watched, rx),
                        move |rx| poll_loop(&polled, rx),
                    );
                    (dirs, handle)
                });
            }
            if swaps.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    })
}

/// Each distinct setting the table's upstreams use.
fn settings_of(table: &RouteTable) -> Vec<Arc<UpstreamTls>> {
    let mut seen = HashSet::new();
    table
        .routes()
        .iter()
        .flat_map(|route| route.upstreams())
        .filter_map(|upstream| match &upstream.connect {
            Connect::Tls(target) => Some(Arc::clone(&target.tls)),
            _ => None,
        })
        .filter(|tls| seen.insert(Arc::as_ptr(tls)))
        .collect()
}

fn dirs_of(tls: &UpstreamTls) -> Vec<PathBuf> {
    let spec = &tls.spec;
    spec.ca
        .iter()
        .chain(
            spec.identity
                .iter()
                .flat_map(|pair| [&pair.cert, &pair.key]),
        )
        .map(|path| watched_dir(path))
        .collect()
}

/// Reloads every setting; `report` logs the ones that fail, otherwise they
/// are returned as still failing (a certificate may be waiting for its key).
fn reload_all(settings: &Settings, report: bool) -> bool {
    let mut failing = false;
    for tls in settings.load().iter() {
        match tls.reload() {
            Ok(true) => tracing::info!(setting = %tls.spec, "upstream TLS files reloaded"),
            Ok(false) => {}
            Err(error) if report => {
                tracing::error!(setting = %tls.spec, %error, "upstream TLS files rejected; the previous ones stay in use");
            }
            Err(_) => failing = true,
        }
    }
    failing
}

fn watch_loop(settings: &Settings, rx: &mpsc::Receiver<notify::Result<Event>>) {
    while let Ok(event) = rx.recv() {
        if !is_relevant(&event) {
            continue;
        }
        loop {
            if !quiet_for(rx, DEBOUNCE) {
                return;
            }
            if !reload_all(settings, false) {
                break;
            }
            match next_change(rx, PAIR_PATIENCE) {
                Next::Change => continue,
                Next::Quiet => {
                    reload_all(settings, true);
                    break;
                }
                Next::Stopped => return,
            }
        }
    }
}

/// Without a watcher: every interval, reload what changed (a setting whose
/// bytes did not change costs one read of its files).
fn poll_loop(settings: &Settings, rx: &mpsc::Receiver<notify::Result<Event>>) {
    loop {
        match rx.recv_timeout(POLL_INTERVAL) {
            Err(RecvTimeoutError::Timeout) | Ok(_) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        reload_all(settings, true);
    }
}
