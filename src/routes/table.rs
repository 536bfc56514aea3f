//! The route table: the checked, immutable structure that every request
//! consults, built whole for each reload and never changed after.
//!
//! Lookup cost does not grow with the number of routes: the table keeps one
//! prefix trie per host (exact hosts and wildcard suffixes in hash maps, plus
//! one trie for routes without a host), so a request costs a hash lookup per
//! host label and per path segment. Precedence (SPEC 2, rule 3) is the order
//! in which [`RouteTable::candidates`] visits routes: host class first, then
//! the deepest prefix, then the order each trie node keeps its routes in.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, HeaderValue, Method};
use url::Url;

use crate::routes::balance::Balancer;
use crate::routes::conditions;
use crate::routes::config::{
    Config, ConfigError, HostPattern, RedirectSpec, RespondSpec, RolloutSpec, RouteSpec,
    TargetSpec, UpstreamTlsSpec,
};
use crate::routes::counters::RouteMetrics;
use crate::routes::limits::Protection;
use crate::routes::path::canonical_path;
pub use crate::routes::request::RequestFacts;
use crate::routes::upstream_tls::UpstreamTls;
use crate::routes::upstreams::{RouteUpstream, UpstreamHealth};

/// What a table was built from, for the admin API and the reload log.
#[derive(Debug, Clone)]
pub struct TableMeta {
    pub version: u64,
    pub sha256: String,
    pub loaded_at: SystemTime,
}

/// Counts the route tables still alive: the live one plus any old ones that
/// in-flight requests or open connections still hold. An old table is freed
/// when its last request ends; this count shows that it was.
#[derive(Debug, Clone, Default)]
pub struct Generations(Arc<AtomicUsize>);

