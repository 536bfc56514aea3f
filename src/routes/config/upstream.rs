//! A route's upstreams as the file names them: URLs, weights, the list,
//! and active health checks.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use url::Url;

use super::values::DurationValue;
use super::{
    Checked, HealthSpec, UpstreamSpec, DEFAULT_HEALTHY_AFTER, DEFAULT_HEALTH_INTERVAL,
    DEFAULT_HEALTH_TIMEOUT, DEFAULT_UNHEALTHY_AFTER, MAX_WEIGHT,
};

#[derive(Debug, Clone)]
pub(super) struct UpstreamUrl(pub(super) Url);

checked_from_str!(
    UpstreamUrl,
    "an http:// or https:// URL",
    check_upstream_url
);

pub(super) fn check_upstream_url(text: &str) -> Result<UpstreamUrl, String> {
    let url = Url::parse(text).map_err(|e| format!("upstream `{text}`: {e}"))?;
    if !matches!(url.scheme(), "http" | "https" | "h2c") {
        return Err(format!(
            "upstream `{text}`: scheme `{}` is not http, https or h2c",
            url.scheme()
        ));
    }
    if url.host().is_none() {
        return Err(format!("upstream `{text}` has no host"));
    }
    if url.scheme() == "h2c" {
        // Requests go to its `http://` twin, which must exist: the same
        // host and port, read by the rules of a web URL.
        http_twin(&url).map_err(|e| format!("upstream `{text}`: {e}"))?;
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("upstream `{text}` has a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "upstream `{text}` carries credentials; set headers upstream instead"
        ));
    }
    Ok(UpstreamUrl(url))
}

/// The protocol an upstream URL's scheme asks for (SPEC 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum UpstreamProtocol {
    /// `http://`: HTTP/1.1.
    #[serde(rename = "http/1.1")]
    Http1,
    /// `h2c://`: cleartext HTTP/2 with prior knowledge.
    #[serde(rename = "h2c")]
    H2c,
    /// `https://`: `h2` or `http/1.1`, as the upstream picks by ALPN.
    #[serde(rename = "https")]
    Https,
}

impl UpstreamProtocol {
    pub fn of(url: &Url) -> Self {
        match url.scheme() {
            "h2c" => UpstreamProtocol::H2c,
            "https" => UpstreamProtocol::Https,
            _ => UpstreamProtocol::Http1,
        }
    }

    /// How `check`, `/routes` and the dashboard name it.
    pub fn label(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http/1.1",
            UpstreamProtocol::H2c => "h2c",
            UpstreamProtocol::Https => "https",
        }
    }
}

/// The `http://` URL with the host and port of an `h2c://` one: `h2c` is
/// not a scheme the URL standard knows, so its URLs are read as opaque,
/// and the requests, whose paths must follow the rules of `http`, are
/// built on this twin.
pub fn http_twin(url: &Url) -> Result<Url, url::ParseError> {
    let authority = &url[url::Position::BeforeHost..url::Position::AfterPort];
    Url::parse(&format!("http://{authority}/"))
}

/// Reads one `upstreams` entry (a URL, or `{ url, weight }`) and refuses
/// a URL already listed. Every check runs inside the visitor, so that
/// serde_yaml gives the error the entry's position and index.
pub(super) struct NewUpstream<'a>(&'a [UpstreamSpec]);

impl NewUpstream<'_> {
    fn check<E: de::Error>(&self, upstream: UpstreamSpec) -> Result<UpstreamSpec, E> {
        if self.0.iter().any(|u| u.url == upstream.url) {
            return Err(E::custom(format!(
                "upstream `{}` is listed twice; give it a weight instead",
                upstream.url
            )));
        }
        Ok(upstream)
    }
}

