//! Turns changes to the route file into reloads: a notify watcher on the
//! file's directory, or a poller when the watcher cannot start.
//!
//! The directory is watched, not the file, because an editor's save-by-rename
//! and a Kubernetes ConfigMap update (a `..data` symlink swapped by rename)
//! replace the inode a file watch would be attached to. No event is filtered
//! by file name: a ConfigMap update never names `routes.yaml`. Any relevant
//! event in the directory re-reads the path through its symlinks, and the
//! reloader's sha256 comparison turns unrelated events into no-ops.
//!
//! The watcher runs on its own thread with std channels: notify calls back
//! from a plain thread, and reloading is synchronous file work anyway.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
use notify::{Event, EventKind, RecursiveMode, Watcher};

use crate::reload::reloader::{Reloader, Trigger};
use crate::routes::config::Source;

/// Events that arrive this close together are one change: a ConfigMap update
/// is four directory operations, an editor's save two or three. Short enough
/// to keep reload latency far under SPEC's 200 ms.
pub const DEBOUNCE: Duration = Duration::from_millis(10);

/// How long the watcher waits for a writer that has the route file open to
/// close it. A file caught between two chunks of a write can be valid YAML
/// with fewer routes, so it is not read before the close; but a close that
/// never comes (a writer that hangs, a hard link created onto the name)
/// must not stop reloads for good.
pub const WRITE_PATIENCE: Duration = Duration::from_secs(5);

/// How long a route file that disappeared may take to come back before the
/// watcher reports it missing: vim and `rm` + re-create leave a gap of a few
/// milliseconds; a file that is really gone is still reported within a
/// fraction of a second.
pub const MISSING_GRACE: Duration = Duration::from_millis(250);

/// How often the poller reads the file when no watcher could be started.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Keeps the watcher (or poller) alive; dropping it stops the thread.
pub struct WatchHandle {
    // Dropping either closes the thread's channel, which ends the thread.
    _watcher: Option<notify::RecommendedWatcher>,
    _poll_keepalive: Option<mpsc::Sender<notify::Result<Event>>>,
}

/// How the file is being followed, for the start-up log and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Watch,
    Poll,
}

impl WatchHandle {
    pub fn mode(&self) -> Mode {
        if self._watcher.is_some() {
            Mode::Watch
        } else {
            Mode::Poll
        }
    }
}

/// Starts following the route file. `force_poll` is for tests and for file
/// systems where inotify is known not to work.
pub fn spawn(reloader: Arc<Reloader>, force_poll: bool) -> WatchHandle {
    let dirs = [watched_dir(reloader.path())];
    let polling = Arc::clone(&reloader);
    follow(
        &dirs,
        force_poll,
        Following {
            what: "the route file",
            thread: "switchyard-watch",
        },
        move |rx| watch_loop(&reloader, rx),
        move |rx| poll_loop(&polling, rx),
    )
}

/// What a [`follow`] is for, in its log lines and thread name.
pub(crate) struct Following {
    pub what: &'static str,
    pub thread: &'static str,
}

/// Runs `watching` on a thread of its own with the events of a notify
/// watcher on `dirs`, or, if no watcher can start (or `force_poll`),
/// `polling` with a channel that only closes when the handle is dropped.
pub(crate) fn follow(
    dirs: &[PathBuf],
    force_poll: bool,
    following: Following,
    watching: impl FnOnce(&mpsc::Receiver<notify::Result<Event>>) + Send + 'static,
    polling: impl FnOnce(&mpsc::Receiver<notify::Result<Event>>) + Send + 'static,
) -> WatchHandle {
    let Following { what, thread } = following;
    let (tx, rx) = mpsc::channel();
    let watcher = if force_poll {
        None
    } else {
        match start_watcher(dirs, tx.clone()) {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                tracing::warn!(?dirs, %error, interval = ?POLL_INTERVAL,
                    "cannot watch the directory of {what}; polling the file instead");
                None
            }
        }
    };
    let thread = std::thread::Builder::new().name(thread.into());
    let handle = match watcher {
        Some(watcher) => {
            tracing::info!(?dirs, "watching the directory of {what}");
            thread.spawn(move || watching(&rx)).map(|_| WatchHandle {
                _watcher: Some(watcher),
                _poll_keepalive: None,
            })
        }
        None => thread.spawn(move || polling(&rx)).map(|_| WatchHandle {
            _watcher: None,
            _poll_keepalive: Some(tx),
        }),
    };
    handle.unwrap_or_else(|error| {
        // Without a thread there is nothing to follow the file with; the
        // router still serves, and SIGHUP and POST /reload still work.
        tracing::error!(%error, "cannot start the thread that follows {what}");
        WatchHandle {
            _watcher: None,
            _poll_keepalive: None,
        }
    })
}