impl Generations {
    pub fn live(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Held by a table; dropping the table drops it and decrements the count.
#[derive(Debug)]
struct GenerationToken(Arc<AtomicUsize>);

impl Drop for GenerationToken {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One checked route.
#[derive(Debug)]
pub struct Route {
    pub spec: RouteSpec,
    /// Position in [`RouteTable::routes`], so a request can name its route
    /// after it has let go of the borrow.
    pub index: usize,
    /// This route's counters, bumped by the request path without a lock.
    pub metrics: Arc<RouteMetrics>,
    /// The upstreams and their round robin, for an upstream route. The
    /// rotation lives in the table, so a reload starts it afresh; health
    /// is shared with the tables before and after (see `upstreams`).
    /// Empty for a `respond` or `redirect` route.
    balancer: Balancer,
    /// Whether the route has conditions beyond host, prefix and method,
    /// read once per table so a route without them pays one load.
    conditional: bool,
    /// Its rate limit, in-flight cap, retry budget and mirror, when it has
    /// them: state kept across reloads by name and setting.
    pub protection: Protection,
}

impl Route {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Where this request goes first. For an upstream route this takes the
    /// next turn of the round robin among the eligible upstreams.
    pub fn destination(&self) -> Destination<'_> {
        match &self.spec.target {
            TargetSpec::Upstreams(_) => Destination::Upstreams(&self.balancer),
            TargetSpec::Respond(respond) => Destination::Respond(respond),
            TargetSpec::Redirect(redirect) => Destination::Redirect(redirect),
        }
    }

    /// The upstream at `index` in the route's list, as picked earlier.
    pub fn upstream(&self, index: usize) -> Option<&RouteUpstream> {
        self.balancer.upstreams().get(index)
    }

    /// This route's upstreams, in file order; empty for `respond`.
    pub fn upstreams(&self) -> &[RouteUpstream] {
        self.balancer.upstreams()
    }

    pub fn balancer(&self) -> &Balancer {
        &self.balancer
    }

    /// Whether the conditions beyond host and prefix hold for this request.
    fn accepts(&self, request: &RequestFacts<'_>) -> bool {
        self.accepts_method(request.method)
            && (!self.conditional || conditions::accepts(&self.spec.conditions, request))
    }

    /// Whether the route takes `method`. HEAD is GET without the body, so
    /// a route that allows GET allows HEAD too, as nginx's `limit_except
    /// GET` does.
    pub fn accepts_method(&self, method: &Method) -> bool {
        self.spec.methods.as_ref().is_none_or(|methods| {
            methods.contains(method) || (method == Method::HEAD && methods.contains(&Method::GET))
        })
    }
}

/// Where one request goes: to the route's upstreams (one picked per try,
/// see [`Balancer::pick`]), to the router's own fixed response, or to a
/// redirect the router answers.
#[derive(Debug, Clone, Copy)]
pub enum Destination<'a> {
    Upstreams(&'a Balancer),
    Respond(&'a RespondSpec),
    Redirect(&'a RedirectSpec),
}

/// How a candidate's host condition relates to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostClass {
    Exact,
    Wildcard,
    Any,
}

/// A route that matches a request, with what made it match, in precedence
/// order when produced by [`RouteTable::candidates`].
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub route: &'a Route,
    pub host: HostClass,
    pub prefix_segments: usize,
}

/// Trie nodes a lookup's walk keeps on its stack; deeper prefixes are
/// looked up by the general visit instead.
const WALK_DEPTH: usize = 16;

/// The maps a lookup hashes request bytes into: one per host label and per
/// path segment, so the hasher is most of a lookup's cost. foldhash is
/// several times faster than std's SipHash on short keys, and seeded per
/// process, so request bytes still cannot be aimed at chosen collisions;
/// the keys themselves come only from the operator's file.
type LookupMap<K, V> = foldhash::HashMap<K, V>;

#[derive(Debug, Default)]
struct Node {
    /// Routes whose prefix ends here, best first (see [`precedence`]).
    routes: Vec<usize>,
    children: LookupMap<Box<str>, Node>,
}

impl Node {
    fn insert(&mut self, prefix: &str, route: usize) {
        let mut node = self;
        for segment in segments(prefix) {
            // Look up before inserting: most segments are shared, and an
            // `entry` call would allocate the key every time.
            if !node.children.contains_key(segment) {
                node.children.insert(segment.into(), Node::default());
            }
            node = node.children.get_mut(segment).expect("inserted above");
        }
        node.routes.push(route);
    }

    /// Visits the routes along `path`, deepest prefix first. Recursion depth
    /// is bounded by the longest configured prefix, not by the request.
    fn visit<'p>(
        &self,
        mut path: impl Iterator<Item = &'p str>,
        depth: usize,
        f: &mut dyn FnMut(usize, usize) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        if let Some(child) = path.next().and_then(|segment| self.children.get(segment)) {
            child.visit(path, depth + 1, f)?;
        }
        for &route in &self.routes {
            f(route, depth)?;
        }
        ControlFlow::Continue(())
    }
}

/// Splits a canonical prefix into its segments; "/" has none.
fn segments(prefix: &str) -> impl Iterator<Item = &str> {
    prefix.split('/').filter(|s| !s.is_empty())
}

/// The checked, immutable route table.
#[derive(Debug)]
pub struct RouteTable {
    pub meta: TableMeta,
    routes: Vec<Route>,
    exact: LookupMap<String, Node>,
    /// Keyed by suffix with its leading dot: `*.example.com` is `.example.com`.
    wildcard: LookupMap<String, Node>,
    any_host: Node,
    generation: Option<GenerationToken>,
    /// Counters of requests that no route matched (`route="_none"`).
    pub unrouted: Arc<RouteMetrics>,
    /// The file's `rollout:`: how an edit of it is tried while this table
    /// is live (SPEC 10.2).
    pub rollout: Option<RolloutSpec>,
}

impl RouteTable {
    /// Builds a table, rejecting conflicting routes and failing `tests:`.
    pub fn build(config: Config, meta: TableMeta) -> Result<Self, ConfigError> {
        check_conflicts(&config.routes)?;
        let mut table = RouteTable {
            meta,
            routes: Vec::with_capacity(config.routes.len()),
            exact: LookupMap::default(),
            wildcard: LookupMap::default(),
            any_host: Node::default(),
            generation: None,
            unrouted: Arc::default(),
            rollout: config.rollout.clone(),
        };
        let mut tls_settings: HashMap<UpstreamTlsSpec, Arc<UpstreamTls>> = HashMap::new();
        for spec in config.routes {
            let index = table.routes.len();
            let tls = match &spec.upstream_tls {
                None => None,
                Some(setting) => Some(match tls_settings.get(setting) {
                    Some(loaded) => Arc::clone(loaded),
                    None => {
                        let loaded = UpstreamTls::load(setting).map(Arc::new).map_err(|e| {
                            ConfigError::Route {
                                name: spec.name.clone(),
                                message: format!("upstream_tls: {e}"),
                                at: spec.line.0.map(|line| (line, 1)),
                            }
                        })?;
                        tls_settings.insert(setting.clone(), Arc::clone(&loaded));
                        loaded
                    }
                }),
            };
            let trie = match &spec.host {
                Some(HostPattern::Exact(host)) => table.exact.entry(host.clone()).or_default(),
                Some(HostPattern::Wildcard(suffix)) => {
                    table.wildcard.entry(suffix.clone()).or_default()
                }
                None => &mut table.any_host,
            };
            trie.insert(&spec.prefix, index);
            let balancer = match &spec.target {
                TargetSpec::Upstreams(upstreams) => {
                    Balancer::new(upstreams, tls.as_ref(), &spec.balance)
                }
                TargetSpec::Respond(_) | TargetSpec::Redirect(_) => {
                    Balancer::new(&[], None, &spec.balance)
                }
            };
            table.routes.push(Route {
                conditional: !spec.conditions.is_empty(),
                protection: Protection::new(&spec),
                spec,
                index,
                metrics: Arc::default(),
                balancer,
            });
        }
        let routes = &table.routes;
        let sort = |node: &mut Node| {
            node.routes
                .sort_by(|&a, &b| precedence(&routes[a], &routes[b]))
        };
        for trie in table.exact.values_mut().chain(table.wildcard.values_mut()) {
            for_each_node(trie, &sort);
        }
        for_each_node(&mut table.any_host, &sort);
        table.share_health_within();
        table.run_tests(&config.tests)?;
        Ok(table)
    }

