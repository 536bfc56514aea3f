//! What a route does to a request and its answer besides choosing where it
//! goes (SPEC 7): pure functions over the built route, each called by the
//! request path at one fixed point and testable without a socket.
//!
//! - [`rewrite`]: the path the upstream receives (`strip_prefix`,
//!   `rewrite`), joined to the upstream's base path.
//! - [`edits`]: `request_headers` and `response_headers`, with their
//!   placeholders.
//! - [`redirect`]: the router's own redirect answers.
//! - [`limit`]: admission by rate limit and in-flight cap.
//! - [`retry`]: which outcomes of a try may be tried again.
//! - [`mirror`]: copies of a share of the requests, never in the way.
//!
//! State that outlives a table (rate-limit buckets, in-flight counts) lives
//! in `routes/`, beside upstream health; this part imports `routes/` and
//! never the other way round.

pub mod edits;
pub mod limit;
pub mod mirror;
pub mod redirect;
pub mod retry;
pub mod rewrite;
