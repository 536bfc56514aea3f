//! TLS on the proxy port (SPEC 4.11): certificate pairs, the live set that
//! handshakes read without a lock, and the watcher that reloads it.
//!
//! - [`certificates`]: the live set, SNI, reloads, status and metrics.
//! - [`watch`]: following the files.

pub mod certificates;
pub mod watch;

pub use crate::pki::{PairError, PairPaths};
pub use certificates::{Certificates, OnFailure, TlsError, TlsReload, TlsStatus};
