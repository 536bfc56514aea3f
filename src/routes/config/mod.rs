//! The route file as written: serde types that mirror `routes.yaml`, and the
//! checks that need a position in the file to be useful.
//!
//! Every value that can be wrong on its own (a prefix, a URL, a duration, a
//! status code, a header) is checked while it is deserialized, so the error
//! carries serde_yaml's line and column and the path of the field. Checks that
//! need the whole table (conflicting routes, the `tests:` section) live in
//! [`crate::routes::table`]. All use of serde_yaml stays in this folder:
//!
//! - this file: the checked types, the errors, [`parse`] and the route;
//! - `locate`: where each route and key stands in the file;
//! - `values`: prefixes, hosts, methods, durations, statuses, headers;
//! - `upstream`: upstream URLs, weights and health checks;
//! - `upstream_tls`: trust anchors and client certificates for upstreams;
//! - `conditions`: `headers`, `query`, `cookies` and `path_regex`;
//! - `policy`: `rewrite`, header edits and `redirect`;
//! - `protection`: rate limits, in-flight caps, retries, balancing, mirroring;
//! - `rollout`: the file's `rollout:` section, how an edit is tried first.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use url::Url;

pub use crate::pki::sha256_hex;

/// Implements `Deserialize` for a newtype from a string by a checking
/// function, so the error is raised while serde_yaml knows the position.
macro_rules! checked_from_str {
    ($ty:ty, $expecting:literal, $check:expr) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let check: fn(&str) -> Result<$ty, String> = $check;
                de::DeserializeSeed::deserialize(Checked($expecting, check), d)
            }
        }
    };
}

/// Reads a string and checks it inside the visitor: serde_yaml positions an
/// error by the event it is raised in, so checking here points the error at
/// the value itself (and names its field), where checking after
/// deserializing would point at the start of the enclosing mapping.
struct Checked<F>(&'static str, F);

impl<'de, T, F: FnOnce(&str) -> Result<T, String>> de::DeserializeSeed<'de> for Checked<F> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, T, F: FnOnce(&str) -> Result<T, String>> Visitor<'de> for Checked<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        (self.1)(text).map_err(E::custom)
    }
}

mod conditions;
mod locate;
mod policy;
mod protection;
mod rollout;
mod upstream;
mod upstream_tls;
mod values;

pub use conditions::{Conditions, Pattern, ValueMatch, REGEX_SIZE_LIMIT};
use conditions::{HeaderConditions, NameConditions, WholePattern};
use locate::{
    is_empty_document, key_positions, route_blocks, with_stand_in, yaml_message, STAND_IN,
};
pub use policy::{
    HeaderEdits, Piece, Placeholder, RedirectSpec, RewriteSpec, Template, DEFAULT_REDIRECT_STATUS,
};
pub use protection::{
    Balance, HashOn, LimitKey, MirrorSpec, RateLimitSpec, RetryOn, RetrySpec, DEFAULT_MAX_KEYS,
    MAX_RETRY_ATTEMPTS,
};
use protection::{BalanceName, MaxInFlight};
pub use rollout::{RolloutSpec, SliceKey};
pub use upstream::{http_twin, UpstreamProtocol};
use upstream::{RawHealth, UpstreamList, UpstreamUrl};
pub use upstream_tls::UpstreamTlsSpec;
use values::{DurationValue, Prefix, RawRespond};
pub use values::{HeaderList, MethodName};

/// A route without `timeout` waits this long for response headers; long
/// enough for slow APIs, short enough that a hung upstream frees the client.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Active health check defaults (SPEC 2): a check every 5 s that must answer
/// within 1 s; 2 good answers in a row bring an upstream in, 3 bad ones take
/// it out.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_HEALTHY_AFTER: u32 = 2;
pub const DEFAULT_UNHEALTHY_AFTER: u32 = 3;

/// An upstream's weight: its share of the route's traffic (SPEC 2).
pub const MAX_WEIGHT: u32 = 100;

/// Why a route file was rejected. The message always names the route (or the
/// test) and, where the parser knows it, the line and column.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the file has no YAML document (an empty table must be written `routes: {{}}`)")]
    Empty,
    #[error("{0}")]
    Yaml(String),
    #[error("`routes` is missing or empty (an empty table must be written `routes: {{}}`)")]
    NoRoutes,
    #[error("routes.{name}: {message}{}", at_position(*at))]
    Route {
        name: String,
        message: String,
        at: Option<(usize, usize)>,
    },
    #[error("routes.{second}: same host, prefix, conditions and methods as route `{first}`{}", at_line(*line))]
    Conflict {
        first: String,
        second: String,
        line: Option<usize>,
    },
    #[error("tests[{index}]: {request} matched {actual}, expected {expected}{}", at_line(*line))]
    TestFailed {
        index: usize,
        request: String,
        expected: String,
        actual: String,
        line: Option<usize>,
    },
    #[error("tests[{index}]: {reason}{}", at_line(*line))]
    BadTest {
        index: usize,
        reason: String,
        line: Option<usize>,
    },
    /// Several errors in one file, each on a line of its own.
    #[error("{} errors:\n{}", .0.len(), join_lines(.0))]
    Many(Vec<ConfigError>),
}

