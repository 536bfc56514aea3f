//! Reload figures, measured against a real router in this process with a
//! real file and the real watcher:
//!
//! - latency: from the moment the write that completes the file returns to
//!   the first response served by the new table, over 100 edits (p50, p99);
//! - scale: a 10,000-route file read, parsed, validated, built and swapped in.
//!
//! `cargo bench --bench reload`

use std::time::{Duration, Instant};

use std::sync::Arc;

use arc_swap::ArcSwap;
use switchyard::reload::reloader;
use switchyard::routes::config::Source;
use switchyard::routes::table::RouteTable;
use switchyard::{Options, Switchyard};
use tokio::net::TcpListener;

mod common;

/// Edits measured; each waits for its own table before the next.
const EDITS: usize = 100;
/// An edit not served within this long counts as a failure (SPEC: 200 ms).
const GIVE_UP: Duration = Duration::from_secs(2);

fn hello_file(body: &str) -> String {
    format!(
        "routes:\n  hello:\n    prefix: /hello\n    respond: {{ status: 200, body: \"{body}\" }}\n"
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("routes.yaml");
    std::fs::write(&config, hello_file("v0"))?;
    let router = Switchyard::load(Options::new(&config))?;
    let reloader = Arc::clone(router.reloader());
    let proxy = TcpListener::bind("127.0.0.1:0").await?;
    let admin = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hello", proxy.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(router.serve(proxy, admin, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder().no_proxy().build()?;

    let mut latencies = Vec::with_capacity(EDITS);
    let mut failures = 0;
    for edit in 1..=EDITS {
        let body = format!("v{edit}");
        std::fs::write(&config, hello_file(&body))?;
        let written = Instant::now();
        loop {
            let served = client.get(&url).send().await?.text().await?;
            if served == body {
                latencies.push(written.elapsed());
                break;
            }
            if written.elapsed() > GIVE_UP {
                failures += 1;
                break;
            }
        }
    }
    latencies.sort();
    let percentile =
        |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1)];
    println!(
        "reload latency over {EDITS} edits: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, not served within {GIVE_UP:?}: {failures}",
        ms(percentile(0.50)),
        ms(percentile(0.99)),
        ms(latencies[latencies.len() - 1]),
    );

    // Scale, measured twice: the work itself (read, parse, validate, build,
    // swap) called directly, and the whole path an operator sees, from the
    // write to the new table being live through the watcher.
    let big = common::route_file(10_000);
    let scratch = dir.path().join("scratch").join("routes.yaml");
    std::fs::create_dir_all(scratch.parent().ok_or("no parent")?)?;
    std::fs::write(&scratch, &big)?;
    let swap = ArcSwap::from_pointee(RouteTable::empty());
    let mut rounds = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let source = Source::read(&scratch)?;
        let table = Arc::new(reloader::build(&source, 1)?);
        swap.store(table);
        rounds.push(format!("{:.1}", ms(started.elapsed())));
    }
    println!(
        "10,000-route file read, parsed, validated, built and swapped, 5 rounds: {} ms",
        rounds.join(", ")
    );
    let before = reloader.live().load().meta.version;
    std::fs::write(&config, &big)?;
    let written = Instant::now();
    while reloader.live().load().meta.version == before && written.elapsed() < GIVE_UP {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    println!(
        "10,000-route file from write to live through the watcher: {:.1} ms (includes the {:?} debounce)",
        ms(written.elapsed()),
        switchyard::reload::watch::DEBOUNCE
    );

    let _ = stop.send(());
    server.await??;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
