//! `switchyard check --replay ACCESS_LOG` (SPEC 10.3): routes every
//! request of a JSON access log with a route file and reports which would
//! go to another route than the one that served it.
//!
//! A log line records the method, host, path and query, not the headers
//! or cookies. A request is decided when the first route that could take
//! it, in precedence order, needs nothing else; when a route with header
//! or cookie conditions comes first, the request is counted undecidable
//! instead of guessed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::BufRead;
use std::ops::ControlFlow;

use http::{HeaderMap, HeaderValue, Method};
use serde::Deserialize;

use crate::routes::conditions::{judge_logged, Logged};
use crate::routes::host::host_of_authority;
use crate::routes::path::canonical_path;
use crate::routes::request::RequestFacts;
use crate::routes::table::{Route, RouteTable};

/// The route name the access log writes for a request no route matched.
const NO_ROUTE: &str = "_none";

/// Example paths kept per move.
const EXAMPLES: usize = 3;

/// The fields of an access line that replay reads.
#[derive(Deserialize)]
struct LoggedRequest {
    message: Option<String>,
    method: String,
    host: Option<String>,
    path: String,
    query: Option<String>,
    route: String,
}

/// Requests that move from one route to another, with a few examples.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MoveCount {
    pub count: u64,
    pub examples: Vec<String>,
}

/// What replaying a log with a file found.
#[derive(Debug, Default)]
pub struct Report {
    /// Access lines read and replayed.
    pub read: u64,
    /// Lines that are not access lines (other log events, other text).
    pub skipped: u64,
    /// Requests that would go where they went.
    pub same: u64,
    /// By (route that served it, route the file picks: `None` for none).
    pub moves: BTreeMap<(String, Option<String>), MoveCount>,
    /// Requests whose route depends on headers or cookies the log lacks,
    /// by the routes that made them so.
    pub undecidable: BTreeMap<String, u64>,
    /// Routes of the file that no logged request reaches (and none might).
    pub unreached: Vec<String>,
}

impl Report {
    pub fn moved(&self) -> u64 {
        self.moves.values().map(|m| m.count).sum()
    }

    pub fn undecidable_total(&self) -> u64 {
        self.undecidable.values().sum()
    }
}

