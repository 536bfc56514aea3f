//! The file's `rollout:` section (SPEC 10.2): how an edit of the route file
//! is tried on a slice of live traffic before it serves everyone, checked
//! with line and column like every other value. The live table's section
//! judges a change, never the changed file's own (`crate::candidate`).

use std::fmt;
use std::time::Duration;

use http::HeaderName;
use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::values::DurationValue;
use super::Checked;

/// Which requests the canary's slice is cut by: one key always lands on
/// the same table while a canary runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SliceKey {
    ClientIp,
    Header(HeaderName),
}

impl fmt::Display for SliceKey {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            SliceKey::ClientIp => f.write_str("client_ip"),
            SliceKey::Header(name) => write!(f, "header:{name}"),
        }
    }
}

/// `rollout:`, with every value present (the defaults filled in).
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutSpec {
    /// Share of keys routed by the candidate, 1 to 100.
    pub percent: u32,
    /// How long the candidate serves its slice before it may be promoted.
    pub duration: Duration,
    pub key: SliceKey,
    /// Answers the candidate must have given before it is judged at all.
    pub min_requests: u64,
    /// How much higher the candidate's 5xx share may be, as a fraction
    /// (`1%` is 0.01) added to the live table's share.
    pub max_error_increase: f64,
    /// How much higher its p99 may be, as a fraction of the live table's.
    pub max_latency_increase: f64,
}

impl Default for RolloutSpec {
    /// What `POST /candidate?mode=canary` uses when the live file has no
    /// `rollout:`: a tenth of the clients for two minutes.
    fn default() -> Self {
        RolloutSpec {
            percent: 10,
            duration: Duration::from_secs(120),
            key: SliceKey::ClientIp,
            min_requests: 100,
            max_error_increase: 0.01,
            max_latency_increase: 0.5,
        }
    }
}

impl fmt::Display for RolloutSpec {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{}% by {} for {}, at least {} requests, 5xx share +{}%, p99 +{}%",
            self.percent,
            self.key,
            humantime::format_duration(self.duration),
            self.min_requests,
            self.max_error_increase * 100.0,
            self.max_latency_increase * 100.0
        )
    }
}

fn slice_key(text: &str) -> Result<SliceKey, String> {
    match text {
        "client_ip" => Ok(SliceKey::ClientIp),
        _ => match text.strip_prefix("header:") {
            Some(name) => HeaderName::try_from(name)
                .map(SliceKey::Header)
                .map_err(|_| format!("`{name}` is not a valid header name")),
            None => Err(format!("key `{text}` is not `client_ip` or `header:NAME`")),
        },
    }
}

impl<'de> Deserialize<'de> for SliceKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::DeserializeSeed::deserialize(Checked("client_ip or header:NAME", slice_key), d)
    }
}

/// A share written `1%`, `0.5%` or `50` (percent), from 0 up to `max`
/// percent, as a fraction.
struct Share<const MAX: u32>(f64);

fn share(text: &str, max: u32) -> Result<f64, String> {
    let number = text.trim().strip_suffix('%').unwrap_or(text.trim()).trim();
    match number.parse::<f64>() {
        Ok(p) if p.is_finite() && (0.0..=f64::from(max)).contains(&p) => Ok(p / 100.0),
        _ => Err(format!("`{text}` is not a share from 0% to {max}%")),
    }
}

impl<'de, const MAX: u32> Deserialize<'de> for Share<MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ShareVisitor<const MAX: u32>;
        impl<const MAX: u32> de::Visitor<'_> for ShareVisitor<MAX> {
            type Value = Share<MAX>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a share such as 1%")
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Share<MAX>, E> {
                share(&value.to_string(), MAX).map(Share).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Share<MAX>, E> {
                share(&value.to_string(), MAX).map(Share).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<Share<MAX>, E> {
                share(&value.to_string(), MAX).map(Share).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Share<MAX>, E> {
                share(text, MAX).map(Share).map_err(E::custom)
            }
        }
        d.deserialize_any(ShareVisitor::<MAX>)
    }
}

/// The canary's slice: a whole percent from 1 to 100 (0 would never judge).
struct SlicePercent(u32);

impl<'de> Deserialize<'de> for SlicePercent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let share = Share::<100>::deserialize(d)?.0 * 100.0;
        if share < 1.0 || share.fract() != 0.0 {
            return Err(de::Error::custom(
                "percent is a whole share from 1% to 100% of the keys",
            ));
        }
        Ok(SlicePercent(share as u32))
    }
}

struct MinRequests(u64);

impl<'de> Deserialize<'de> for MinRequests {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = u64::deserialize(d)
            .map_err(|_| de::Error::custom("min_requests is a whole number from 1 to 10000000"))?;
        if !(1..=10_000_000).contains(&value) {
            return Err(de::Error::custom(format!(
                "min_requests {value} is not from 1 to 10000000"
            )));
        }
        Ok(MinRequests(value))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRollout {
    #[serde(default)]
    percent: Option<SlicePercent>,
    #[serde(default, rename = "for")]
    duration: Option<DurationValue>,
    #[serde(default)]
    key: Option<SliceKey>,
    #[serde(default)]
    min_requests: Option<MinRequests>,
    #[serde(default)]
    max_error_increase: Option<Share<100>>,
    /// A slower table may be up to ten times as slow (1000%) before it is
    /// refused outright by the file.
    #[serde(default)]
    max_latency_increase: Option<Share<1000>>,
}

impl<'de> Deserialize<'de> for RolloutSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawRollout::deserialize(d)?;
        let default = RolloutSpec::default();
        Ok(RolloutSpec {
            percent: raw.percent.map_or(default.percent, |p| p.0),
            duration: raw.duration.map_or(default.duration, |d| d.0),
            key: raw.key.unwrap_or(default.key),
            min_requests: raw.min_requests.map_or(default.min_requests, |m| m.0),
            max_error_increase: raw
                .max_error_increase
                .map_or(default.max_error_increase, |s| s.0),
            max_latency_increase: raw
                .max_latency_increase
                .map_or(default.max_latency_increase, |s| s.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RolloutSpec, String> {
        serde_yaml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_spec_example_reads_as_written() {
        let spec = parse(
            "{ percent: 10, for: 2m, key: client_ip, min_requests: 100, \
             max_error_increase: 1%, max_latency_increase: 50% }",
        )
        .expect("valid");
        assert_eq!(spec, RolloutSpec::default());
    }

    #[test]
    fn missing_values_take_the_defaults_and_a_header_key_is_read() {
        let spec = parse("{ percent: 50, key: 'header:x-user' }").expect("valid");
        assert_eq!(spec.percent, 50);
        assert_eq!(
            spec.key,
            SliceKey::Header(HeaderName::from_static("x-user"))
        );
        assert_eq!(spec.min_requests, 100);
        let spec = parse("{ max_error_increase: 0.5% }").expect("valid");
        assert!((spec.max_error_increase - 0.005).abs() < 1e-12);
    }

    #[test]
    fn wrong_values_are_refused_with_their_reason() {
        for (text, wanted) in [
            ("{ percent: 0 }", "from 1% to 100%"),
            ("{ percent: 150 }", "from 0% to 100%"),
            ("{ for: 0s }", "more than zero"),
            ("{ key: route }", "is not `client_ip` or `header:NAME`"),
            ("{ min_requests: 0 }", "not from 1"),
            ("{ max_error_increase: lots }", "is not a share"),
            ("{ percentage: 10 }", "unknown field"),
        ] {
            let error = parse(text).expect_err(text);
            assert!(error.contains(wanted), "{text}: {error}");
        }
    }
}
