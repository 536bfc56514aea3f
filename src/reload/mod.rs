//! Replacing the live route table while it serves.
//!
//! - [`reloader`]: build off to the side, swap atomically, status and history.
//! - [`candidate`]: a candidate table proposed, judged, promoted or rolled back.
//! - [`watch`]: the file watcher (or poller) that triggers reloads.

pub mod candidate;
pub mod reloader;
pub mod watch;
