//! TLS on the proxy port (SPEC 4.11): certificate pairs, the live set that
//! handshakes read without a lock, and the watcher that reloads it; and
//! the watcher of the files the routes' `upstream_tls` names (SPEC 8).
//!
//! - [`certificates`]: the live set, SNI, reloads, status and metrics.
//! - [`watch`]: following the files.
//! - [`upstream`]: following the files of the routes' `upstream_tls`.

pub mod certificates;
pub mod upstream;
pub mod watch;

pub use crate::pki::{PairError, PairPaths};
pub use certificates::{Certificates, OnFailure, TlsError, TlsReload, TlsStatus};