    /// An empty table, for a router that has not loaded a file yet.
    pub fn empty() -> Self {
        RouteTable {
            meta: TableMeta {
                version: 0,
                sha256: String::new(),
                loaded_at: SystemTime::UNIX_EPOCH,
            },
            routes: Vec::new(),
            exact: LookupMap::default(),
            wildcard: LookupMap::default(),
            any_host: Node::default(),
            generation: None,
            unrouted: Arc::default(),
            rollout: None,
        }
    }

    /// Counts this table in `generations` until it is dropped.
    pub fn tracked_by(mut self, generations: &Generations) -> Self {
        generations.0.fetch_add(1, Ordering::Relaxed);
        self.generation = Some(GenerationToken(Arc::clone(&generations.0)));
        self
    }

    /// Takes over from `previous` what outlives a table: the counters of
    /// every route this table keeps by name (and those of unrouted
    /// requests), each upstream URL's health, and each route's counts per
    /// upstream URL. Runs at build time, before the table goes live.
    pub fn carry_state_from(mut self, previous: &RouteTable) -> Self {
        let old: HashMap<&str, &Route> = previous
            .routes
            .iter()
            .map(|route| (route.name(), route))
            .collect();
        type PerUrl<'a> = (&'a Arc<UpstreamHealth>, &'a Arc<AtomicUsize>);
        let mut health: HashMap<&Url, PerUrl<'_>> = HashMap::new();
        for upstream in previous.routes.iter().flat_map(Route::upstreams) {
            health
                .entry(&upstream.spec.url)
                .or_insert((&upstream.health, &upstream.in_flight));
        }
        for route in &mut self.routes {
            let old_route = old.get(route.spec.name.as_str());
            if let Some(old_route) = old_route {
                route.metrics = Arc::clone(&old_route.metrics);
                route.protection.carry_from(&old_route.protection);
            }
            for upstream in route.balancer.upstreams_mut() {
                if let Some((shared, in_flight)) = health.get(&upstream.spec.url) {
                    upstream.health = Arc::clone(shared);
                    upstream.in_flight = Arc::clone(in_flight);
                }
                let old_upstream = old_route.and_then(|r| {
                    r.upstreams()
                        .iter()
                        .find(|u| u.spec.url == upstream.spec.url)
                });
                if let Some(old_upstream) = old_upstream {
                    upstream.counters = Arc::clone(&old_upstream.counters);
                    upstream.keep_tls_target(old_upstream);
                }
            }
        }
        self.unrouted = Arc::clone(&previous.unrouted);
        self
    }

