//! Turns changes to certificate and key files into certificate reloads:
//! a notify watcher on every directory that holds one, or a poller when no
//! watcher can start.
//!
//! Directories are watched, not files, for the reasons the route file's
//! watcher gives (`crate::reload::watch`): a Kubernetes Secret volume
//! swaps a `..data` symlink, an editor saves by rename. A certificate and
//! its key are two files, and an update can land one before the other;
//! a pair that fails right after a change is given [`PAIR_PATIENCE`] for
//! the rest of the update to arrive before the failure is reported.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::Event;

use crate::pki::sha256_hex;
use crate::reload::reloader::Trigger;
use crate::reload::watch::{
    follow, is_relevant, watched_dir, Following, WatchHandle, DEBOUNCE, POLL_INTERVAL,
};
use crate::tls::certificates::{Certificates, OnFailure, TlsReload};

/// How long a pair that fails after a change may take to become whole:
/// a certificate copied in before its key, by hand or by a script, is
/// complete within milliseconds; a pair that is still broken after this
/// is reported.
pub const PAIR_PATIENCE: Duration = Duration::from_millis(500);

/// Starts following the files of every pair in `certificates`; dropping
/// the handle stops it.
pub fn spawn(certificates: Arc<Certificates>, force_poll: bool) -> WatchHandle {
    let dirs = watched_dirs(&certificates);
    let polling = Arc::clone(&certificates);
    follow(
        &dirs,
        force_poll,
        Following {
            what: "the certificates",
            thread: "switchyard-certs",
        },
        move |rx| watch_loop(&certificates, rx),
        move |rx| poll_loop(&polling, rx),
    )
}

/// Each directory that holds a certificate or a key, once.
fn watched_dirs(certificates: &Certificates) -> Vec<PathBuf> {
    let dirs: BTreeSet<PathBuf> = certificates
        .paths()
        .iter()
        .flat_map(|pair| [watched_dir(&pair.cert), watched_dir(&pair.key)])
        .collect();
    dirs.into_iter().collect()
}

fn watch_loop(certificates: &Certificates, rx: &mpsc::Receiver<notify::Result<Event>>) {
    while let Ok(event) = rx.recv() {
        if !is_relevant(&event) {
            continue;
        }
        // Quiet for one debounce, then load; a failure waits for the rest
        // of the update, and any further event starts the wait over.
        loop {
            if !quiet_for(rx, DEBOUNCE) {
                return;
            }
            let held = certificates.reload(Trigger::Watch, OnFailure::Hold);
            if !matches!(held, TlsReload::Held(_)) {
                break;
            }
            match next_change(rx, PAIR_PATIENCE) {
                Next::Change => continue,
                Next::Quiet => {
                    certificates.reload(Trigger::Watch, OnFailure::Report);
                    break;
                }
                Next::Stopped => return,
            }
        }
    }
}

pub(crate) enum Next {
    Change,
    Quiet,
    Stopped,
}

/// Waits up to `wait` for an event that can mean a file changed. Others
/// (among them the opens and reads of the reload itself) do not count.
pub(crate) fn next_change(rx: &mpsc::Receiver<notify::Result<Event>>, wait: Duration) -> Next {
    let until = Instant::now() + wait;
    loop {
        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(event) if is_relevant(&event) => return Next::Change,
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => return Next::Quiet,
            Err(RecvTimeoutError::Disconnected) => return Next::Stopped,
        }
    }
}

/// Waits until no change has been seen for `quiet`; `false` once the
/// watcher has stopped.
pub(crate) fn quiet_for(rx: &mpsc::Receiver<notify::Result<Event>>, quiet: Duration) -> bool {
    loop {
        match next_change(rx, quiet) {
            Next::Change => {}
            Next::Quiet => return true,
            Next::Stopped => return false,
        }
    }
}

/// Reloads when the files' bytes have changed and then stayed the same for
/// one interval, so a pair caught mid-update is not reported.
fn poll_loop(certificates: &Certificates, rx: &mpsc::Receiver<notify::Result<Event>>) {
    let mut previous = files_digest(certificates);
    let mut attempted = previous.clone();
    loop {
        match rx.recv_timeout(POLL_INTERVAL) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(_) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let seen = files_digest(certificates);
        if seen == previous && seen != attempted {
            certificates.reload(Trigger::Poll, OnFailure::Report);
            attempted.clone_from(&seen);
        }
        previous = seen;
    }
}

/// One digest over every certificate and key file's bytes (a file that
/// cannot be read counts as empty).
fn files_digest(certificates: &Certificates) -> String {
    let mut all = Vec::new();
    for pair in certificates.paths() {
        for path in [&pair.cert, &pair.key] {
            all.extend(std::fs::read(path).unwrap_or_default());
            all.push(0);
        }
    }
    sha256_hex(&all)
}