fn join_lines(errors: &[ConfigError]) -> String {
    let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
    lines.join("\n")
}

impl ConfigError {
    /// One error as it is, several as [`ConfigError::Many`].
    fn all(mut errors: Vec<ConfigError>) -> Self {
        if errors.len() == 1 {
            errors.remove(0)
        } else {
            ConfigError::Many(errors)
        }
    }
}

fn at_position(at: Option<(usize, usize)>) -> String {
    at.map(|(l, c)| format!(" at line {l} column {c}"))
        .unwrap_or_default()
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(" at line {l}")).unwrap_or_default()
}

/// The bytes of a route file and their digest, read once so that the digest
/// always describes exactly what was parsed.
#[derive(Debug, Clone)]
pub struct Source {
    pub text: String,
    pub sha256: String,
}

impl Source {
    pub fn new(text: String) -> Self {
        let sha256 = sha256_hex(text.as_bytes());
        Source { text, sha256 }
    }

    /// Reads the file through any symlinks (a Kubernetes ConfigMap mount is a
    /// chain of them), so the path always names the current version.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        std::fs::read_to_string(path)
            .map(Source::new)
            .map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })
    }
}

/// A parsed route file: every route checked on its own, in file order.
#[derive(Debug, Clone)]
pub struct Config {
    pub routes: Vec<RouteSpec>,
    pub tests: Vec<RouteTest>,
    /// How the next edit of this file is tried before it serves everyone.
    pub rollout: Option<RolloutSpec>,
}

/// One route as the file states it, with each value already valid.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    pub name: String,
    /// The line of the route's key, for errors that span routes.
    pub line: SourceLine,
    /// Canonical form: "/" or "/a/b", never a trailing slash.
    pub prefix: String,
    pub host: Option<HostPattern>,
    /// `headers`, `query`, `cookies`, `path_regex` (SPEC 7.1).
    pub conditions: Conditions,
    /// Sorted and deduplicated.
    pub methods: Option<Vec<Method>>,
    pub target: TargetSpec,
    pub strip_prefix: bool,
    pub rewrite: Option<RewriteSpec>,
    pub request_headers: HeaderEdits,
    /// Applied to every answer of the route, the router's own included.
    pub response_headers: HeaderEdits,
    pub rate_limit: Option<RateLimitSpec>,
    pub max_in_flight: Option<u32>,
    pub retry: Option<RetrySpec>,
    pub balance: Balance,
    pub mirror: Option<MirrorSpec>,
    pub timeout: Duration,
    /// Active checks of this route's upstreams, if the file asks for them.
    pub health: Option<HealthSpec>,
    /// How its `https://` upstreams are spoken to, where not by default.
    pub upstream_tls: Option<UpstreamTlsSpec>,
}

/// One upstream of a route and its weight in the route's round robin.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSpec {
    pub url: Url,
    pub weight: u32,
}

impl UpstreamSpec {
    pub fn protocol(&self) -> UpstreamProtocol {
        UpstreamProtocol::of(&self.url)
    }
}

/// Active health checks (SPEC 2, `health:`): `GET path` on the upstream's
/// origin every `interval`; `healthy` good answers in a row bring it in,
/// `unhealthy` bad ones take it out.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthSpec {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy: u32,
    pub unhealthy: u32,
}

/// Where a route stands in its file. It compares equal to any other
/// position, so moving a route in the file does not count as changing it.
#[derive(Debug, Clone, Copy)]
pub struct SourceLine(pub Option<usize>);

