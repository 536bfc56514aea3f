//! The route explainer behind `GET /routes/match` (SPEC 3): which route a
//! request would reach, which other routes matched it, and the precedence
//! rule (SPEC 2, rule 3) that decided between the first two.
//!
//! There is no second matcher here: the candidates come from
//! [`RouteTable::candidates`], the same walk the proxy's lookup stops after
//! one step of, so the explainer cannot disagree with the proxy.

use std::cmp::Ordering;
use std::ops::ControlFlow;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::Serialize;

use crate::routes::conditions;
use crate::routes::config::UpstreamProtocol;
use crate::routes::host::host_of_authority;
use crate::routes::path::canonical_path;
use crate::routes::table::{Candidate, HostClass, RequestFacts, Route, RouteTable};
use crate::routes::upstreams::{now_ms, UpstreamState};

/// More `header=` parameters than this is not a question about a real
/// request; the cap bounds the work one admin request can ask for.
pub const MAX_HEADER_PARAMS: usize = 64;

/// The request described by the query string
/// `host=H&path=P[&method=M][&header=name:value...][&query=Q][&cookie=name:value...]`.
#[derive(Debug)]
pub struct MatchQuery {
    /// Normalized like the proxy's: lower-case, port and trailing dot dropped.
    pub host: Option<String>,
    pub raw_path: String,
    pub method: Method,
    /// `header=` parameters, and the `cookie=` ones as one `Cookie` header.
    pub headers: HeaderMap,
    /// The request's query string, as `a=1&b=2`.
    pub query: Option<String>,
}

impl MatchQuery {
    /// Parses a (percent-encoded) query string; the error names the bad
    /// parameter.
    pub fn parse(query: &str) -> Result<Self, String> {
        let mut host = None;
        let mut path = None;
        let mut method = None;
        let mut headers = HeaderMap::new();
        let mut request_query = None;
        let mut cookies: Vec<String> = Vec::new();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "host" => host = Some(value.into_owned()),
                "path" => path = Some(value.into_owned()),
                "method" => {
                    let parsed = Method::from_bytes(value.as_bytes())
                        .map_err(|_| format!("method `{value}` is not an HTTP method"))?;
                    method = Some(parsed);
                }
                "header" => {
                    if headers.len() == MAX_HEADER_PARAMS {
                        return Err(format!("more than {MAX_HEADER_PARAMS} `header` parameters"));
                    }
                    let (name, header_value) = value
                        .split_once(':')
                        .ok_or_else(|| format!("header `{value}` is not `name:value`"))?;
                    let name = HeaderName::from_bytes(name.trim().as_bytes())
                        .map_err(|_| format!("header name `{name}` is not valid"))?;
                    let header_value = HeaderValue::from_str(header_value.trim())
                        .map_err(|_| format!("header value `{header_value}` is not valid"))?;
                    headers.append(name, header_value);
                }
                "query" => request_query = Some(value.into_owned()),
                "cookie" => {
                    if cookies.len() == MAX_HEADER_PARAMS {
                        return Err(format!("more than {MAX_HEADER_PARAMS} `cookie` parameters"));
                    }
                    let (name, cookie_value) = value
                        .split_once(':')
                        .ok_or_else(|| format!("cookie `{value}` is not `name:value`"))?;
                    cookies.push(format!("{}={}", name.trim(), cookie_value.trim()));
                }
                other => {
                    return Err(format!(
                        "unknown parameter `{other}` (expected host, path, method, header, query, cookie)"
                    ))
                }
            }
        }
        let host = match host {
            None => None,
            Some(raw) => {
                // The same normalization the proxy applies to `Host`.
                let value = HeaderValue::from_str(&raw)
                    .map_err(|_| format!("host `{raw}` is not valid"))?;
                Some(
                    host_of_authority(&value)
                        .map(|host| host.into_owned())
                        .ok_or_else(|| format!("host `{raw}` is not valid"))?,
                )
            }
        };
        if !cookies.is_empty() {
            let cookie = HeaderValue::try_from(cookies.join("; "))
                .map_err(|_| "the `cookie` parameters are not a valid Cookie header".to_owned())?;
            headers.append(http::header::COOKIE, cookie);
        }
        Ok(MatchQuery {
            host,
            raw_path: path.ok_or("missing parameter `path`")?,
            method: method.unwrap_or(Method::GET),
            headers,
            query: request_query,
        })
    }
}

