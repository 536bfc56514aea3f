//! How a route protects its upstreams (SPEC 7.4 to 7.6), as the file
//! states it and checked with line and column: `rate_limit`,
//! `max_in_flight`, `retry`, `balance` with `hash_on`, and `mirror`. The
//! state these settings keep (buckets, counts, budgets) is in
//! `crate::routes::limits`; what runs per request is in `crate::policy`.

use std::fmt;
use std::time::Duration;

use http::HeaderName;
use serde::de::{self, Deserializer};
use serde::Deserialize;
use url::Url;

use super::upstream::{check_upstream_url, UpstreamUrl};
use super::values::DurationValue;
use super::Checked;

/// A route without `max_keys` keeps at most this many keyed buckets
/// (SPEC 7.4): some 10 MB at the most, for a limit by client IP in front
/// of a busy service; past it, new keys share one overflow bucket.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// `retry.attempts` without a value: the first try and two more.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 3;

/// The most tries `retry.attempts` may ask for (SPEC 7.5).
pub const MAX_RETRY_ATTEMPTS: u32 = 5;

/// `retry.budget` without a value (SPEC 7.5), in percent of first tries.
pub const DEFAULT_RETRY_BUDGET_PERCENT: u32 = 20;

/// `rate_limit:` (SPEC 7.4), a token bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RateLimitSpec {
    /// Tokens added per `per`.
    pub tokens: u64,
    pub per: Duration,
    /// The bucket's size: how many requests may pass at once.
    pub burst: u64,
    pub key: LimitKey,
    pub max_keys: usize,
}

impl RateLimitSpec {
    /// Nanoseconds between two tokens.
    pub fn interval_ns(&self) -> u64 {
        let per = u64::try_from(self.per.as_nanos()).unwrap_or(u64::MAX);
        (per / self.tokens.max(1)).max(1)
    }
}

impl fmt::Display for RateLimitSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(
            f,
            "{}/{unit} burst {} by {}",
            self.tokens, self.burst, self.key
        )
    }
}

/// What one bucket of a rate limit is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// One bucket for the whole route.
    Route,
    ClientIp,
    /// The first value of this header; requests without it share one.
    Header(HeaderName),
}

impl fmt::Display for LimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitKey::Route => f.write_str("route"),
            LimitKey::ClientIp => f.write_str("client_ip"),
            LimitKey::Header(name) => write!(f, "header:{name}"),
        }
    }
}

/// `retry:` (SPEC 7.5).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RetrySpec {
    pub on: RetryOn,
    /// Tries in all, the first included.
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    /// Retries may be at most this share of first tries (plus a floor).
    pub budget_percent: u32,
}

/// What may be retried.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RetryOn {
    /// Status codes, each 500 to 599.
    pub statuses: Vec<u16>,
    /// Every 5xx status.
    pub any_5xx: bool,
    /// The upstream closed or reset before a complete response head.
    pub reset: bool,
    /// `per_try_timeout` passed without a response head.
    pub timeout: bool,
}

impl RetryOn {
    pub fn status(&self, code: u16) -> bool {
        (self.any_5xx && (500..600).contains(&code)) || self.statuses.contains(&code)
    }
}

impl fmt::Display for RetrySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut on: Vec<String> = self.on.statuses.iter().map(u16::to_string).collect();
        if self.on.any_5xx {
            on.push("5xx".to_owned());
        }
        if self.on.reset {
            on.push("reset".to_owned());
        }
        if self.on.timeout {
            on.push("timeout".to_owned());
        }
        write!(
            f,
            "on {} up to {} tries, budget {}%",
            on.join(","),
            self.attempts,
            self.budget_percent
        )
    }
}

/// `balance:` (SPEC 7.6).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastRequest,
    Hash(HashOn),
}

/// What `balance: hash` hashes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HashOn {
    ClientIp,
    Header(HeaderName),
    Cookie(String),
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Balance::RoundRobin => f.write_str("round_robin"),
            Balance::LeastRequest => f.write_str("least_request"),
            Balance::Hash(HashOn::ClientIp) => f.write_str("hash on client_ip"),
            Balance::Hash(HashOn::Header(name)) => write!(f, "hash on header:{name}"),
            Balance::Hash(HashOn::Cookie(name)) => write!(f, "hash on cookie:{name}"),
        }
    }
}

/// `mirror:` (SPEC 7.6).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MirrorSpec {
    pub to: Url,
    /// Of the route's requests, how many in a hundred are copied.
    pub percent: u32,
}

/// `rate: N/s`, `N/m` or `N/h`.
struct Rate(u64, Duration);

fn rate(text: &str) -> Result<Rate, String> {
    let bad = || format!("rate `{text}` is not N/s, N/m or N/h with N a whole number from 1");
    let (count, unit) = text.trim().split_once('/').ok_or_else(bad)?;
    let count: u64 = count.trim().parse().map_err(|_| bad())?;
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    if count == 0 {
        return Err(format!(
            "rate `{text}` lets nothing through; leave the limit out instead"
        ));
    }
    Ok(Rate(count, per))
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::DeserializeSeed::deserialize(Checked("a rate such as 100/s", rate), d)
    }
}

