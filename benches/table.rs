//! Route table costs: lookup time against table size, 10 to 100,000 routes
//! (it should stay flat: hash lookups per host label and path segment, not
//! a scan), the same with conditions to check (SPEC 7.1), and the time to
//! parse, validate and build a 10,000-route file.
//!
//! `cargo bench --bench table`

use std::hint::black_box;
use std::time::SystemTime;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, HeaderValue, Method};
use switchyard::routes::config;
use switchyard::routes::table::{RequestFacts, RouteTable, TableMeta};

mod common;
use common::{route_file, route_file_with_conditions};

fn build(yaml: &str) -> RouteTable {
    let meta = TableMeta {
        version: 1,
        sha256: String::new(),
        loaded_at: SystemTime::now(),
    };
    match config::parse(yaml).and_then(|c| RouteTable::build(c, meta)) {
        Ok(table) => table,
        Err(error) => panic!("bench route file is invalid: {error}"),
    }
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup");
    let headers = HeaderMap::new();
    for n in [10, 1_000, 10_000, 100_000] {
        let table = build(&route_file(n));
        let last = n - 1;
        let path = format!("/api/v{}/service{last}/items/42", last % 7);
        let host = format!("svc{}.example.com", last % 97);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let facts = RequestFacts {
                    host: Some(black_box(&host)),
                    path: black_box(&path),
                    query: None,
                    method: &Method::GET,
                    headers: &headers,
                };
                black_box(table.lookup(&facts).map(|r| r.name().len()))
            })
        });
    }
    group.finish();
}

/// A request that the conditional sibling of its route takes (every
/// condition checked and holding), and one it does not (a condition fails
/// and the plain route takes it), at 10,000 routes plus their siblings.
fn lookup_with_conditions(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup_with_conditions");
    let n = 10_000;
    let table = build(&route_file_with_conditions(n));
    let last = n - 4;
    let path = format!("/api/v{}/service{last}/items/42", last % 7);
    let host = format!("svc{}.example.com", last % 97);
    let mut matching = HeaderMap::new();
    matching.insert("x-tenant", HeaderValue::from_static("acme"));
    matching.insert("x-canary", HeaderValue::from_static("1"));
    matching.insert(
        http::header::COOKIE,
        HeaderValue::from_static("theme=dark; beta=on"),
    );
    let mut failing = matching.clone();
    failing.insert("x-canary", HeaderValue::from_static("0"));
    for (name, headers) in [("all_hold", &matching), ("one_fails", &failing)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let facts = RequestFacts {
                    host: Some(black_box(&host)),
                    path: black_box(&path),
                    query: Some(black_box("page=3&version=2")),
                    method: &Method::GET,
                    headers,
                };
                black_box(table.lookup(&facts).map(|r| r.name().len()))
            })
        });
    }
    group.finish();
}

fn build_10k(c: &mut Criterion) {
    let yaml = route_file(10_000);
    let mut group = c.benchmark_group("build");
    group.sample_size(10);
    group.bench_function("parse_validate_build_10k_routes", |b| {
        b.iter(|| build(black_box(&yaml)))
    });
    group.finish();
}

criterion_group!(benches, lookup, lookup_with_conditions, build_10k);
criterion_main!(benches);