/// The directory to watch for `file`: its parent, or `.` for a bare name.
pub(crate) fn watched_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn start_watcher(
    dirs: &[PathBuf],
    tx: mpsc::Sender<notify::Result<Event>>,
) -> notify::Result<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event| {
        // The receiver is gone only when the router is shutting down.
        let _ = tx.send(event);
    })?;
    for dir in dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

/// Whether an event can mean the route file now reads differently.
pub(crate) fn is_relevant(event: &notify::Result<Event>) -> bool {
    let Ok(event) = event else {
        // An error (such as a queue overflow) may hide a change: re-read.
        return true;
    };
    match event.kind {
        // The writer is still at work; its close follows, and a file read
        // in between could be half written and still parse.
        EventKind::Modify(ModifyKind::Data(_)) => false,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        // A new regular file is empty or being written; its close-write
        // event follows. A new symlink or directory is complete at once.
        EventKind::Create(CreateKind::File) => false,
        EventKind::Create(_) => event
            .paths
            .iter()
            .any(|p| std::fs::symlink_metadata(p).is_ok_and(|m| !m.is_file())),
        _ => true,
    }
}

fn watch_loop(reloader: &Reloader, rx: &mpsc::Receiver<notify::Result<Event>>) {
    let mut writing = OpenWrite::new(reloader.path());
    while let Ok(event) = rx.recv() {
        writing.note(&event);
        if !is_relevant(&event) {
            continue;
        }
        if !settle(rx, &mut writing, reloader.path()) {
            return;
        }
        reloader.reload(Trigger::Watch);
    }
}

/// Waits until the directory has been quiet for [`DEBOUNCE`], which folds a
/// burst of events into one reload, and until no write to the route file is
/// in progress: another file's event must not make the watcher read a file
/// that is half written. A file that is missing once things are quiet gets
/// [`MISSING_GRACE`] to reappear (an editor that deletes and re-creates it)
/// before its absence is reported. Returns `false` when the watcher has
/// stopped.
fn settle(
    rx: &mpsc::Receiver<notify::Result<Event>>,
    writing: &mut OpenWrite,
    config: &Path,
) -> bool {
    let give_up = Instant::now() + WRITE_PATIENCE;
    let mut graced = false;
    loop {
        let wait = if writing.open {
            give_up.saturating_duration_since(Instant::now())
        } else {
            DEBOUNCE
        };
        match rx.recv_timeout(wait) {
            Ok(event) => writing.note(&event),
            Err(RecvTimeoutError::Timeout) if writing.open => {
                if Instant::now() >= give_up {
                    tracing::warn!(waited = ?WRITE_PATIENCE,
                        "the route file is still open for writing; reading it anyway");
                    writing.open = false;
                    return true;
                }
            }
            Err(RecvTimeoutError::Timeout) if !graced && !config.exists() => {
                graced = true;
                match rx.recv_timeout(MISSING_GRACE) {
                    Ok(event) => writing.note(&event),
                    Err(RecvTimeoutError::Timeout) => return true,
                    Err(RecvTimeoutError::Disconnected) => return false,
                }
            }
            Err(RecvTimeoutError::Timeout) => return true,
            Err(RecvTimeoutError::Disconnected) => return false,
        }
    }
}

/// Whether a writer has the route file open: its data changed (or it was
/// created) and its close-write has not come yet.
struct OpenWrite {
    name: Option<std::ffi::OsString>,
    open: bool,
}

impl OpenWrite {
    fn new(config: &Path) -> Self {
        OpenWrite {
            name: config.file_name().map(ToOwned::to_owned),
            open: false,
        }
    }

    fn note(&mut self, event: &notify::Result<Event>) {
        let Ok(event) = event else {
            // Events may have been lost, a close among them.
            self.open = false;
            return;
        };
        // The watch is on one directory, so the name alone identifies the
        // file; a ConfigMap's `routes.yaml` symlink is never written to.
        let names_config = event
            .paths
            .iter()
            .any(|p| p.file_name().is_some() && p.file_name() == self.name.as_deref());
        if !names_config {
            return;
        }
        match event.kind {
            EventKind::Modify(ModifyKind::Data(_)) => self.open = true,
            EventKind::Create(CreateKind::File) => {
                // A symlink or hard link made onto the name is complete;
                // only an empty new file has a writer still to come.
                let path = event.paths.first();
                self.open = path
                    .and_then(|p| std::fs::symlink_metadata(p).ok())
                    .is_some_and(|m| m.is_file() && m.len() == 0);
            }
            // Closed, or the name now points at another inode, whose
            // writer (if any) will show itself again.
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(_))
            | EventKind::Remove(_) => self.open = false,
            _ => {}
        }
    }
}