fn limit_key(text: &str) -> Result<LimitKey, String> {
    match text {
        "route" => Ok(LimitKey::Route),
        "client_ip" => Ok(LimitKey::ClientIp),
        _ => match text.strip_prefix("header:") {
            Some(name) => HeaderName::try_from(name)
                .map(LimitKey::Header)
                .map_err(|_| format!("`{name}` is not a valid header name")),
            None => Err(format!(
                "key `{text}` is not `route`, `client_ip` or `header:NAME`"
            )),
        },
    }
}

impl<'de> Deserialize<'de> for LimitKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::DeserializeSeed::deserialize(Checked("route, client_ip or header:NAME", limit_key), d)
    }
}

/// A whole number from `min` to `max`, named `what` in its error.
fn bounded<'de, D: Deserializer<'de>>(
    d: D,
    what: &str,
    min: u64,
    max: u64,
) -> Result<u64, D::Error> {
    let value = u64::deserialize(d)
        .map_err(|_| de::Error::custom(format!("{what} is a whole number from {min} to {max}")))?;
    if !(min..=max).contains(&value) {
        return Err(de::Error::custom(format!(
            "{what} {value} is not from {min} to {max}"
        )));
    }
    Ok(value)
}

struct Burst(u64);

impl<'de> Deserialize<'de> for Burst {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        bounded(d, "a burst", 1, u64::from(u32::MAX)).map(Burst)
    }
}

struct MaxKeys(usize);

impl<'de> Deserialize<'de> for MaxKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        bounded(d, "max_keys", 1, 10_000_000).map(|n| MaxKeys(n as usize))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    rate: Rate,
    #[serde(default)]
    burst: Option<Burst>,
    #[serde(default)]
    key: Option<LimitKey>,
    #[serde(default)]
    max_keys: Option<MaxKeys>,
}

impl<'de> Deserialize<'de> for RateLimitSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawRateLimit::deserialize(d)?;
        let Rate(tokens, per) = raw.rate;
        // The default burst: the rate per second, rounded up, at least 1.
        let per_second = (tokens * 1_000_000_000).div_ceil(per.as_nanos().max(1) as u64);
        Ok(RateLimitSpec {
            tokens,
            per,
            burst: raw.burst.map_or(per_second.max(1), |b| b.0),
            key: raw.key.unwrap_or(LimitKey::Route),
            max_keys: raw.max_keys.map_or(DEFAULT_MAX_KEYS, |m| m.0),
        })
    }
}

/// `max_in_flight: N`, N from 1.
pub(super) struct MaxInFlight(pub(super) u32);

impl<'de> Deserialize<'de> for MaxInFlight {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        bounded(d, "max_in_flight", 1, u64::from(u32::MAX)).map(|n| MaxInFlight(n as u32))
    }
}

/// One entry of `retry.on`: a status (`503`), `5xx`, `reset` or `timeout`.
enum RetryCause {
    Status(u16),
    Any5xx,
    Reset,
    Timeout,
}

impl<'de> Deserialize<'de> for RetryCause {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct CauseVisitor;
        impl de::Visitor<'_> for CauseVisitor {
            type Value = RetryCause;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a 5xx status code, `5xx`, `reset` or `timeout`")
            }
            fn visit_u64<E: de::Error>(self, code: u64) -> Result<RetryCause, E> {
                match u16::try_from(code) {
                    Ok(code @ 500..=599) => Ok(RetryCause::Status(code)),
                    _ => Err(E::custom(format!(
                        "status {code} is not retried: only a 5xx answer may be"
                    ))),
                }
            }
            fn visit_i64<E: de::Error>(self, code: i64) -> Result<RetryCause, E> {
                self.visit_u64(u64::try_from(code).unwrap_or(0))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<RetryCause, E> {
                match text {
                    "5xx" => Ok(RetryCause::Any5xx),
                    "reset" => Ok(RetryCause::Reset),
                    "timeout" => Ok(RetryCause::Timeout),
                    other => match other.parse::<u64>() {
                        Ok(code) => self.visit_u64(code),
                        Err(_) => Err(E::custom(format!(
                            "`{other}` is not a 5xx status, `5xx`, `reset` or `timeout`"
                        ))),
                    },
                }
            }
        }
        d.deserialize_any(CauseVisitor)
    }
}

/// A share in percent: `20%` (or `20`), 0 to 100.
struct Percent(u32);

