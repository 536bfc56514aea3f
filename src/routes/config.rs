//! The route file as written: serde types that mirror `routes.yaml`, and the
//! checks that need a position in the file to be useful.
//!
//! Every value that can be wrong on its own (a prefix, a URL, a duration, a
//! status code, a header) is checked while it is deserialized, so the error
//! carries serde_yaml's line and column and the path of the field. Checks that
//! need the whole table (conflicting routes, the `tests:` section) live in
//! [`crate::routes::table`]. All use of serde_yaml stays in this module.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use url::Url;

pub use crate::pki::sha256_hex;
use crate::routes::path::canonical_path;

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
    #[error("routes.{second}: same host, prefix, headers and methods as route `{first}`{}", at_line(*line))]
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
    /// Lower-case names; sorted so that equal sets compare equal.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Sorted and deduplicated.
    pub methods: Option<Vec<Method>>,
    pub target: TargetSpec,
    pub strip_prefix: bool,
    pub timeout: Duration,
    /// Active checks of this route's upstreams, if the file asks for them.
    pub health: Option<HealthSpec>,
}

/// One upstream of a route and its weight in the route's round robin.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSpec {
    pub url: Url,
    pub weight: u32,
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
        for (name, value) in &self.headers {
            text.push_str(&format!(
                " {name}={}",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        if let Some(methods) = &self.methods {
            let names: Vec<&str> = methods.iter().map(Method::as_str).collect();
            text.push_str(&format!(" methods {}", names.join(",")));
        }
        match &self.target {
            TargetSpec::Upstreams(upstreams) => {
                let urls: Vec<String> = upstreams
                    .iter()
                    .map(|u| match u.weight {
                        1 => u.url.to_string(),
                        weight => format!("{} (weight {weight})", u.url),
                    })
                    .collect();
                text.push_str(&format!(" -> {}", urls.join(", ")));
                if self.strip_prefix {
                    text.push_str(" (strip prefix)");
                }
            }
            TargetSpec::Respond(respond) => {
                text.push_str(&format!(" -> respond {}", respond.status.as_u16()));
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
    })
}

/// The name stand-ins for broken routes take: not a name a file can use
/// without `check` saying so, since it starts a route that is never built.
const STAND_IN: &str = "__switchyard_stand_in_";

/// One route as it stands in the file: its name, its lines (1-based, end
/// exclusive) and the indentation of its key.
#[derive(Debug)]
struct RouteBlock<'a> {
    name: &'a str,
    lines: std::ops::Range<usize>,
    indent: usize,
}

/// Finds each block-style route in one pass over the text, from its key to
/// the next route's key or the next top-level key. serde_yaml keeps no
/// spans after deserializing, and errors between routes (two routes
/// claiming the same match) still deserve a line. Route keys are the
/// least-indented keys under a top-level `routes:`; names are limited to
/// `[A-Za-z0-9_.-]`, so reading `name:` (optionally quoted) is unambiguous.
/// A flow-style `routes: { ... }` gives no blocks, which is allowed.
fn route_blocks(text: &str) -> Vec<RouteBlock<'_>> {
    let mut blocks: Vec<RouteBlock<'_>> = Vec::new();
    let mut in_routes = false;
    let mut route_indent = None;
    let total = text.lines().count();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let number = index + 1;
        if indent == 0 {
            if let Some(last) = blocks.last_mut().filter(|b| b.lines.end > number) {
                last.lines.end = number;
            }
            in_routes = trimmed.starts_with("routes:");
            route_indent = None;
            continue;
        }
        if !in_routes || *route_indent.get_or_insert(indent) != indent {
            continue;
        }
        if let Some(last) = blocks.last_mut().filter(|b| b.lines.end > number) {
            last.lines.end = number;
        }
        let key = match trimmed.strip_prefix(['"', '\'']) {
            Some(quoted) => quoted.split(['"', '\'']).next(),
            None => trimmed.split(':').next(),
        };
        blocks.push(RouteBlock {
            name: key.map_or("", str::trim_end),
            lines: number..total + 1,
            indent,
        });
    }
    blocks
}

