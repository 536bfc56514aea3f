//! Where log lines go: a writer that never makes a request wait on stderr.
//!
//! Every thread appends whole lines to a buffer of its own, and one
//! background thread writes all buffers out every [`FLUSH_INTERVAL`] (or
//! sooner when a buffer fills). A request thread's cost is one uncontended
//! lock while its line goes into the buffer; it never makes a system call
//! for its access-log line and never wakes another thread, which a channel
//! to a writer thread would do once per line. The lock is held while one
//! line is written, never across an `.await` (logging is synchronous).
//!
//! When stderr cannot keep up, a full buffer drops new lines instead of
//! blocking the request; dropped lines are counted and reported.

use std::cell::RefCell;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How long a line may wait before it is written: short enough that `tail
/// -f` feels live, long enough to batch thousands of lines per write.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// A thread's buffer above this size wakes the writer early; above four
/// times this size, new lines are dropped rather than grow memory without
/// bound while stderr is stuck.
const SHARD_SOFT_LIMIT: usize = 256 * 1024;
const SHARD_HARD_LIMIT: usize = 4 * SHARD_SOFT_LIMIT;

#[derive(Default)]
struct Shard {
    lines: Mutex<Vec<u8>>,
}

struct Shared {
    shards: Mutex<Vec<Arc<Shard>>>,
    dropped: AtomicU64,
    stop: AtomicBool,
}

/// The `MakeWriter` handed to tracing-subscriber.
#[derive(Clone)]
pub struct BatchedStderr {
    shared: Arc<Shared>,
    flusher: Arc<thread::Thread>,
}

/// Writes out what is buffered when dropped; keep it alive in `main`.
pub struct FlushGuard {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
}

thread_local! {
    /// This thread's buffer. One writer exists per process, so a plain
    /// thread-local is enough to find it.
    static LOCAL_SHARD: RefCell<Option<Arc<Shard>>> = const { RefCell::new(None) };
}

impl BatchedStderr {
    /// Starts the writer thread.
    pub fn start() -> io::Result<(BatchedStderr, FlushGuard)> {
        let shared = Arc::new(Shared {
            shards: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let flusher = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("switchyard-log".into())
                .spawn(move || flush_loop(&shared))?
        };
        let writer = BatchedStderr {
            shared: Arc::clone(&shared),
            flusher: Arc::new(flusher.thread().clone()),
        };
        Ok((
            writer,
            FlushGuard {
                shared,
                flusher: Some(flusher),
            },
        ))
    }

    fn local_shard(&self) -> Arc<Shard> {
        LOCAL_SHARD
            .with(|local| Arc::clone(local.borrow_mut().get_or_insert_with(|| self.new_shard())))
    }
}

impl BatchedStderr {
    /// Lets `write` append one whole line to this thread's buffer, in
    /// place: no line of its own, no second copy. The lock is this thread's
    /// buffer's, which only the writer thread takes besides, every
    /// [`FLUSH_INTERVAL`]. A line that would pass the hard limit is taken
    /// back and counted as dropped.
    pub fn append(&self, write: impl FnOnce(&mut Vec<u8>)) {
        LOCAL_SHARD.with(|local| {
            let mut local = local.borrow_mut();
            let shard = local.get_or_insert_with(|| self.new_shard());
            let mut lines = lock(&shard.lines);
            let before = lines.len();
            write(&mut lines);
            if lines.len() > SHARD_HARD_LIMIT {
                lines.truncate(before);
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            } else if lines.len() > SHARD_SOFT_LIMIT {
                self.flusher.unpark();
            }
        });
    }

    fn new_shard(&self) -> Arc<Shard> {
        let shard = Arc::new(Shard::default());
        lock(&self.shared.shards).push(Arc::clone(&shard));
        shard
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchedStderr {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            shard: self.local_shard(),
            owner: self.clone(),
        }
    }
}

/// Appends to the calling thread's buffer. tracing-subscriber formats an
/// event completely and then writes it with one `write_all`, so lines from
/// different threads never interleave.
pub struct LineWriter {
    shard: Arc<Shard>,
    owner: BatchedStderr,
}

impl Write for LineWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut lines = lock(&self.shard.lines);
        if lines.len() + bytes.len() > SHARD_HARD_LIMIT {
            self.owner.shared.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            lines.extend_from_slice(bytes);
            if lines.len() > SHARD_SOFT_LIMIT {
                self.owner.flusher.unpark();
            }
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(flusher) = self.flusher.take() {
            flusher.thread().unpark();
            let _ = flusher.join();
        }
    }
}

fn flush_loop(shared: &Shared) {
    let mut batch = Vec::new();
    loop {
        thread::park_timeout(FLUSH_INTERVAL);
        let stopping = shared.stop.load(Ordering::SeqCst);
        let shards: Vec<Arc<Shard>> = lock(&shared.shards).clone();
        for shard in shards {
            batch.append(&mut lock(&shard.lines));
        }
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            batch.extend_from_slice(
                format!("switchyard: {dropped} log lines dropped: stderr is not keeping up\n")
                    .as_bytes(),
            );
        }
        if !batch.is_empty() {
            let mut stderr = io::stderr().lock();
            // Nowhere to report a failed write to; the next batch tries again.
            let _ = stderr.write_all(&batch).and_then(|()| stderr.flush());
            batch.clear();
        }
        if stopping {
            return;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a log buffer leaves bytes, never a broken
    // invariant; keep logging.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
