//! Four ways to share a route table between async handlers, measured as
//! requests per second: a handler looks a route up in a 100-route
//! `HashMap<String, Route>`, clones it out, and awaits a call to a real
//! upstream on loopback that answers after about a millisecond. The ways:
//! `tokio::sync::Mutex` held across the call, `std::sync::Mutex` and
//! `std::sync::RwLock` taken inside a block that ends before the call, and
//! `ArcSwap::load_full` (what Switchyard does). Each at 1, 10, 100 and 1,000
//! concurrent tasks, again with no upstream at all (the lock's own cost),
//! and all of it again while a writer replaces the whole map every
//! millisecond.
//!
//! `cargo bench --bench locks`; `LOCKS_SECS` sets each cell's length
//! (default 0.3), `LOCKS_ROUNDS` how many interleaved rounds the medians are
//! taken over (default 5), `LOCKS_CSV` where the CSV goes (default
//! `target/locks.csv`).
//! `python3 benches/locks_chart.py` turns the CSV into `docs/locks.svg`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::time::MissedTickBehavior;

/// Worker threads of the measured runtime: the machine's two cores.
const WORKERS: usize = 2;
const ROUTES: usize = 100;
const CONCURRENCY: [usize; 4] = [1, 10, 100, 1_000];
/// Tasks in the no-wait cells. With two workers only two run at once, so
/// this mostly sets how often a task finds the lock taken by the other.
const NO_WAIT_TASKS: usize = 100;
/// No-wait tasks never suspend on their own; yielding this often lets the
/// writer's timer (and the other tasks) run without measurably taxing the
/// lookups.
const LOOKUPS_PER_YIELD: u64 = 64;
const UPSTREAM_DELAY: Duration = Duration::from_millis(1);
const SWAP_EVERY: Duration = Duration::from_millis(1);
/// Caps that keep every loop finite even if the clock misbehaves.
const MAX_REQUESTS_PER_TASK: u64 = 100_000_000;
const MAX_SWAPS: u64 = 10_000_000;
const MAX_UPSTREAM_LINES: u64 = 1_000_000_000;

/// What a handler clones out of the table: small, but with owned strings, as
/// a real route has.
#[derive(Clone)]
struct Route {
    name: String,
    upstream: String,
    timeout: Duration,
    retries: u8,
}

type Map = HashMap<String, Route>;

/// A fresh map, as a reload would build it; `generation` makes each one
/// differ so a swap is a real replacement.
fn route_map(generation: u64) -> Map {
    (0..ROUTES)
        .map(|i| {
            let route = Route {
                name: format!("route-{i}"),
                upstream: format!("http://10.0.{}.{i}:8080", generation % 256),
                timeout: Duration::from_secs(30),
                retries: 2,
            };
            (key(i), route)
        })
        .collect()
}

fn key(i: usize) -> String {
    format!("/api/service{i}")
}

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    TokioMutex,
    StdMutex,
    StdRwLock,
    ArcSwap,
}

const VARIANTS: [Variant; 4] = [
    Variant::TokioMutex,
    Variant::StdMutex,
    Variant::StdRwLock,
    Variant::ArcSwap,
];

impl Variant {
    fn id(self) -> &'static str {
        match self {
            Variant::TokioMutex => "tokio_mutex_held",
            Variant::StdMutex => "std_mutex_block",
            Variant::StdRwLock => "std_rwlock_block",
            Variant::ArcSwap => "arc_swap_load_full",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Variant::TokioMutex => "`tokio::sync::Mutex`, held across the call",
            Variant::StdMutex => "`std::sync::Mutex`, block scope",
            Variant::StdRwLock => "`std::sync::RwLock`, block scope",
            Variant::ArcSwap => "`ArcSwap::load_full` (Switchyard)",
        }
    }

    fn table(self) -> Table {
        let map = route_map(0);
        match self {
            Variant::TokioMutex => Table::TokioMutex(tokio::sync::Mutex::new(map)),
            Variant::StdMutex => Table::StdMutex(Mutex::new(map)),
            Variant::StdRwLock => Table::StdRwLock(RwLock::new(map)),
            Variant::ArcSwap => Table::ArcSwap(ArcSwap::from_pointee(map)),
        }
    }
}

enum Table {
    TokioMutex(tokio::sync::Mutex<Map>),
    StdMutex(Mutex<Map>),
    StdRwLock(RwLock<Map>),
    ArcSwap(ArcSwap<Map>),
}

/// One task's connection to the upstream, kept for the whole run so the
/// cells measure requests, not connects.
struct Conn {
    stream: BufStream<TcpStream>,
    line: String,
}