/// Where each route's key stands: line and column, the first key of a name
/// if it is repeated.
fn key_positions<'a>(blocks: &[RouteBlock<'a>]) -> HashMap<&'a str, (usize, usize)> {
    let mut positions = HashMap::new();
    for block in blocks {
        positions
            .entry(block.name)
            .or_insert((block.lines.start, block.indent + 1));
    }
    positions
}

/// `text` with the route at `block` replaced by a valid stand-in on its
/// first line and blank lines after, so no other line moves.
fn with_stand_in(text: &str, block: &RouteBlock, index: usize) -> String {
    let mut out = String::with_capacity(text.len());
    for (number, line) in (1..).zip(text.lines()) {
        if number == block.lines.start {
            let pad = " ".repeat(block.indent);
            out.push_str(&format!("{pad}{STAND_IN}{index}: {{ respond: {{}} }}"));
        } else if !block.lines.contains(&number) {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// serde_yaml's message, with the position made exact where serde_yaml
/// leaves it out or puts it at the start of the enclosing mapping.
///
/// Two cases need help. serde's derived code raises `duplicate field`
/// after reading the whole mapping, so serde_yaml places it at the
/// mapping's first key; the repeated key is found in the text instead. And
/// serde_yaml prints no position at all for line 1 column 1.
fn yaml_message(error: &serde_yaml::Error, text: &str) -> String {
    let message = error.to_string();
    let (bare, _) = message.rsplit_once(" at line ").unwrap_or((&message, ""));
    let located = bare
        .split_once("duplicate field `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .and_then(|(field, _)| {
            let mapping = bare.split_once(": ").map_or("", |(path, _)| path);
            repeated_key_position(text, mapping, field)
        })
        .or_else(|| error.location().map(|l| (l.line(), l.column())));
    match located {
        Some((line, column)) => format!("{bare} at line {line} column {column}"),
        None => message,
    }
}

/// Where `field` appears for the second time among the keys of the mapping
/// at `path` (`""` for the top level, `routes.NAME` for a route): the keys
/// one indentation level below the mapping's own key, until the mapping
/// ends. Block-style YAML only; anything else keeps serde_yaml's position.
fn repeated_key_position(text: &str, path: &str, field: &str) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let (start, parent_indent) = match path {
        "" => (0, None),
        _ => {
            let name = path.strip_prefix("routes.")?;
            let (line, column) = *key_positions(&route_blocks(text)).get(name)?;
            (line, Some(column - 1))
        }
    };
    let mut key_indent = None;
    let mut seen = 0;
    for (index, line) in lines.iter().enumerate().skip(start) {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if parent_indent.is_some_and(|parent| indent <= parent) {
            break;
        }
        if *key_indent.get_or_insert(indent) != indent {
            continue;
        }
        let key = trimmed
            .split(':')
            .next()
            .map(|k| k.trim().trim_matches(['"', '\'']));
        if key == Some(field) {
            seen += 1;
            if seen == 2 {
                return Some((index + 1, indent + 1));
            }
        }
    }
    None
}

fn is_empty_document(text: &str) -> bool {
    match serde_yaml::Deserializer::from_str(text).next() {
        None => true,
        Some(document) => matches!(
            serde_yaml::Value::deserialize(document),
            Ok(serde_yaml::Value::Null)
        ),
    }
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

/// Header conditions or response headers: a mapping whose keys must be
/// valid header names and values valid header values, with no name given
/// twice (names compare case-insensitively, so `X-A` and `x-a` collide).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderList(pub Vec<(HeaderName, HeaderValue)>);

impl<'de> Deserialize<'de> for HeaderList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct HeaderListVisitor;
        impl<'de> Visitor<'de> for HeaderListVisitor {
            type Value = HeaderList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of header names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HeaderList, A::Error> {
                let mut entries: Vec<(HeaderName, HeaderValue)> = Vec::new();
                loop {
                    let check_name = |key: &str| {
                        let name = HeaderName::try_from(key)
                            .map_err(|_| format!("`{key}` is not a valid header name"))?;
                        if entries.iter().any(|(n, _)| *n == name) {
                            return Err(format!("duplicate header `{key}`"));
                        }
                        Ok(name)
                    };
                    let Some(name) = map.next_key_seed(Checked("a header name", check_name))?
                    else {
                        break;
                    };
                    let check_value = |value: &str| {
                        HeaderValue::try_from(value)
                            .map_err(|_| format!("`{value}` is not a valid header value"))
                    };
                    let value = map.next_value_seed(Checked("a header value", check_value))?;
                    entries.push((name, value));
                }
                entries.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
                Ok(HeaderList(entries))
            }
        }
        d.deserialize_map(HeaderListVisitor)
    }
}

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