    /// Routes of one table that name the same URL share its health, also
    /// when the URL is new in this table.
    fn share_health_within(&mut self) {
        type PerUrl = (Arc<UpstreamHealth>, Arc<AtomicUsize>);
        let mut first: HashMap<Url, PerUrl> = HashMap::new();
        for route in &mut self.routes {
            for upstream in route.balancer.upstreams_mut() {
                match first.get(&upstream.spec.url) {
                    Some((health, in_flight)) => {
                        upstream.health = Arc::clone(health);
                        upstream.in_flight = Arc::clone(in_flight);
                    }
                    None => {
                        let shared = (
                            Arc::clone(&upstream.health),
                            Arc::clone(&upstream.in_flight),
                        );
                        first.insert(upstream.spec.url.clone(), shared);
                    }
                }
            }
        }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route that serves this request: the first that
    /// [`RouteTable::candidates`] would visit, found without its callbacks.
    pub fn lookup(&self, request: &RequestFacts<'_>) -> Option<&Route> {
        self.tries_for(request.host)
            .find_map(|(trie, _)| self.first_in(trie, request))
    }

    /// The best route of one trie: walk down the path once, remembering
    /// the nodes passed, then try their routes deepest first. The walk
    /// keeps at most [`WALK_DEPTH`] nodes on the stack; a deeper prefix
    /// (rare) takes the general visit.
    fn first_in<'t>(&'t self, trie: &'t Node, request: &RequestFacts<'_>) -> Option<&'t Route> {
        let mut passed: [&Node; WALK_DEPTH] = [trie; WALK_DEPTH];
        let mut depth = 0;
        for segment in request.path.split('/').skip(1) {
            let Some(child) = passed[depth].children.get(segment) else {
                break;
            };
            depth += 1;
            if depth == WALK_DEPTH {
                let mut found = None;
                let _ = trie.visit(request.path.split('/').skip(1), 0, &mut |index, _| {
                    let route = &self.routes[index];
                    if route.accepts(request) {
                        found = Some(route);
                        return ControlFlow::Break(());
                    }
                    ControlFlow::Continue(())
                });
                return found;
            }
            passed[depth] = child;
        }
        passed[..=depth]
            .iter()
            .rev()
            .flat_map(|node| node.routes.iter())
            .map(|&index| &self.routes[index])
            .find(|route| route.accepts(request))
    }

    /// Visits every route that matches `request`, best first; the first one
    /// visited is the one [`RouteTable::lookup`] returns.
    pub fn candidates<'t>(
        &'t self,
        request: &RequestFacts<'_>,
        mut f: impl FnMut(Candidate<'t>) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        self.along(request, |candidate| {
            if candidate.route.accepts(request) {
                f(candidate)
            } else {
                ControlFlow::Continue(())
            }
        })
    }

    /// Visits every route whose host and prefix match `request`, whatever
    /// its other conditions say, in precedence order: what
    /// [`RouteTable::candidates`] filters, and what the explainer reads to
    /// say why a route did not match.
    pub fn along<'t>(
        &'t self,
        request: &RequestFacts<'_>,
        mut f: impl FnMut(Candidate<'t>) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        // Path segments after the leading "/"; "/a/b/" gives "a", "b", "",
        // and the empty segment simply matches no child. Split lazily, so a
        // walk allocates nothing and reads no further than the trie goes.
        let path = || request.path.split('/').skip(1);
        let mut visit_trie = |trie: &'t Node, host: HostClass| {
            trie.visit(path(), 0, &mut |index, depth| {
                f(Candidate {
                    route: &self.routes[index],
                    host,
                    prefix_segments: depth,
                })
            })
        };
        for (trie, host) in self.tries_for(request.host) {
            visit_trie(trie, host)?;
        }
        ControlFlow::Continue(())
    }

    /// The tries a request with `host` may match in, in precedence order:
    /// the exact host's, then each wildcard suffix's, longest first
    /// (`*.b.example.com` beats `*.example.com`; a suffix must leave at
    /// least one label, so `*.example.com` never matches `example.com`
    /// itself), then the one of routes without a host.
    fn tries_for<'t, 'h>(&'t self, host: Option<&'h str>) -> HostTries<'t, 'h> {
        HostTries {
            table: self,
            host,
            exact_done: false,
            // Without wildcard routes there is no suffix to look for.
            rest: host.filter(|_| !self.wildcard.is_empty()),
            any_done: false,
        }
    }

    fn run_tests(&self, tests: &[crate::routes::config::RouteTest]) -> Result<(), ConfigError> {
        for (index, test) in tests.iter().enumerate() {
            let bad = |reason: String| ConfigError::BadTest {
                index,
                reason,
                line: None,
            };
            let path = canonical_path(&test.path)
                .map_err(|e| bad(format!("path `{}`: {e}", test.path)))?;
            let host = test.host.as_ref().map(|h| h.to_ascii_lowercase());
            let method = test.method.as_ref().map_or(Method::GET, |m| m.0.clone());
            let mut headers: HeaderMap = test.headers.0.iter().cloned().collect();
            if !test.cookies.is_empty() {
                let pairs: Vec<String> = test
                    .cookies
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let cookie = HeaderValue::try_from(pairs.join("; "))
                    .map_err(|_| bad("`cookies` do not make a valid Cookie header".to_owned()))?;
                headers.append(http::header::COOKIE, cookie);
            }
            let request = RequestFacts {
                host: host.as_deref(),
                path: &path,
                query: test.query.as_deref(),
                method: &method,
                headers: &headers,
            };
            if let Some(expected) = &test.route {
                if !self.routes.iter().any(|r| r.name() == expected) {
                    return Err(bad(format!(
                        "names route `{expected}`, which the file does not define"
                    )));
                }
            }
            let actual = self.lookup(&request).map(|r| r.name().to_owned());
            if actual != test.route {
                let describe = |name: &Option<String>| match name {
                    Some(name) => format!("route `{name}`"),
                    None => "no route".to_owned(),
                };
                return Err(ConfigError::TestFailed {
                    index,
                    request: format!("{method} {}{path}", host.as_deref().unwrap_or("(any host)")),
                    expected: describe(&test.route),
                    actual: describe(&actual),
                    line: None,
                });
            }
        }
        Ok(())
    }
}