impl<'de> de::DeserializeSeed<'de> for NewUpstream<'_> {
    type Value = UpstreamSpec;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<UpstreamSpec, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NewUpstream<'_> {
    type Value = UpstreamSpec;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an upstream URL or `{ url, weight }`")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<UpstreamSpec, E> {
        let UpstreamUrl(url) = check_upstream_url(text).map_err(E::custom)?;
        self.check(UpstreamSpec { url, weight: 1 })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<UpstreamSpec, A::Error> {
        let raw = RawWeighted::deserialize(de::value::MapAccessDeserializer::new(map))?;
        self.check(UpstreamSpec {
            url: raw.url.0,
            weight: raw.weight.map_or(1, |w| w.0),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWeighted {
    url: UpstreamUrl,
    #[serde(default)]
    weight: Option<Weight>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Weight(pub(super) u32);

impl<'de> Deserialize<'de> for Weight {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = u64::deserialize(d).map_err(|_| {
            de::Error::custom(format!("a weight is a whole number from 1 to {MAX_WEIGHT}"))
        })?;
        u32::try_from(value)
            .ok()
            .filter(|w| (1..=MAX_WEIGHT).contains(w))
            .map(Weight)
            .ok_or_else(|| {
                de::Error::custom(format!("weight {value} is not from 1 to {MAX_WEIGHT}"))
            })
    }
}

#[derive(Debug, Clone)]
pub(super) struct UpstreamList(pub(super) Vec<UpstreamSpec>);

impl<'de> Deserialize<'de> for UpstreamList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct UpstreamListVisitor;
        impl<'de> Visitor<'de> for UpstreamListVisitor {
            type Value = UpstreamList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of upstream URLs")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<UpstreamList, A::Error> {
                let mut upstreams: Vec<UpstreamSpec> = Vec::new();
                while let Some(upstream) = seq.next_element_seed(NewUpstream(&upstreams))? {
                    upstreams.push(upstream);
                }
                if upstreams.is_empty() {
                    return Err(de::Error::custom(
                        "`upstreams` is empty; list at least one URL",
                    ));
                }
                Ok(UpstreamList(upstreams))
            }
        }
        d.deserialize_seq(UpstreamListVisitor)
    }
}

/// A count of consecutive check results (`healthy`, `unhealthy`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Threshold(pub(super) u32);

impl<'de> Deserialize<'de> for Threshold {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = u64::deserialize(d)
            .map_err(|_| de::Error::custom("a count of checks is a whole number from 1 to 100"))?;
        u32::try_from(value)
            .ok()
            .filter(|n| (1..=100).contains(n))
            .map(Threshold)
            .ok_or_else(|| de::Error::custom(format!("count {value} is not from 1 to 100")))
    }
}

/// The path a health check asks for: origin-form, no fragment.
#[derive(Debug, Clone)]
pub(super) struct CheckPath(pub(super) String);

checked_from_str!(CheckPath, "a path starting with `/`", |text| {
    if !text.starts_with('/') || text.contains('#') {
        return Err(format!(
            "health check path `{text}` must start with `/` and have no fragment"
        ));
    }
    if http::uri::PathAndQuery::try_from(text).is_err() {
        return Err(format!("health check path `{text}` is not a valid path"));
    }
    Ok(CheckPath(text.to_owned()))
});

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    path: CheckPath,
    #[serde(default)]
    interval: Option<DurationValue>,
    #[serde(default)]
    timeout: Option<DurationValue>,
    #[serde(default)]
    healthy: Option<Threshold>,
    #[serde(default)]
    unhealthy: Option<Threshold>,
}

impl RawHealth {
    pub(super) fn into_spec(self) -> HealthSpec {
        HealthSpec {
            path: self.path.0,
            interval: self.interval.map_or(DEFAULT_HEALTH_INTERVAL, |d| d.0),
            timeout: self.timeout.map_or(DEFAULT_HEALTH_TIMEOUT, |d| d.0),
            healthy: self.healthy.map_or(DEFAULT_HEALTHY_AFTER, |n| n.0),
            unhealthy: self.unhealthy.map_or(DEFAULT_UNHEALTHY_AFTER, |n| n.0),
        }
    }
}