/// A route prefix in the canonical form the request path is matched in.
#[derive(Debug, Clone)]
struct Prefix(String);

checked_from_str!(Prefix, "a path starting with `/`", |text| {
    if !text.starts_with('/') {
        return Err(format!("prefix `{text}` does not start with `/`"));
    }
    if text.contains(['?', '#']) {
        return Err(format!("prefix `{text}` contains a query or fragment"));
    }
    let canonical = canonical_path(text).map_err(|e| format!("prefix `{text}`: {e}"))?;
    let trimmed = canonical.trim_end_matches('/');
    Ok(Prefix(if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    }))
});

checked_from_str!(HostPattern, "a host name or `*.domain`", |text| {
    let host = text.to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host);
    let (pattern, name) = match host.strip_prefix("*.") {
        Some(rest) => (HostPattern::Wildcard(format!(".{rest}")), rest),
        None => (HostPattern::Exact(host.to_owned()), host),
    };
    let is_ipv6 = name.starts_with('[') && name.ends_with(']');
    let valid_name = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if !(valid_name || is_ipv6 && matches!(pattern, HostPattern::Exact(_))) {
        return Err(format!("`{text}` is not a valid host (no port, no scheme)"));
    }
    Ok(pattern)
});

/// An HTTP method name as a route or test states it.
#[derive(Debug, Clone)]
pub struct MethodName(pub Method);

checked_from_str!(
    MethodName,
    "an upper-case method name such as GET",
    |text| {
        if text.is_empty() || !text.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(format!("method `{text}` is not an upper-case method name"));
        }
        Method::from_bytes(text.as_bytes())
            .map(MethodName)
            .map_err(|_| format!("method `{text}` is not valid"))
    }
);

#[derive(Debug, Clone)]
struct UpstreamUrl(Url);

checked_from_str!(
    UpstreamUrl,
    "an http:// or https:// URL",
    check_upstream_url
);

fn check_upstream_url(text: &str) -> Result<UpstreamUrl, String> {
    let url = Url::parse(text).map_err(|e| format!("upstream `{text}`: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "upstream `{text}`: scheme `{}` is not http or https",
            url.scheme()
        ));
    }
    if url.host().is_none() {
        return Err(format!("upstream `{text}` has no host"));
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

/// Reads one `upstreams` entry (a URL, or `{ url, weight }`) and refuses
/// a URL already listed. Every check runs inside the visitor, so that
/// serde_yaml gives the error the entry's position and index.
struct NewUpstream<'a>(&'a [UpstreamSpec]);

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
struct RawWeighted {
    url: UpstreamUrl,
    #[serde(default)]
    weight: Option<Weight>,
}

#[derive(Debug, Clone, Copy)]
struct Weight(u32);

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
struct UpstreamList(Vec<UpstreamSpec>);

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
struct Threshold(u32);

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
struct CheckPath(String);

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
struct RawHealth {
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
    fn into_spec(self) -> HealthSpec {
        HealthSpec {
            path: self.path.0,
            interval: self.interval.map_or(DEFAULT_HEALTH_INTERVAL, |d| d.0),
            timeout: self.timeout.map_or(DEFAULT_HEALTH_TIMEOUT, |d| d.0),
            healthy: self.healthy.map_or(DEFAULT_HEALTHY_AFTER, |n| n.0),
            unhealthy: self.unhealthy.map_or(DEFAULT_UNHEALTHY_AFTER, |n| n.0),
        }
    }
}