/// The iterator of [`RouteTable::tries_for`], written out by hand: it runs
/// on every request, and this keeps a lookup the plain loop it replaced.
struct HostTries<'t, 'h> {
    table: &'t RouteTable,
    host: Option<&'h str>,
    exact_done: bool,
    /// What is left of the host after the wildcard suffixes tried so far.
    rest: Option<&'h str>,
    any_done: bool,
}

impl<'t> Iterator for HostTries<'t, '_> {
    type Item = (&'t Node, HostClass);

    fn next(&mut self) -> Option<Self::Item> {
        if !self.exact_done {
            self.exact_done = true;
            if let Some(trie) = self.host.and_then(|h| self.table.exact.get(h)) {
                return Some((trie, HostClass::Exact));
            }
        }
        while let Some(rest) = self.rest {
            let Some(dot) = rest.find('.') else {
                self.rest = None;
                break;
            };
            let suffix = &rest[dot..];
            self.rest = Some(&suffix[1..]);
            if let Some(trie) = self.table.wildcard.get(suffix) {
                return Some((trie, HostClass::Wildcard));
            }
        }
        if self.any_done {
            return None;
        }
        self.any_done = true;
        Some((&self.table.any_host, HostClass::Any))
    }
}

/// Orders routes that share a host class and prefix: more conditions
/// first (each entry of `headers`, `query` and `cookies`, and
/// `path_regex`), then a route with `methods` before one without, then
/// file order (the sort is stable).
fn precedence(a: &Route, b: &Route) -> std::cmp::Ordering {
    b.spec
        .conditions
        .count()
        .cmp(&a.spec.conditions.count())
        .then_with(|| b.spec.methods.is_some().cmp(&a.spec.methods.is_some()))
}

fn for_each_node(node: &mut Node, f: &dyn Fn(&mut Node)) {
    f(node);
    for child in node.children.values_mut() {
        for_each_node(child, f);
    }
}

/// Two routes that claim exactly the same requests (SPEC 2, rule 4).
fn check_conflicts(routes: &[RouteSpec]) -> Result<(), ConfigError> {
    type Key<'a> = (
        &'a Option<HostPattern>,
        &'a str,
        Vec<String>,
        Option<&'a [Method]>,
    );
    let mut seen: HashMap<Key<'_>, &str> = HashMap::with_capacity(routes.len());
    for route in routes {
        let key = (
            &route.host,
            route.prefix.as_str(),
            route.conditions.describe(),
            route.methods.as_deref(),
        );
        if let Some(first) = seen.insert(key, &route.name) {
            return Err(ConfigError::Conflict {
                first: first.to_owned(),
                second: route.name.clone(),
                line: route.line.0,
            });
        }
    }
    Ok(())
}
