//! Locks and `.await`: which shapes of a handler the compiler lets
//! `tokio::spawn` take, pinned as doc tests so a toolchain that changes the
//! answer fails `cargo test --doc` instead of surprising a reader. No code
//! lives here; the route table itself is behind an `ArcSwap` (see
//! `routes::table` and `proxy::handler`), and `benches/locks.rs` measures
//! what each shape costs.
//!
//! The answers below hold for **rustc 1.95.0** (the toolchain this crate is
//! built and tested with; `rust-version` in `Cargo.toml` is only the floor).
//!
//! Every example shares one setup: a route map behind a
//! `std::sync::Mutex`, a lookup that clones the route out, then an upstream
//! call that really suspends.
//!
//! # Holding a `std::sync::MutexGuard` across `.await` does not compile
//!
//! The guard is `!Send`, so a future that keeps it alive over a suspension
//! point is `!Send`, and `tokio::spawn` (which may resume the task on another
//! worker) rejects it. This is the compiler catching a real bug: a task
//! parked on its upstream while holding the table's lock stalls every other
//! request on that lock for the whole round trip.
//!
//! ```compile_fail
//! use std::collections::HashMap;
//! use std::sync::{Arc, Mutex};
//!
//! async fn upstream(_to: String) {
//!     tokio::time::sleep(std::time::Duration::from_millis(1)).await;
//! }
//!
//! async fn handler(routes: Arc<Mutex<HashMap<String, String>>>) {
//!     let guard = routes.lock().unwrap();
//!     let to = guard.get("/api").cloned().unwrap_or_default();
//!     upstream(to).await;
//! }
//!
//! fn serve(routes: Arc<Mutex<HashMap<String, String>>>) {
//!     tokio::spawn(handler(routes));
//! }
//! ```
//!
//! # An explicit `drop(guard)` before `.await` still does not compile
//!
//! One would expect that moving the guard into `drop` ends it, and at run
//! time it does. The compiler's `Send` check for the future is more
//! conservative: once the guard has been borrowed (and using it at all
//! borrows it, through `Deref`), its slot counts as possibly live until the
//! end of its lexical scope, so the future still "holds" a `MutexGuard` at
//! the `.await`. On rustc 1.95.0 this is still rejected (upstream
//! rust-lang/rust#116680 tracks it). If a later toolchain accepts it, this
//! test fails and the page should be rewritten to say so.
//!
//! ```compile_fail
//! use std::collections::HashMap;
//! use std::sync::{Arc, Mutex};
//!
//! async fn upstream(_to: String) {
//!     tokio::time::sleep(std::time::Duration::from_millis(1)).await;
//! }
//!
//! async fn handler(routes: Arc<Mutex<HashMap<String, String>>>) {
//!     let guard = routes.lock().unwrap();
//!     let to = guard.get("/api").cloned().unwrap_or_default();
//!     drop(guard);
//!     upstream(to).await;
//! }
//!
//! fn serve(routes: Arc<Mutex<HashMap<String, String>>>) {
//!     tokio::spawn(handler(routes));
//! }
//! ```
//!
//! # A block scope compiles, and a short blocking lock is fine
//!
//! Ending the guard's scope before the `.await` is what the check
//! understands. The lock is then held for a hash lookup and a clone, well
//! under a microsecond, never across a suspension, so blocking a worker
//! thread on it costs about what any other short critical section costs;
//! `benches/locks.rs` cannot tell this form from `ArcSwap` on two cores.
//!
//! ```
//! use std::collections::HashMap;
//! use std::sync::{Arc, Mutex};
//!
//! async fn upstream(_to: String) {
//!     tokio::time::sleep(std::time::Duration::from_millis(1)).await;
//! }
//!
//! async fn handler(routes: Arc<Mutex<HashMap<String, String>>>) {
//!     let to = {
//!         let guard = routes.lock().unwrap();
//!         guard.get("/api").cloned().unwrap_or_default()
//!     };
//!     upstream(to).await;
//! }
//!
//! let routes = Arc::new(Mutex::new(HashMap::from([(
//!     "/api".to_owned(),
//!     "http://127.0.0.1:9001".to_owned(),
//! )])));
//! let runtime = tokio::runtime::Builder::new_multi_thread()
//!     .worker_threads(2)
//!     .enable_time()
//!     .build()
//!     .unwrap();
//! runtime.block_on(async { tokio::spawn(handler(routes)).await.unwrap() });
//! ```
//!
//! # `tokio::sync::Mutex` across `.await` compiles, and is the slow one
//!
//! Its guard is `Send`, so this is accepted, and it is correct, but every
//! request now waits for the one before it to finish its upstream call:
//! throughput is one request per round trip whatever the concurrency. The
//! compiler's objection to the `std` guard was pointing at this design
//! problem, not at the choice of mutex.
//!
//! ```
//! use std::collections::HashMap;
//! use std::sync::Arc;
//! use tokio::sync::Mutex;
//!
//! async fn upstream(_to: String) {
//!     tokio::time::sleep(std::time::Duration::from_millis(1)).await;
//! }
//!
//! async fn handler(routes: Arc<Mutex<HashMap<String, String>>>) {
//!     let guard = routes.lock().await;
//!     let to = guard.get("/api").cloned().unwrap_or_default();
//!     upstream(to).await;
//!     drop(guard);
//! }
//!
//! let routes = Arc::new(Mutex::new(HashMap::new()));
//! let runtime = tokio::runtime::Builder::new_multi_thread()
//!     .worker_threads(2)
//!     .enable_time()
//!     .build()
//!     .unwrap();
//! runtime.block_on(async { tokio::spawn(handler(routes)).await.unwrap() });
//! ```