#[derive(Debug, Clone)]
struct DurationValue(Duration);

checked_from_str!(
    DurationValue,
    "a duration such as 250ms, 5s or 2m",
    |text| {
        match humantime::parse_duration(text) {
            Ok(d) if d.is_zero() => Err(format!("duration `{text}` must be more than zero")),
            Ok(d) => Ok(DurationValue(d)),
            Err(_) => Err(format!(
                "`{text}` is not a duration (write it like 250ms, 5s or 2m)"
            )),
        }
    }
);

#[derive(Debug, Clone)]
struct Status(StatusCode);

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct StatusVisitor;
        impl Visitor<'_> for StatusVisitor {
            type Value = Status;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a status code from 200 to 599")
            }
            fn visit_u64<E: de::Error>(self, code: u64) -> Result<Status, E> {
                u16::try_from(code)
                    .ok()
                    .filter(|code| (200..=599).contains(code))
                    .and_then(|code| StatusCode::from_u16(code).ok())
                    .map(Status)
                    .ok_or_else(|| {
                        E::custom(format!(
                            "status {code} is not a final HTTP status (200 to 599)"
                        ))
                    })
            }
            fn visit_i64<E: de::Error>(self, code: i64) -> Result<Status, E> {
                self.visit_u64(u64::try_from(code).unwrap_or(0))
            }
            /// `status: "200"` means what it says.
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Status, E> {
                match text.trim().parse::<u64>() {
                    Ok(code) => self.visit_u64(code),
                    Err(_) => Err(E::custom(format!("status `{text}` is not a number"))),
                }
            }
        }
        d.deserialize_any(StatusVisitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRespond {
    #[serde(default)]
    status: Option<Status>,
    #[serde(default)]
    body: String,
    #[serde(default)]
    headers: HeaderList,
}

impl RawRespond {
    fn into_spec(self) -> RespondSpec {
        RespondSpec {
            status: self.status.map_or(StatusCode::OK, |s| s.0),
            body: Bytes::from(self.body),
            headers: self.headers.0.into_iter().collect(),
        }
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
    headers: HeaderList,
    #[serde(default)]
    methods: Option<Vec<MethodName>>,
    #[serde(default)]
    upstream: Option<UpstreamUrl>,
    #[serde(default)]
    upstreams: Option<UpstreamList>,
    #[serde(default)]
    respond: Option<RawRespond>,
    #[serde(default)]
    strip_prefix: Option<bool>,
    #[serde(default)]
    timeout: Option<DurationValue>,
    #[serde(default)]
    health: Option<RawHealth>,
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
        let target = match (self.upstream, self.upstreams, self.respond) {
            (Some(url), None, None) => TargetSpec::Upstreams(vec![UpstreamSpec {
                url: url.0,
                weight: 1,
            }]),
            (None, Some(list), None) => TargetSpec::Upstreams(list.0),
            (None, None, Some(respond)) => {
                if self.strip_prefix.is_some() {
                    return Err(fail(
                        "`strip_prefix` applies only to upstream routes, not `respond`",
                    ));
                }
                if self.timeout.is_some() {
                    return Err(fail(
                        "`timeout` applies only to upstream routes, not `respond`",
                    ));
                }
                if self.health.is_some() {
                    return Err(fail(
                        "`health` applies only to upstream routes, not `respond`",
                    ));
                }
                TargetSpec::Respond(respond.into_spec())
            }
            (None, None, None) => {
                return Err(fail(
                    "a route needs one of `upstream`, `upstreams` or `respond`",
                ))
            }
            _ => {
                return Err(fail(
                    "a route takes only one of `upstream`, `upstreams` or `respond`",
                ))
            }
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
            headers: self.headers.0,
            methods,
            target,
            strip_prefix: self.strip_prefix.unwrap_or(false),
            timeout: self.timeout.map_or(DEFAULT_TIMEOUT, |d| d.0),
            health: self.health.map(RawHealth::into_spec),
        })
    }
}
