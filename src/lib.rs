//! Switchyard: a sidecar HTTP router whose route table is read without locks
//! and replaced atomically while it serves.
//!
//! The parts, each a folder, each importing only the parts listed before it:
//!
//! - [`pki`]: certificates and keys read from PEM files and checked, for
//!   the TLS listener and for upstreams.
//! - [`routes`]: the route file and what is built from it: the checked
//!   config, the immutable table and its lookup, paths, hosts, the
//!   explainer, the per-route counters a table holds.
//! - [`candidate`]: a second table beside the live one, to prove a change
//!   on live traffic (shadow, canary) or on a logged day (replay).
//! - [`trace`]: OpenTelemetry spans of sampled requests, W3C Trace
//!   Context, and their export over OTLP; imports no other part.
//! - [`observe`]: what the router tells about itself: metrics, access
//!   logs, batched log output.
//! - [`policy`]: what a route does to a request besides choosing where it
//!   goes: rewrites, header edits, redirects; pure functions over the
//!   built route.
//! - [`proxy`]: the request path: listeners, the handler, header hygiene,
//!   errors.
//! - [`reload`]: building a new table off to the side and swapping it in,
//!   and the watcher that triggers it.
//! - [`tls`]: certificates for the TLS listener, their live set and
//!   their reloads.
//! - [`admin`]: the admin API and dashboard.
//! - [`run`]: wiring it all together, and the shutdown sequence.
//!
//! And one page outside the layering, importing nothing: [`locks`], what the
//! compiler says about locks held across `.await`, pinned as doc tests.

pub mod admin;
pub mod candidate;
pub mod locks;
pub mod observe;
pub mod pki;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod routes;
pub mod run;
pub mod tls;
pub mod trace;

pub use run::{Options, ServeError, Switchyard};