fn percent(text: &str) -> Result<Percent, String> {
    let number = text.trim().strip_suffix('%').unwrap_or(text.trim());
    match number.trim().parse::<u32>() {
        Ok(p) if p <= 100 => Ok(Percent(p)),
        _ => Err(format!("`{text}` is not a share from 0% to 100%")),
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PercentVisitor;
        impl de::Visitor<'_> for PercentVisitor {
            type Value = Percent;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a share such as 20%")
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Percent, E> {
                percent(&value.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Percent, E> {
                percent(&value.to_string()).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Percent, E> {
                percent(text).map_err(E::custom)
            }
        }
        d.deserialize_any(PercentVisitor)
    }
}

struct Attempts(u32);

impl<'de> Deserialize<'de> for Attempts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        bounded(d, "attempts", 1, u64::from(MAX_RETRY_ATTEMPTS)).map(|n| Attempts(n as u32))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    on: Vec<RetryCause>,
    #[serde(default)]
    attempts: Option<Attempts>,
    #[serde(default)]
    per_try_timeout: Option<DurationValue>,
    #[serde(default)]
    budget: Option<Percent>,
}

impl<'de> Deserialize<'de> for RetrySpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawRetry::deserialize(d)?;
        if raw.on.is_empty() {
            return Err(de::Error::custom(
                "`retry`: `on` is empty, so nothing would be retried; list what may be",
            ));
        }
        let mut on = RetryOn::default();
        for cause in raw.on {
            match cause {
                RetryCause::Status(code) => {
                    if !on.statuses.contains(&code) {
                        on.statuses.push(code);
                    }
                }
                RetryCause::Any5xx => on.any_5xx = true,
                RetryCause::Reset => on.reset = true,
                RetryCause::Timeout => on.timeout = true,
            }
        }
        on.statuses.sort_unstable();
        if on.timeout && raw.per_try_timeout.is_none() {
            return Err(de::Error::custom(
                "`retry`: `timeout` needs a `per_try_timeout` (the route's own timeout ends the request)",
            ));
        }
        Ok(RetrySpec {
            on,
            attempts: raw.attempts.map_or(DEFAULT_RETRY_ATTEMPTS, |a| a.0),
            per_try_timeout: raw.per_try_timeout.map(|d| d.0),
            budget_percent: raw.budget.map_or(DEFAULT_RETRY_BUDGET_PERCENT, |p| p.0),
        })
    }
}

/// `balance:` as written.
pub(super) enum BalanceName {
    RoundRobin,
    LeastRequest,
    Hash,
}

impl<'de> Deserialize<'de> for BalanceName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::DeserializeSeed::deserialize(
            Checked(
                "round_robin, least_request or hash",
                |text: &str| match text {
                    "round_robin" => Ok(BalanceName::RoundRobin),
                    "least_request" => Ok(BalanceName::LeastRequest),
                    "hash" => Ok(BalanceName::Hash),
                    other => Err(format!(
                        "balance `{other}` is not round_robin, least_request or hash"
                    )),
                },
            ),
            d,
        )
    }
}

impl<'de> Deserialize<'de> for HashOn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::DeserializeSeed::deserialize(
            Checked("client_ip, header:NAME or cookie:NAME", |text: &str| {
                if text == "client_ip" {
                    return Ok(HashOn::ClientIp);
                }
                if let Some(name) = text.strip_prefix("header:") {
                    return HeaderName::try_from(name)
                        .map(HashOn::Header)
                        .map_err(|_| format!("`{name}` is not a valid header name"));
                }
                match text.strip_prefix("cookie:") {
                    Some(name) if !name.is_empty() => Ok(HashOn::Cookie(name.to_owned())),
                    _ => Err(format!(
                        "hash_on `{text}` is not client_ip, header:NAME or cookie:NAME"
                    )),
                }
            }),
            d,
        )
    }
}

/// The URL a mirror copies to: an upstream URL.
struct MirrorUrl(Url);

impl<'de> Deserialize<'de> for MirrorUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::DeserializeSeed::deserialize(
            Checked("an http://, https:// or h2c:// URL", |text: &str| {
                check_upstream_url(text).map(|UpstreamUrl(url)| MirrorUrl(url))
            }),
            d,
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMirror {
    to: MirrorUrl,
    #[serde(default)]
    percent: Option<Percent>,
}

impl<'de> Deserialize<'de> for MirrorSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawMirror::deserialize(d)?;
        Ok(MirrorSpec {
            to: raw.to.0,
            percent: raw.percent.map_or(100, |p| p.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_per_second_minute_and_hour() {
        for (text, tokens, secs) in [("100/s", 100, 1), ("5/m", 5, 60), (" 7 / h ", 7, 3600)] {
            let Rate(count, per) = rate(text).expect("a valid rate");
            assert_eq!((count, per.as_secs()), (tokens, secs), "{text}");
        }
        for bad in ["100", "0/s", "1/d", "x/s", "-1/s", "1.5/s"] {
            assert!(rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_interval_between_tokens_follows_the_rate() {
        let spec = RateLimitSpec {
            tokens: 50,
            per: Duration::from_secs(1),
            burst: 10,
            key: LimitKey::Route,
            max_keys: 1,
        };
        assert_eq!(spec.interval_ns(), 20_000_000);
    }

    #[test]
    fn percents_take_a_sign_or_not() {
        assert_eq!(percent("20%").map(|p| p.0), Ok(20));
        assert_eq!(percent("0").map(|p| p.0), Ok(0));
        assert!(percent("101%").is_err());
        assert!(percent("-5%").is_err());
    }
}