impl Conn {
    async fn open(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        // Without it Nagle and delayed ACKs would add tens of milliseconds.
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream: BufStream::new(stream),
            line: String::new(),
        })
    }

    async fn call(&mut self, route: &Route) -> io::Result<()> {
        self.stream.write_all(route.name.as_bytes()).await?;
        self.stream.write_all(b"\n").await?;
        self.stream.flush().await?;
        self.line.clear();
        if self.stream.read_line(&mut self.line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }
}

/// The upstream: answers each line after `UPSTREAM_DELAY`. It runs on its
/// own thread and runtime, as another process would, so the measured
/// runtime's workers only run handlers and the writer.
fn start_upstream(until: Instant) -> io::Result<(SocketAddr, oneshot::Sender<()>)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel();
    std::thread::spawn(move || {
        runtime.block_on(async move {
            let accept = async {
                for _ in 0..CONCURRENCY[CONCURRENCY.len() - 1] * 2 {
                    let Ok((stream, _)) = listener.accept().await else {
                        break;
                    };
                    tokio::spawn(answer(stream, until));
                }
                std::future::pending::<()>().await;
            };
            tokio::select! {
                _ = accept => {}
                _ = stopped => {}
                _ = tokio::time::sleep_until(until.into()) => {}
            }
        });
    });
    Ok((addr, stop))
}

async fn answer(stream: TcpStream, until: Instant) {
    if stream.set_nodelay(true).is_err() {
        return;
    }
    let mut stream = BufStream::new(stream);
    let mut line = String::new();
    for _ in 0..MAX_UPSTREAM_LINES {
        line.clear();
        match stream.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if Instant::now() >= until {
            return;
        }
        tokio::time::sleep(UPSTREAM_DELAY).await;
        if stream.write_all(b"ok\n").await.is_err() || stream.flush().await.is_err() {
            return;
        }
    }
}

/// One request, in the shape of the variant. `deadline` is checked after
/// taking the tokio lock: a task that queued for it before the end of the
/// cell would otherwise still make its full round trip, and with 1,000
/// tasks in the queue that is seconds of tail.
async fn handle(
    table: &Table,
    key: &str,
    conn: Option<&mut Conn>,
    deadline: Option<Instant>,
) -> io::Result<bool> {
    match table {
        // The deliberate bad example: the guard lives across the upstream
        // call, so every request waits for the one before it. Clippy does not
        // flag it (its lint covers `std` and `parking_lot` guards only),
        // which is part of the point.
        Table::TokioMutex(lock) => {
            let routes = lock.lock().await;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            let route = routes.get(key).cloned();
            call(route, conn).await?;
            drop(routes);
        }
        Table::StdMutex(lock) => {
            let route = {
                let routes = lock.lock().unwrap_or_else(PoisonError::into_inner);
                routes.get(key).cloned()
            };
            call(route, conn).await?;
        }
        Table::StdRwLock(lock) => {
            let route = {
                let routes = lock.read().unwrap_or_else(PoisonError::into_inner);
                routes.get(key).cloned()
            };
            call(route, conn).await?;
        }
        // The handler keeps its snapshot for the whole request, as
        // Switchyard's does; the clone is there so every variant does the
        // same work.
        Table::ArcSwap(swap) => {
            let routes = swap.load_full();
            let route = routes.get(key).cloned();
            call(route, conn).await?;
            drop(routes);
        }
    }
    Ok(true)
}

async fn call(route: Option<Route>, conn: Option<&mut Conn>) -> io::Result<()> {
    let Some(route) = route else {
        return Err(io::Error::other("route missing from the table"));
    };
    match conn {
        Some(conn) => conn.call(&route).await,
        None => {
            black_box((&route.upstream, route.timeout, route.retries));
            Ok(())
        }
    }
}

/// One cell's result, the median over the rounds with their spread.
struct Cell {
    variant: Variant,
    writer: bool,
    /// `None` for the no-wait cells.
    concurrency: Option<usize>,
    /// Requests (or lookups) per second in each round.
    rates: Vec<f64>,
    /// The writer's swaps per second in each round.
    swap_rates: Vec<f64>,
}

