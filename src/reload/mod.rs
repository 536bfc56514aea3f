//! Replacing the live route table while it serves.
//!
//! - [`reloader`]: build off to the side, swap atomically, status and history.
//! - [`watch`]: the file watcher (or poller) that triggers reloads.

pub mod reloader;
pub mod watch;
