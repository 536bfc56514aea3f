//! What the router tells about itself: metrics, access logs and the log
//! output they go through. Reads the route table; knows nothing of the
//! request path that feeds it.
//!
//! - [`metrics`]: the registry `/metrics` encodes, read from the live table.
//! - [`history`]: the last 15 minutes of each route and upstream, a sample
//!   a second, for the dashboard's charts.
//! - [`access`]: one access-log line per request, when its body ends.
//! - [`log_writer`]: batched log output that never makes a request wait.
//! - [`log_format`]: the access line, pretty or JSON, written without `fmt`.

pub mod access;
pub mod history;
pub mod log_format;
pub mod log_writer;
pub mod metrics;