/// One matching route and what made it match.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct CandidateView {
    pub route: String,
    /// How the route's host condition met the request: `exact`, `wildcard`
    /// or `any` (the route names no host).
    pub host_match: HostClass,
    pub host: Option<String>,
    pub prefix: String,
    pub prefix_segments: usize,
    /// How many conditions the route has (all of them hold): each entry of
    /// `headers`, `query` and `cookies`, and `path_regex`.
    pub conditions: usize,
    /// Each of them, as `check` prints it.
    pub condition_list: Vec<String>,
    pub methods: Option<Vec<String>>,
}

/// A route whose host and prefix match the request, but not the rest.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct RejectedView {
    pub route: String,
    /// The first condition that does not hold, as `check` prints it, or
    /// `methods`.
    pub failed: String,
    /// What the request had instead.
    pub saw: String,
}

/// The `/routes/match` answer when a route matched.
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub route: String,
    pub path: String,
    pub host: Option<String>,
    pub method: String,
    /// Every matching route, the winner first, in precedence order.
    pub candidates: Vec<CandidateView>,
    /// Routes with a matching host and prefix whose conditions or methods
    /// did not hold, and the condition that decided.
    pub rejected: Vec<RejectedView>,
    pub reason: String,
    /// The winner's upstreams and whether each would take a request now
    /// (empty for a `respond` route).
    pub upstreams: Vec<UpstreamView>,
    /// How the winner protects its upstreams, in `check`'s words: rate
    /// limit, in-flight cap, retries, balancing, mirror; empty for none.
    pub protection: Vec<String>,
}

/// One upstream of the winning route, as of the question.
#[derive(Debug, Serialize)]
pub struct UpstreamView {
    pub url: String,
    pub weight: u32,
    pub in_flight: usize,
    /// `http/1.1`, `h2c` or `https` (`h2` or `http/1.1` by ALPN).
    pub protocol: UpstreamProtocol,
    pub state: UpstreamState,
    pub eligible: bool,
}

/// The `/routes/match` answer when nothing matched, or the path is invalid.
#[derive(Debug)]
pub enum NoMatch {
    BadPath(String),
    NoRoute { host: Option<String>, path: String },
}

/// Explains where the table sends this request.
pub fn explain(table: &RouteTable, query: &MatchQuery) -> Result<Explanation, NoMatch> {
    let path = canonical_path(&query.raw_path)
        .map_err(|e| NoMatch::BadPath(format!("path `{}`: {e}", query.raw_path)))?;
    let facts = RequestFacts {
        host: query.host.as_deref(),
        path: &path,
        query: query.query.as_deref(),
        method: &query.method,
        headers: &query.headers,
    };
    let mut found: Vec<Candidate<'_>> = Vec::new();
    let _ = table.candidates(&facts, |candidate| {
        found.push(candidate);
        ControlFlow::Continue(())
    });
    let mut rejected = Vec::new();
    let _ = table.along(&facts, |candidate| {
        let route = candidate.route;
        if !route.accepts_method(&query.method) {
            rejected.push(RejectedView {
                route: route.name().to_owned(),
                failed: "methods".to_owned(),
                saw: query.method.to_string(),
            });
        } else if let Some(failing) = conditions::failing(&route.spec.conditions, &facts) {
            let (failed, saw) = failing.describe(&facts);
            rejected.push(RejectedView {
                route: route.name().to_owned(),
                failed,
                saw,
            });
        }
        ControlFlow::Continue(())
    });
    let Some(winner) = found.first() else {
        return Err(NoMatch::NoRoute {
            host: query.host.clone(),
            path,
        });
    };
    let reason = match found.get(1) {
        None => format!("`{}` is the only route that matches", winner.route.name()),
        Some(runner_up) => format!(
            "`{}` wins over `{}`: {}",
            winner.route.name(),
            runner_up.route.name(),
            why_first(winner, runner_up)
        ),
    };
    Ok(Explanation {
        route: winner.route.name().to_owned(),
        path,
        host: query.host.clone(),
        method: query.method.to_string(),
        candidates: found.iter().map(view).collect(),
        rejected,
        reason,
        upstreams: upstream_views(winner.route),
        protection: protection_summary(&winner.route.spec),
    })
}

