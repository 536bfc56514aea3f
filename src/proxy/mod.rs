//! The request path: from an accepted connection to an upstream response
//! streamed back.
//!
//! - [`server`]: accept loop, HTTP/1.1 and HTTP/2, limits, draining.
//! - [`handler`]: one table snapshot, route, forward, stream.
//! - [`deadline`]: the route timeout, on timers each worker reuses.
//! - [`headers`]: hop-by-hop removal, `X-Forwarded-*`, request ids.
//! - [`error`]: proxy errors and their JSON responses.
//! - [`health`]: active health checks of upstreams, off the request path.

pub mod deadline;
pub mod error;
pub mod handler;
pub mod headers;
pub mod health;
pub mod server;
