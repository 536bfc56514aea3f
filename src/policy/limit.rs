//! Admission to a route (SPEC 7.4): its rate limit, then its in-flight
//! cap, checked once the route is known and before anything is sent. A
//! request refused here never reaches an upstream; one admitted holds its
//! place in the in-flight count until its response ends.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;

use crate::routes::config::LimitKey;
use crate::routes::counters::InFlight;
use crate::routes::limits::{BucketKey, Protection};

/// Why a route turned a request away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No token: a 429, with how long until one comes.
    RateLimited { retry_after: Duration },
    /// `max_in_flight` requests are under way: a 503 at once.
    Overloaded,
}

/// Admits a request from `client` with `headers` to a route with
/// `protection`; the returned place (if the route caps its in-flight
/// requests) must be held until the response ends.
pub fn admit(
    protection: &Protection,
    headers: &HeaderMap,
    client: IpAddr,
) -> Result<Option<InFlight>, Refused> {
    if let Some(limiter) = &protection.rate_limit {
        let key = match &limiter.spec.key {
            LimitKey::Route => None,
            // `::ffff:a.b.c.d` and `a.b.c.d` are one client.
            LimitKey::ClientIp => Some(BucketKey::Ip(client.to_canonical())),
            // Requests without the header share the route's own bucket.
            LimitKey::Header(name) => headers
                .get(name)
                .map(|value| BucketKey::Header(Bytes::copy_from_slice(value.as_bytes()))),
        };
        limiter.admit(key).map_err(|limited| Refused::RateLimited {
            retry_after: limited.retry_after,
        })?;
    }
    match &protection.in_flight {
        None => Ok(None),
        Some(cap) => cap.enter().map(Some).ok_or(Refused::Overloaded),
    }
}