/// Reloads when the file's bytes differ from the live table's and have
/// stayed the same for one interval, so a file caught mid-write (which a
/// poller cannot tell from a finished one) is not put live.
fn poll_loop(reloader: &Reloader, rx: &mpsc::Receiver<notify::Result<Event>>) {
    let mut previous: Option<String> = None;
    // A rejected file is reported once, not once per interval.
    let mut attempted: Option<String> = None;
    loop {
        match rx.recv_timeout(POLL_INTERVAL) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(_) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let seen = Source::read(reloader.path()).ok().map(|s| s.sha256);
        let live = reloader.live().load().meta.sha256.clone();
        let stable = seen.is_some() && seen == previous;
        if stable && seen.as_deref() != Some(live.as_str()) && seen != attempted {
            reloader.reload(Trigger::Poll);
            attempted.clone_from(&seen);
        }
        previous = seen;
    }
}

/// Warns when the route file is itself a mount point: a single-file bind
/// mount, which is what a Kubernetes `subPath` ConfigMap mount is. Such a
/// file keeps the inode it was mounted with and never sees an update
/// (kubernetes issue 50345), so the router would silently keep old routes.
pub fn warn_if_file_mount(config: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    if let Some(mount_point) = file_mount_point(&mountinfo, config) {
        tracing::warn!(
            config = %config.display(),
            mount_point = %mount_point.display(),
            "the route file is a single-file bind mount (a Kubernetes subPath mount?): \
             it will not receive updates; mount its directory instead"
        );
    }
}

/// The mount point in `mountinfo` that is the route file itself, if any.
pub fn file_mount_point(mountinfo: &str, config: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(config).ok()?;
    let candidates = [Some(absolute.clone()), std::fs::canonicalize(config).ok()];
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .find(|mount_point| candidates.iter().flatten().any(|c| c == mount_point))
}

/// mountinfo writes space, tab, newline and backslash as octal escapes.
fn unescape_mountinfo(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(index) = rest.find('\\') {
        out.push_str(&rest[..index]);
        let code = rest.get(index + 1..index + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[index + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[index + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
1510 1490 8:1 /var/lib/kubelet/pods/x/volumes/kubernetes.io~configmap/routes/..2026_11_26/routes.yaml /etc/switchyard/routes.yaml ro,relatime - ext4 /dev/sda1 rw
1511 1490 8:1 /data /srv/my\\040dir rw,relatime - ext4 /dev/sda1 rw
";

    #[test]
    fn single_file_bind_mount_is_detected() {
        let found = file_mount_point(MOUNTINFO, Path::new("/etc/switchyard/routes.yaml"));
        assert_eq!(found, Some(PathBuf::from("/etc/switchyard/routes.yaml")));
    }

    #[test]
    fn file_inside_a_mounted_directory_is_not_a_file_mount() {
        assert_eq!(
            file_mount_point(MOUNTINFO, Path::new("/srv/my dir/routes.yaml")),
            None
        );
        assert_eq!(
            file_mount_point(MOUNTINFO, Path::new("/etc/other/routes.yaml")),
            None
        );
    }

    #[test]
    fn escaped_mount_points_are_unescaped() {
        assert_eq!(unescape_mountinfo("/srv/my\\040dir"), "/srv/my dir");
        assert_eq!(unescape_mountinfo("/a\\134b"), "/a\\b");
    }

    #[test]
    fn only_close_write_and_renames_of_a_data_write_trigger() {
        use notify::event::{DataChange, RenameMode};
        let event = |kind| Ok(Event::new(kind));
        assert!(!is_relevant(&event(EventKind::Modify(ModifyKind::Data(
            DataChange::Any
        )))));
        assert!(is_relevant(&event(EventKind::Access(AccessKind::Close(
            AccessMode::Write
        )))));
        assert!(!is_relevant(&event(EventKind::Access(AccessKind::Open(
            notify::event::AccessMode::Any
        )))));
        assert!(!is_relevant(&event(EventKind::Create(CreateKind::File))));
        assert!(is_relevant(&event(EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        )))));
        assert!(is_relevant(&event(EventKind::Remove(
            notify::event::RemoveKind::Any
        ))));
    }
}