impl Cell {
    fn per_second(&self) -> f64 {
        median(&self.rates)
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Replaces the whole map every `SWAP_EVERY`, built outside the lock as a
/// reload builds it; counts the swaps that landed before `deadline`.
async fn write(table: Arc<Table>, deadline: Instant, swaps: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(SWAP_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    for generation in 1..=MAX_SWAPS {
        tick.tick().await;
        if Instant::now() >= deadline {
            return;
        }
        let map = route_map(generation);
        // The old map is dropped after the lock is released, so the writer's
        // critical section is only the pointer-sized swap.
        let old = match &*table {
            Table::TokioMutex(lock) => Some(std::mem::replace(&mut *lock.lock().await, map)),
            Table::StdMutex(lock) => Some(std::mem::replace(
                &mut *lock.lock().unwrap_or_else(PoisonError::into_inner),
                map,
            )),
            Table::StdRwLock(lock) => Some(std::mem::replace(
                &mut *lock.write().unwrap_or_else(PoisonError::into_inner),
                map,
            )),
            Table::ArcSwap(swap) => {
                swap.store(Arc::new(map));
                None
            }
        };
        drop(old);
        if Instant::now() < deadline {
            swaps.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Runs one cell: `tasks` handlers for `length`, each with a connection
/// from `pool` when `upstream` is set, optionally with the writer. The
/// connections go back into `pool` afterwards.
async fn run_cell(
    variant: Variant,
    writer: bool,
    tasks: usize,
    upstream: bool,
    pool: &mut Vec<Conn>,
    keys: &Arc<Vec<String>>,
    length: Duration,
) -> io::Result<(u64, f64, u64)> {
    let table = Arc::new(variant.table());
    let start = Instant::now();
    let deadline = start + length;
    let swaps = Arc::new(AtomicU64::new(0));
    let writer =
        writer.then(|| tokio::spawn(write(Arc::clone(&table), deadline, Arc::clone(&swaps))));
    let mut handles = Vec::with_capacity(tasks);
    for t in 0..tasks {
        let mut conn = if upstream {
            Some(
                pool.pop()
                    .ok_or_else(|| io::Error::other("connection pool too small"))?,
            )
        } else {
            None
        };
        let (table, keys) = (Arc::clone(&table), Arc::clone(keys));
        handles.push(tokio::spawn(async move {
            let mut done = 0u64;
            let mut next = t;
            if conn.is_some() {
                for _ in 0..MAX_REQUESTS_PER_TASK {
                    if Instant::now() >= deadline {
                        break;
                    }
                    next = (next + 1) % keys.len();
                    if !handle(&table, &keys[next], conn.as_mut(), Some(deadline)).await? {
                        break;
                    }
                    done += 1;
                }
            } else {
                // Reading the clock every lookup would cost about as much as
                // the lookup, so it is read once per batch.
                for _ in 0..MAX_REQUESTS_PER_TASK / LOOKUPS_PER_YIELD {
                    for _ in 0..LOOKUPS_PER_YIELD {
                        next = (next + 1) % keys.len();
                        handle(&table, &keys[next], None, None).await?;
                        done += 1;
                    }
                    if Instant::now() >= deadline {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
            }
            io::Result::Ok((done, conn))
        }));
    }
    let mut done = 0;
    let mut failed = None;
    for handle in handles {
        match handle.await.map_err(io::Error::other) {
            Ok(Ok((n, conn))) => {
                done += n;
                pool.extend(conn);
            }
            Ok(Err(error)) | Err(error) => failed = Some(error),
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    if let Some(writer) = writer {
        writer.abort();
        let _ = writer.await;
    }
    match failed {
        Some(error) => Err(error),
        None => Ok((done, seconds, swaps.load(Ordering::Relaxed))),
    }
}

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(default)
}

fn main() -> io::Result<()> {
    // Both bounded so that a typo cannot make the run take hours.
    let length = Duration::from_secs_f64(env_f64("LOCKS_SECS", 0.3).min(30.0));
    let rounds = env_f64("LOCKS_ROUNDS", 5.0).clamp(1.0, 20.0) as usize;
    let csv_path = std::env::var_os("LOCKS_CSV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/locks.csv"));
    let passes: Vec<Option<usize>> = CONCURRENCY.map(Some).into_iter().chain([None]).collect();
    let total_cells = (rounds * VARIANTS.len() * 2 * passes.len()) as u32;
    // The whole run, with room for warm-up and connects; past it the
    // upstream stops answering, so nothing can hang.
    let budget = length * (total_cells + 4) + Duration::from_secs(30);
    let began = Instant::now();
    let (addr, stop_upstream) = start_upstream(began + budget)?;

    let runtime: Runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()?;
    let keys = Arc::new((0..ROUTES).map(key).collect::<Vec<_>>());
    let mut cells: Vec<Cell> = Vec::new();
    for variant in VARIANTS {
        for writer in [false, true] {
            for &concurrency in &passes {
                cells.push(Cell {
                    variant,
                    writer,
                    concurrency,
                    rates: Vec::new(),
                    swap_rates: Vec::new(),
                });
            }
        }
    }
    runtime.block_on(async {
        let most = CONCURRENCY[CONCURRENCY.len() - 1];
        let mut pool = Vec::with_capacity(most);
        for _ in 0..most {
            pool.push(Conn::open(addr).await?);
        }
        // Warms caches, the allocator and the upstream's tasks; not recorded.
        run_cell(
            Variant::ArcSwap,
            false,
            most,
            true,
            &mut pool,
            &keys,
            length / 2,
        )
        .await?;

        // Rounds interleave the cells, so a burst of noise from elsewhere on
        // the machine lands on one sample of several cells rather than on
        // every sample of one; each round starts with a different variant.
        for round in 0..rounds {
            let count = cells.len();
            let stride = count / VARIANTS.len();
            for k in 0..count {
                let cell = &mut cells[(k + round * stride) % count];
                let (tasks, upstream) = match cell.concurrency {
                    Some(n) => (n, true),
                    None => (NO_WAIT_TASKS, false),
                };
                let (done, seconds, swaps) = run_cell(
                    cell.variant,
                    cell.writer,
                    tasks,
                    upstream,
                    &mut pool,
                    &keys,
                    length,
                )
                .await?;
                cell.rates.push(done as f64 / seconds);
                cell.swap_rates.push(swaps as f64 / seconds);
                eprintln!(
                    "round {} {:<20} writer={:<5} {:>10} {:>12.0}/s  swaps {swaps}",
                    round + 1,
                    cell.variant.id(),
                    cell.writer,
                    cell.concurrency
                        .map_or("no wait".to_owned(), |n| format!("{n} tasks")),
                    done as f64 / seconds,
                );
            }
        }
        io::Result::Ok(())
    })?;
    let _ = stop_upstream.send(());
    runtime.shutdown_timeout(Duration::from_secs(1));

    print!("{}", markdown(&cells));
    println!(
        "\nmedians of {rounds} rounds of {:.2} s per cell; whole run {:.1} s",
        length.as_secs_f64(),
        began.elapsed().as_secs_f64()
    );
    if let Some(dir) = csv_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&csv_path, csv(&cells))?;
    println!("CSV: {}", csv_path.display());
    Ok(())
}

fn csv(cells: &[Cell]) -> String {
    let mut out = String::from(
        "variant,writer,mode,concurrency,rounds,per_second,min_per_second,max_per_second,writer_swaps_per_second\n",
    );
    for c in cells {
        let (mode, concurrency) = match c.concurrency {
            Some(n) => ("upstream", n),
            None => ("no_wait", NO_WAIT_TASKS),
        };
        let min = c.rates.iter().copied().fold(f64::INFINITY, f64::min);
        let max = c.rates.iter().copied().fold(0.0, f64::max);
        let _ = writeln!(
            out,
            "{},{},{mode},{concurrency},{},{:.1},{min:.1},{max:.1},{:.1}",
            c.variant.id(),
            if c.writer { "on" } else { "off" },
            c.rates.len(),
            c.per_second(),
            median(&c.swap_rates)
        );
    }
    out
}

fn markdown(cells: &[Cell]) -> String {
    let mut out = String::from("| variant | writer |");
    for n in CONCURRENCY {
        let noun = if n == 1 { "task" } else { "tasks" };
        let _ = write!(out, " {} {noun} |", thousands(n as f64));
    }
    out.push_str(" no wait, lookups/s | writer swaps/s at 1,000 tasks |\n|---|---|");
    out.push_str(&"---:|".repeat(CONCURRENCY.len() + 2));
    out.push('\n');
    for variant in VARIANTS {
        for writer in [false, true] {
            let row: Vec<&Cell> = cells
                .iter()
                .filter(|c| c.variant == variant && c.writer == writer)
                .collect();
            let _ = write!(
                out,
                "| {} | {} |",
                variant.label(),
                if writer { "on" } else { "off" }
            );
            for n in CONCURRENCY {
                match row.iter().find(|c| c.concurrency == Some(n)) {
                    Some(c) => {
                        let _ = write!(out, " {} |", thousands(c.per_second()));
                    }
                    None => out.push_str(" - |"),
                }
            }
            match row.iter().find(|c| c.concurrency.is_none()) {
                Some(c) => {
                    let _ = write!(out, " {:.1}M |", c.per_second() / 1e6);
                }
                None => out.push_str(" - |"),
            }
            match row.iter().find(|c| c.concurrency == Some(1_000)) {
                Some(c) if writer => {
                    let _ = write!(out, " {} |", thousands(median(&c.swap_rates)));
                }
                _ => out.push_str(" - |"),
            }
            out.push('\n');
        }
    }
    out
}

/// `45312.7` as `45,313`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    out
}
