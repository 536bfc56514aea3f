//! Switchyard: a sidecar HTTP router whose route table is read without locks
//! and replaced atomically while it serves.
//!
//! Module map, in the order a request meets them:
//!
//! - [`server`]: accept loop, HTTP/1.1 and HTTP/2, limits, draining.
//! - [`proxy`]: the request path: one table snapshot, route, forward, stream.
//! - [`path`]: the canonical request path, matched and sent alike.
//! - [`headers`]: hop-by-hop removal, `X-Forwarded-*`, request ids.
//! - [`table`]: the immutable route table and its precedence-ordered lookup.
//! - [`error`]: proxy errors and their JSON responses.
//! - [`config`]: `routes.yaml` as written, checked field by field.
//! - [`reload`]: build off to the side, swap atomically, status and history.
//! - [`watch`]: file watcher (or poller) that triggers reloads.
//! - [`admin`]: the admin API.
//! - [`explain`]: why a request would go where it goes (`/routes/match`).
//! - [`metrics`]: per-route counters held in the table, `/metrics`.
//! - [`access`]: one access-log line per request, when its body ends.
//! - [`log_writer`]: batched log output that never makes a request wait.
//! - [`log_format`]: pretty log lines, with a cheap format for access events.
//! - [`run`]: wiring it all together, and the shutdown sequence.

pub mod access;
pub mod admin;
pub mod config;
pub mod error;
pub mod explain;
pub mod headers;
pub mod log_format;
pub mod log_writer;
pub mod metrics;
pub mod path;
pub mod proxy;
pub mod reload;
pub mod run;
pub mod server;
pub mod table;
pub mod watch;

pub use run::{Options, Switchyard};