fn protection_summary(spec: &crate::routes::config::RouteSpec) -> Vec<String> {
    let mut parts = Vec::new();
    if let Some(limit) = &spec.rate_limit {
        parts.push(format!("rate limit {limit}"));
    }
    if let Some(max) = spec.max_in_flight {
        parts.push(format!("at most {max} in flight"));
    }
    if let Some(retry) = &spec.retry {
        parts.push(format!("retry {retry}"));
    }
    parts.push(format!("balance {}", spec.balance));
    if let Some(mirror) = &spec.mirror {
        parts.push(format!("mirror {}% to {}", mirror.percent, mirror.to));
    }
    parts
}

fn upstream_views(route: &Route) -> Vec<UpstreamView> {
    let balancer = route.balancer();
    let now = now_ms();
    balancer
        .upstreams()
        .iter()
        .zip(balancer.eligible_now())
        .map(|(u, eligible)| UpstreamView {
            url: u.spec.url.to_string(),
            weight: u.spec.weight,
            in_flight: u.in_flight(),
            protocol: u.spec.protocol(),
            state: u.health.state(now),
            eligible,
        })
        .collect()
}

/// The first rule of SPEC 2 rule 3 that tells the two apart.
fn why_first(winner: &Candidate<'_>, other: &Candidate<'_>) -> String {
    let describe = |class: HostClass| match class {
        HostClass::Exact => "an exact host",
        HostClass::Wildcard => "a wildcard host",
        HostClass::Any => "no host condition",
    };
    if winner.host != other.host {
        return format!("{} beats {}", describe(winner.host), describe(other.host));
    }
    if winner.host == HostClass::Wildcard {
        let (ours, theirs) = (host_of(winner), host_of(other));
        if ours != theirs {
            return format!("wildcard `{ours}` is more specific than `{theirs}`");
        }
    }
    if winner.prefix_segments != other.prefix_segments {
        return format!(
            "the longer prefix wins: `{}` ({} segments) over `{}` ({} segments)",
            winner.route.spec.prefix,
            winner.prefix_segments,
            other.route.spec.prefix,
            other.prefix_segments
        );
    }
    let (ours, theirs) = (
        winner.route.spec.conditions.count(),
        other.route.spec.conditions.count(),
    );
    match ours.cmp(&theirs) {
        Ordering::Greater => {
            return format!(
                "more conditions win: {ours} ({}) over {theirs}",
                winner.route.spec.conditions.describe().join(", ")
            );
        }
        Ordering::Less | Ordering::Equal => {}
    }
    if winner.route.spec.methods.is_some() && other.route.spec.methods.is_none() {
        return "a route with `methods` beats one without".to_owned();
    }
    "equal precedence; the route listed first in the file wins".to_owned()
}

fn host_of(candidate: &Candidate<'_>) -> String {
    candidate
        .route
        .spec
        .host
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default()
}

fn view(candidate: &Candidate<'_>) -> CandidateView {
    let spec = &candidate.route.spec;
    CandidateView {
        route: spec.name.clone(),
        host_match: candidate.host,
        host: spec.host.as_ref().map(ToString::to_string),
        prefix: spec.prefix.clone(),
        prefix_segments: candidate.prefix_segments,
        conditions: spec.conditions.count(),
        condition_list: spec.conditions.describe(),
        methods: spec
            .methods
            .as_ref()
            .map(|m| m.iter().map(ToString::to_string).collect()),
    }
}