impl PartialEq for SourceLine {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl RouteSpec {
    /// One line: name, what it matches, where it sends (`check` prints it).
    pub fn summary(&self) -> String {
        let mut text = format!("{}: ", self.name);
        if let Some(host) = &self.host {
            text.push_str(&format!("host {host} "));
        }
        text.push_str(&format!("prefix {}", self.prefix));
        for condition in self.conditions.describe() {
            text.push(' ');
            text.push_str(&condition);
        }
        if let Some(methods) = &self.methods {
            let names: Vec<&str> = methods.iter().map(Method::as_str).collect();
            text.push_str(&format!(" methods {}", names.join(",")));
        }
        match &self.target {
            TargetSpec::Upstreams(upstreams) => {
                let urls: Vec<String> = upstreams
                    .iter()
                    .map(|u| {
                        let protocol = u.protocol().label();
                        match u.weight {
                            1 => format!("{} [{protocol}]", u.url),
                            weight => format!("{} [{protocol}] (weight {weight})", u.url),
                        }
                    })
                    .collect();
                text.push_str(&format!(" -> {}", urls.join(", ")));
                if self.strip_prefix {
                    text.push_str(" (strip prefix)");
                }
                if let Some(rewrite) = &self.rewrite {
                    text.push_str(&format!(" (rewrite {rewrite})"));
                }
                if let Some(tls) = &self.upstream_tls {
                    text.push_str(&format!(" (upstream TLS: {tls})"));
                }
            }
            TargetSpec::Respond(respond) => {
                text.push_str(&format!(" -> respond {}", respond.status.as_u16()));
            }
            TargetSpec::Redirect(redirect) => {
                text.push_str(&format!(
                    " -> redirect {} {}",
                    redirect.status.as_u16(),
                    redirect.to.source()
                ));
            }
        }
        if let Some(limit) = &self.rate_limit {
            text.push_str(&format!(" (rate limit {limit})"));
        }
        if let Some(max) = self.max_in_flight {
            text.push_str(&format!(" (at most {max} in flight)"));
        }
        if let Some(retry) = &self.retry {
            text.push_str(&format!(" (retry {retry})"));
        }
        if self.balance != Balance::RoundRobin {
            text.push_str(&format!(" (balance {})", self.balance));
        }
        if let Some(mirror) = &self.mirror {
            text.push_str(&format!(" (mirror {}% to {})", mirror.percent, mirror.to));
        }
        let edits = [
            ("request headers", &self.request_headers),
            ("response headers", &self.response_headers),
        ];
        for (what, edit) in edits {
            if !edit.is_empty() {
                text.push_str(&format!(
                    " ({what}: {} removed, {} set, {} added)",
                    edit.remove.len(),
                    edit.set.len(),
                    edit.add.len()
                ));
            }
        }
        text
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com` is stored as `.example.com`.
    Wildcard(String),
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(host) => f.write_str(host),
            HostPattern::Wildcard(suffix) => write!(f, "*{suffix}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum TargetSpec {
    Upstreams(Vec<UpstreamSpec>),
    Respond(RespondSpec),
    Redirect(RedirectSpec),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RespondSpec {
    pub status: StatusCode,
    pub body: Bytes,
    pub headers: HeaderMap,
}

/// One entry of the `tests:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTest {
    #[serde(default)]
    pub host: Option<String>,
    pub path: String,
    #[serde(default)]
    pub method: Option<MethodName>,
    #[serde(default)]
    pub headers: HeaderList,
    /// The query string, as `a=1&b=2`.
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub cookies: std::collections::BTreeMap<String, String>,
    /// `null` states that no route may match; the key itself is required so
    /// that a forgotten `route:` is not read as "expect a 404".
    #[serde(deserialize_with = "nullable")]
    pub route: Option<String>,
}

fn nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
}

/// Parses and checks a route file's text, reporting every route's errors
/// (SPEC 1), not only the first.
///
/// serde stops at the first error in a document, so a file whose YAML is
/// sound but whose routes are not is read again with each broken route's
/// lines blanked out and a harmless stand-in put in its place, which keeps
/// every other line where it was and so every later error's position
/// exact. A syntax error, or one outside `routes:`, still ends the search:
/// past it, nothing can be told for sure.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    let blocks = route_blocks(text);
    // Each error with the line it points at, to report them in file order
    // whichever pass found them.
    let mut errors: Vec<(Option<usize>, ConfigError)> = Vec::new();
    let mut current = text.to_owned();
    let mut stand_ins = HashSet::new();
    let file = loop {
        match serde_yaml::from_str::<RawFile>(&current) {
            Ok(file) => break Some(file),
            Err(error) => {
                if is_empty_document(text) {
                    return Err(ConfigError::Empty);
                }
                let message = yaml_message(&error, &current);
                let in_a_route = message.starts_with("routes.");
                let line = error.location().map(|l| l.line());
                let block = line
                    .and_then(|line| blocks.iter().position(|b| b.lines.contains(&line)))
                    .filter(|index| in_a_route && !stand_ins.contains(index));
                errors.push((line, ConfigError::Yaml(message)));
                let Some(index) = block else {
                    break None;
                };
                stand_ins.insert(index);
                current = with_stand_in(&current, &blocks[index], index);
            }
        }
    };
    let Some(file) = file else {
        return Err(ConfigError::all(
            errors.into_iter().map(|(_, e)| e).collect(),
        ));
    };
    let Some(route_map) = file.routes else {
        return Err(if is_empty_document(text) {
            ConfigError::Empty
        } else {
            ConfigError::NoRoutes
        });
    };
    let positions = key_positions(&blocks);
    let mut routes = Vec::with_capacity(route_map.0.len());
    for (name, raw) in route_map.0 {
        if name.starts_with(STAND_IN) {
            continue;
        }
        let at = positions.get(name.as_str()).copied();
        match raw.into_spec(name, at) {
            Ok(route) => routes.push(route),
            Err(error) => errors.push((at.map(|(line, _)| line), error)),
        }
    }
    if !errors.is_empty() {
        // The sort is stable, and an error without a line goes last.
        errors.sort_by_key(|(line, _)| line.unwrap_or(usize::MAX));
        return Err(ConfigError::all(
            errors.into_iter().map(|(_, e)| e).collect(),
        ));
    }
    Ok(Config {
        routes,
        tests: file.tests,
        rollout: file.rollout,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    /// `None` for a missing key and for `routes:` with nothing under it
    /// (every route commented out): both are refused, since an empty table
    /// must be asked for explicitly.
    #[serde(default)]
    routes: Option<RouteMap>,
    #[serde(default)]
    tests: Vec<RouteTest>,
    #[serde(default)]
    rollout: Option<RolloutSpec>,
}

/// The `routes:` mapping in file order. A plain `HashMap` would let a
/// duplicated route name silently replace the first one.
struct RouteMap(Vec<(String, RawRoute)>);

impl<'de> Deserialize<'de> for RouteMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RouteMapVisitor;
        impl<'de> Visitor<'de> for RouteMapVisitor {
            type Value = RouteMap;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of route names to routes")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RouteMap, A::Error> {
                let mut seen = HashSet::new();
                let mut routes = Vec::new();
                loop {
                    let check_name = |name: &str| {
                        let valid =
                            |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
                        if name.is_empty() || !name.chars().all(valid) {
                            return Err(format!(
                                "route name `{name}` may only use A-Z a-z 0-9 _ . -"
                            ));
                        }
                        if seen.contains(name) {
                            return Err(format!("duplicate route name `{name}`"));
                        }
                        Ok(name.to_owned())
                    };
                    let Some(name) = map.next_key_seed(Checked("a route name", check_name))? else {
                        break;
                    };
                    seen.insert(name.clone());
                    let route = map.next_value::<RawRoute>()?;
                    routes.push((name, route));
                }
                Ok(RouteMap(routes))
            }
        }
        d.deserialize_map(RouteMapVisitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(default)]
    prefix: Option<Prefix>,
    #[serde(default)]
    host: Option<HostPattern>,
    #[serde(default)]
    headers: HeaderConditions,
    #[serde(default)]
    query: NameConditions,
    #[serde(default)]
    cookies: NameConditions,
    #[serde(default)]
    path_regex: Option<WholePattern>,
    #[serde(default)]
    methods: Option<Vec<MethodName>>,
    #[serde(default)]
    upstream: Option<UpstreamUrl>,
    #[serde(default)]
    upstreams: Option<UpstreamList>,
    #[serde(default)]
    respond: Option<RawRespond>,
    #[serde(default)]
    redirect: Option<RedirectSpec>,
    #[serde(default)]
    rewrite: Option<RewriteSpec>,
    #[serde(default)]
    request_headers: Option<HeaderEdits>,
    #[serde(default)]
    response_headers: Option<HeaderEdits>,
    #[serde(default)]
    rate_limit: Option<RateLimitSpec>,
    #[serde(default)]
    max_in_flight: Option<MaxInFlight>,
    #[serde(default)]
    retry: Option<RetrySpec>,
    #[serde(default)]
    balance: Option<BalanceName>,
    #[serde(default)]
    hash_on: Option<HashOn>,
    #[serde(default)]
    mirror: Option<MirrorSpec>,
    #[serde(default)]
    strip_prefix: Option<bool>,
    #[serde(default)]
    timeout: Option<DurationValue>,
    #[serde(default)]
    health: Option<RawHealth>,
    #[serde(default)]
    upstream_tls: Option<UpstreamTlsSpec>,
}

impl RawRoute {
    /// Checks the rules that involve several fields and builds the spec.
    /// serde has already checked each field on its own.
    fn into_spec(self, name: String, at: Option<(usize, usize)>) -> Result<RouteSpec, ConfigError> {
        let fail = |message: &str| ConfigError::Route {
            name: name.clone(),
            message: message.to_owned(),
            at,
        };
        let target =
            match (self.upstream, self.upstreams, self.respond, self.redirect) {
                (Some(url), None, None, None) => TargetSpec::Upstreams(vec![UpstreamSpec {
                    url: url.0,
                    weight: 1,
                }]),
                (None, Some(list), None, None) => TargetSpec::Upstreams(list.0),
                (None, None, Some(respond), None) => TargetSpec::Respond(respond.into_spec()),
                (None, None, None, Some(redirect)) => TargetSpec::Redirect(redirect),
                (None, None, None, None) => {
                    return Err(fail(
                        "a route needs one of `upstream`, `upstreams`, `respond` or `redirect`",
                    ))
                }
                _ => return Err(fail(
                    "a route takes only one of `upstream`, `upstreams`, `respond` or `redirect`",
                )),
            };
        let kind = match &target {
            TargetSpec::Upstreams(_) => None,
            TargetSpec::Respond(_) => Some("respond"),
            TargetSpec::Redirect(_) => Some("redirect"),
        };
        if let Some(kind) = kind {
            let only_upstream = [
                ("strip_prefix", self.strip_prefix.is_some()),
                ("timeout", self.timeout.is_some()),
                ("health", self.health.is_some()),
                ("upstream_tls", self.upstream_tls.is_some()),
                ("rewrite", self.rewrite.is_some()),
                ("request_headers", self.request_headers.is_some()),
                ("retry", self.retry.is_some()),
                ("balance", self.balance.is_some()),
                ("hash_on", self.hash_on.is_some()),
                ("mirror", self.mirror.is_some()),
            ];
            if let Some((field, _)) = only_upstream.iter().find(|(_, given)| *given) {
                return Err(fail(&format!(
                    "`{field}` applies only to upstream routes, not `{kind}`"
                )));
            }
        }
        if self.rewrite.is_some() && self.strip_prefix == Some(true) {
            return Err(fail(
                "`rewrite` and `strip_prefix` cannot both be given; a `rewrite: { prefix: / }` strips the prefix",
            ));
        }
        let speaks_tls = match &target {
            TargetSpec::Upstreams(upstreams) => upstreams
                .iter()
                .any(|u| u.protocol() == UpstreamProtocol::Https),
            TargetSpec::Respond(_) | TargetSpec::Redirect(_) => false,
        };
        if self.upstream_tls.is_some() && !speaks_tls {
            return Err(fail(
                "`upstream_tls` applies only to https:// upstreams, and this route has none",
            ));
        }
        let balance = match (self.balance, self.hash_on) {
            (None | Some(BalanceName::RoundRobin), None) => Balance::RoundRobin,
            (Some(BalanceName::LeastRequest), None) => Balance::LeastRequest,
            (Some(BalanceName::Hash), Some(on)) => Balance::Hash(on),
            (Some(BalanceName::Hash), None) => {
                return Err(fail(
                    "`balance: hash` needs `hash_on` (client_ip, header:NAME or cookie:NAME)",
                ))
            }
            (_, Some(_)) => return Err(fail("`hash_on` applies only with `balance: hash`")),
        };
        if self.methods.as_ref().is_some_and(Vec::is_empty) {
            return Err(fail("`methods` is empty, so the route could never match; list at least one method or leave it out"));
        }
        let methods = self.methods.map(|list| {
            let mut methods: Vec<Method> = list.into_iter().map(|m| m.0).collect();
            methods.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            methods.dedup();
            methods
        });
        Ok(RouteSpec {
            name,
            line: SourceLine(at.map(|(line, _)| line)),
            prefix: self.prefix.map_or_else(|| "/".to_owned(), |p| p.0),
            host: self.host,
            conditions: Conditions {
                headers: self.headers.0,
                query: self.query.0,
                cookies: self.cookies.0,
                path_regex: self.path_regex.map(|p| p.0),
            },
            methods,
            target,
            strip_prefix: self.strip_prefix.unwrap_or(false),
            rewrite: self.rewrite,
            request_headers: self.request_headers.unwrap_or_default(),
            response_headers: self.response_headers.unwrap_or_default(),
            rate_limit: self.rate_limit,
            max_in_flight: self.max_in_flight.map(|m| m.0),
            retry: self.retry,
            balance,
            mirror: self.mirror,
            timeout: self.timeout.map_or(DEFAULT_TIMEOUT, |d| d.0),
            health: self.health.map(RawHealth::into_spec),
            upstream_tls: self.upstream_tls,
        })
    }
}