/// Where the file sends one logged request.
enum Decision<'t> {
    Route(Option<&'t Route>),
    /// A route with header or cookie conditions comes first.
    Undecidable(&'t Route),
}

fn decide<'t>(table: &'t RouteTable, facts: &RequestFacts<'_>) -> Decision<'t> {
    let mut decision = Decision::Route(None);
    let _ = table.along(facts, |candidate| {
        let route = candidate.route;
        if !route.accepts_method(facts.method) {
            return ControlFlow::Continue(());
        }
        match judge_logged(&route.spec.conditions, facts) {
            Logged::Fails => ControlFlow::Continue(()),
            Logged::Holds => {
                decision = Decision::Route(Some(route));
                ControlFlow::Break(())
            }
            Logged::Unknown => {
                decision = Decision::Undecidable(route);
                ControlFlow::Break(())
            }
        }
    });
    decision
}

/// Replays every access line of `log` with `table`.
pub fn replay(table: &RouteTable, log: impl BufRead) -> std::io::Result<Report> {
    let mut report = Report::default();
    let mut reached = BTreeSet::new();
    let no_headers = HeaderMap::new();
    for line in log.lines() {
        let line = line?;
        let logged = match serde_json::from_str::<LoggedRequest>(&line) {
            Ok(logged) if logged.message.as_deref().is_none_or(|m| m == "request") => logged,
            _ => {
                report.skipped += 1;
                continue;
            }
        };
        let (Ok(method), Ok(path)) = (
            Method::from_bytes(logged.method.as_bytes()),
            canonical_path(&logged.path),
        ) else {
            report.skipped += 1;
            continue;
        };
        let authority = logged
            .host
            .as_deref()
            .and_then(|h| HeaderValue::from_str(h).ok());
        let host = authority.as_ref().and_then(host_of_authority);
        let facts = RequestFacts {
            host: host.as_deref(),
            path: &path,
            query: logged.query.as_deref().filter(|q| !q.is_empty()),
            method: &method,
            headers: &no_headers,
        };
        report.read += 1;
        let picked = match decide(table, &facts) {
            Decision::Undecidable(route) => {
                *report
                    .undecidable
                    .entry(route.name().to_owned())
                    .or_default() += 1;
                reached.insert(route.name().to_owned());
                continue;
            }
            Decision::Route(route) => route.map(|r| r.name().to_owned()),
        };
        if let Some(name) = &picked {
            reached.insert(name.clone());
        }
        let served = (logged.route != NO_ROUTE).then_some(logged.route);
        if served == picked {
            report.same += 1;
            continue;
        }
        let from = served.unwrap_or_else(|| NO_ROUTE.to_owned());
        let entry = report.moves.entry((from, picked)).or_default();
        entry.count += 1;
        if entry.examples.len() < EXAMPLES {
            let mut example = logged.path;
            if let Some(query) = logged.query.filter(|q| !q.is_empty()) {
                example.push('?');
                example.push_str(&query);
            }
            entry.examples.push(format!("{method} {example}"));
        }
    }
    report.unreached = table
        .routes()
        .iter()
        .map(Route::name)
        .filter(|name| !reached.contains(*name))
        .map(str::to_owned)
        .collect();
    Ok(report)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        writeln!(
            f,
            "replayed {} requests ({} other lines skipped): {} stay, {} move, {} undecidable",
            self.read,
            self.skipped,
            self.same,
            self.moved(),
            self.undecidable_total()
        )?;
        if !self.moves.is_empty() {
            writeln!(f, "would move:")?;
            let mut moves: Vec<_> = self.moves.iter().collect();
            moves.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(b.0)));
            for ((from, to), count) in moves {
                writeln!(
                    f,
                    "  {from} -> {}: {} (e.g. {})",
                    to.as_deref().unwrap_or("no route (404)"),
                    count.count,
                    count.examples.join(", ")
                )?;
            }
        }
        if !self.undecidable.is_empty() {
            writeln!(
                f,
                "undecidable (the route tests headers or cookies the log does not record):"
            )?;
            for (route, count) in &self.undecidable {
                writeln!(f, "  {route}: {count}")?;
            }
        }
        if !self.unreached.is_empty() {
            writeln!(
                f,
                "routes no logged request reaches: {}",
                self.unreached.join(", ")
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::config::{parse, Source};
    use crate::routes::table::TableMeta;

    fn table(text: &str) -> RouteTable {
        let source = Source::new(text.to_owned());
        let meta = TableMeta {
            version: 1,
            sha256: source.sha256.clone(),
            loaded_at: std::time::SystemTime::now(),
        };
        RouteTable::build(parse(&source.text).expect("valid file"), meta).expect("builds")
    }

    fn line(method: &str, path: &str, query: Option<&str>, route: &str) -> String {
        serde_json::json!({
            "timestamp": "2026-12-07T10:00:00Z", "level": "INFO", "message": "request",
            "method": method, "host": "api.example.com", "path": path, "query": query,
            "route": route, "status": 200, "target": "switchyard::access",
        })
        .to_string()
    }

    #[test]
    fn moves_are_grouped_and_header_routes_are_undecidable() {
        let file = "routes:\n  users:\n    prefix: /api/users\n    upstream: http://127.0.0.1:1\n  \
                    beta:\n    prefix: /api/beta\n    headers: { x-beta: \"on\" }\n    upstream: http://127.0.0.1:2\n  \
                    api:\n    prefix: /api\n    upstream: http://127.0.0.1:3\n  \
                    unused:\n    prefix: /never\n    upstream: http://127.0.0.1:4\n";
        let log = [
            line("GET", "/api/users/7", None, "api"),
            line("GET", "/api/users/8", Some("a=1"), "api"),
            line("GET", "/api/orders", None, "api"),
            line("GET", "/api/beta/x", None, "api"),
            line("GET", "/gone", None, "_none"),
            line("GET", "/old", None, "old"),
            "not json".to_owned(),
            r#"{"message":"route table reloaded","version":2}"#.to_owned(),
        ]
        .join("\n");
        let report = replay(&table(file), log.as_bytes()).expect("reads");
        assert_eq!(report.read, 6);
        assert_eq!(report.skipped, 2);
        assert_eq!(report.same, 2, "{report}");
        let users = &report.moves[&("api".to_owned(), Some("users".to_owned()))];
        assert_eq!(users.count, 2);
        assert_eq!(users.examples, ["GET /api/users/7", "GET /api/users/8?a=1"]);
        assert_eq!(report.moves[&("old".to_owned(), None)].count, 1);
        assert_eq!(report.undecidable["beta"], 1);
        assert_eq!(report.unreached, ["unused"]);
    }
}
