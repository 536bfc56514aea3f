//! What one request pays to get the route table, with another thread reading
//! the same handle and a writer replacing the table every millisecond (a
//! reload storm). The ways compared are the ones async Rust code reaches for:
//! `ArcSwap::load_full` (what Switchyard does), `std::sync::RwLock<Arc<_>>`,
//! `std::sync::Mutex<Arc<_>>` and `tokio::sync::RwLock<Arc<_>>`.
//!
//! `cargo bench --bench snapshot`

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, Criterion};
use switchyard::routes::table::{RouteTable, TableMeta};

/// How often the writer swaps in a new table: far more often than any real
/// reload, to make writer contention visible.
const SWAP_EVERY: Duration = Duration::from_millis(1);

fn table(version: u64) -> Arc<RouteTable> {
    let mut table = RouteTable::empty();
    table.meta = TableMeta {
        version,
        sha256: String::new(),
        loaded_at: SystemTime::now(),
    };
    Arc::new(table)
}

/// Runs `bench` while one thread reads and another writes through the same
/// handle; both stop when the bench ends.
fn contended<H: Send + Sync + 'static>(
    c: &mut Criterion,
    name: &str,
    handle: H,
    read: fn(&H) -> Arc<RouteTable>,
    write: fn(&H, Arc<RouteTable>),
) {
    let handle = Arc::new(handle);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (handle, stop) = (Arc::clone(&handle), Arc::clone(&stop));
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                black_box(read(&handle));
            }
        })
    };
    let writer = {
        let (handle, stop) = (Arc::clone(&handle), Arc::clone(&stop));
        thread::spawn(move || {
            let mut version = 1;
            while !stop.load(Ordering::Relaxed) {
                version += 1;
                write(&handle, table(version));
                thread::sleep(SWAP_EVERY);
            }
        })
    };
    c.bench_function(name, |b| b.iter(|| black_box(read(&handle).meta.version)));
    stop.store(true, Ordering::Relaxed);
    let _ = (reader.join(), writer.join());
}

fn snapshot(c: &mut Criterion) {
    contended(
        c,
        "snapshot/arc_swap_load_full",
        ArcSwap::new(table(1)),
        |h| h.load_full(),
        |h, t| h.store(t),
    );
    contended(
        c,
        "snapshot/std_rwlock",
        RwLock::new(table(1)),
        |h| Arc::clone(&h.read().unwrap_or_else(|e| e.into_inner())),
        |h, t| *h.write().unwrap_or_else(|e| e.into_inner()) = t,
    );
    contended(
        c,
        "snapshot/std_mutex",
        Mutex::new(table(1)),
        |h| Arc::clone(&h.lock().unwrap_or_else(|e| e.into_inner())),
        |h, t| *h.lock().unwrap_or_else(|e| e.into_inner()) = t,
    );
    contended(
        c,
        "snapshot/tokio_rwlock",
        tokio::sync::RwLock::new(table(1)),
        |h| Arc::clone(&h.blocking_read()),
        |h, t| *h.blocking_write() = t,
    );
}

criterion_group!(benches, snapshot);
criterion_main!(benches);
