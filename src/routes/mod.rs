//! The route file and everything built from it: the ground floor, which
//! imports no other part of the router.
//!
//! - [`config`]: `routes.yaml` as written, checked field by field.
//! - [`conditions`]: a request against a route's headers, query, cookies
//!   and path conditions.
//! - [`table`]: the immutable route table and its precedence-ordered lookup.
//! - [`path`]: the canonical request path, matched and sent alike.
//! - [`request`]: the parts of a request that routing reads.
//! - [`host`]: the request host, normalized the one way routes name it.
//! - [`explain`]: why a request would go where it goes (`/routes/match`).
//! - [`counters`]: the per-route counters a table holds.
//! - [`upstreams`]: the health and in-flight count of every upstream URL,
//!   shared across tables, and which client each upstream takes.
//! - [`balance`]: which upstream a try goes to: round robin, least
//!   request, rendezvous hashing.
//! - [`limits`]: rate-limit buckets, in-flight caps and retry budgets,
//!   carried across tables by route name and setting.
//! - [`upstream_tls`]: a route's `upstream_tls` built into a TLS client
//!   configuration, replaced when its files rotate.

pub mod balance;
pub mod conditions;
pub mod config;
pub mod counters;
pub mod explain;
pub mod host;
pub mod limits;
pub mod path;
pub mod request;
pub mod table;
pub mod upstream_tls;
pub mod upstreams;
