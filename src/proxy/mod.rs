//! The request path: from an accepted connection to an upstream response
//! streamed back.
//!
//! - [`server`]: accept loop, HTTP/1.1 and HTTP/2, limits, draining.
//! - [`handler`]: one table snapshot, route, then the route's destination.
//! - [`state`]: what workers, connections and a request's steps share.
//! - [`forward`]: a request to its upstreams, tries, the answer back.
//! - [`client`]: each worker's upstream clients, one per protocol setting.
//! - [`body`]: request bodies relayed frame by frame, trailers included.
//! - [`grpc`]: gRPC requests and the router's own gRPC answers.
//! - [`tunnel`]: upgraded connections, copied both ways.
//! - [`deadline`]: the route timeout, on timers each worker reuses.
//! - [`headers`]: hop-by-hop removal, `X-Forwarded-*`, request ids.
//! - [`error`]: proxy errors and their JSON (or gRPC) responses.
//! - [`health`]: active health checks of upstreams, off the request path.
//! - [`sweeper`]: forgets refilled rate-limit buckets, off the request path.

pub mod body;
pub mod client;
pub mod deadline;
pub mod error;
pub mod forward;
pub mod grpc;
pub mod handler;
pub mod headers;
pub mod health;
pub mod server;
pub mod state;
pub mod sweeper;
pub mod tunnel;
