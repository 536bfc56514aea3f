//! Where log lines go: a writer that never makes a request wait on stderr,
//! and never makes it take a lock.
//!
//! Every thread appends whole lines to a buffer of its own, a plain
//! thread-local that no other thread touches. A full buffer is handed, as
//! a whole, to one background writer thread over a bounded channel; the
//! writer takes what has arrived every [`FLUSH_INTERVAL`], writes each
//! buffer with one system call and sends it back empty for reuse. A request
//! thread's cost is a copy of its line; the hand-off is a lock-free queue
//! push once per 64 KiB of lines, and a busy writer is never woken for it.
//!
//! Request threads opt into batching ([`batch_this_thread`]) and hand their
//! buffer off one interval after its first line ([`hand_off_when_lines_wait`]),
//! since an idle thread would otherwise keep its last lines. Every other
//! thread (start-up, reloads, the admin API) hands off each line as it
//! writes it: those lines are few, and each should be out within one
//! interval.
//!
//! Nothing here runs on a clock while there is nothing to write: a sidecar
//! with no traffic should not wake its CPU. A batching thread's hand-off
//! task sleeps until a line lands in an empty buffer (a wake on the same
//! thread, no system call), and the writer, after an interval with nothing
//! to write, parks until a hand-off finds it asleep (one wake per idle to
//! busy turn, not per buffer).
//!
//! When stderr cannot keep up and the queue is full, a buffer's lines are
//! dropped instead of blocking the request; they are counted and reported.

use std::cell::RefCell;
use std::future::Future;
use std::io::{self, Write};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::task::{Poll, Waker};
use std::thread::{self, JoinHandle, Thread};
use std::time::Duration;

/// How long a line may wait before it is written: short enough that `tail
/// -f` feels live, long enough to batch thousands of lines per write.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// A batching thread's buffer this full goes to the writer before its
/// timer: at 40,000 access lines a second, every 6 ms or so.
const HAND_OFF_AT: usize = 64 * 1024;

/// Buffers on their way to the writer, which takes them every
/// [`FLUSH_INTERVAL`] while it is busy, without being woken (waking it
/// would be a system call on the request path); a hand-off beyond this many
/// drops its lines. That is 40 MB/s of log lines, and 2 MiB at most while
/// stderr is stuck.
const QUEUE_DEPTH: usize = 32;

/// A batching thread's buffer: room for the lines before a hand-off and
/// one more, so that it does not grow (and double) as it fills.
const BUFFER_CAPACITY: usize = HAND_OFF_AT + 16 * 1024;

struct Shared {
    dropped: AtomicU64,
    stop: AtomicBool,
    /// Set by the writer when it parks with nothing to write; the hand-off
    /// that takes it back wakes the writer.
    asleep: AtomicBool,
    /// The writer thread, for that wake.
    writer: OnceLock<Thread>,
}

impl Shared {
    /// Wakes the writer if it sleeps. Called after a buffer is queued.
    fn wake_writer(&self) {
        // Pairs with the fence in `sleep_until_handed_off`: either the
        // writer finds this buffer in the queue, or this finds it asleep.
        fence(Ordering::SeqCst);
        if self.asleep.load(Ordering::Relaxed) && self.asleep.swap(false, Ordering::SeqCst) {
            if let Some(writer) = self.writer.get() {
                writer.unpark();
            }
        }
    }
}

/// Lines for the writer, and where a batching thread wants the emptied
/// buffer back: reusing it keeps the thread's buffer in memory it has
/// touched, instead of growing a fresh one for every hand-off.
struct Filled {
    lines: Vec<u8>,
    give_back: Option<SyncSender<Vec<u8>>>,
}

/// A batching thread's emptied buffers, on their way back from the writer.
struct Spares {
    give_back: SyncSender<Vec<u8>>,
    returned: Receiver<Vec<u8>>,
}

/// The `MakeWriter` handed to tracing-subscriber, and the access log's
/// output.
#[derive(Clone)]
pub struct BatchedStderr {
    shared: Arc<Shared>,
    to_writer: SyncSender<Filled>,
}

/// Writes out what is buffered when dropped; keep it alive in `main`.
pub struct FlushGuard {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
}

/// One thread's lines not yet handed to the writer.
struct Local {
    lines: Vec<u8>,
    /// Set on the first line; one writer exists per process.
    writer: Option<BatchedStderr>,
    /// Set when lines wait for a full buffer or this thread's timer.
    spares: Option<Spares>,
    /// This thread's hand-off task, asleep until a line arrives.
    waiting: Option<Waker>,
}

impl Local {
    fn hand_off(&mut self) {
        let Some(writer) = &self.writer else {
            return;
        };
        if self.lines.is_empty() {
            return;
        }
        let (next, give_back) = match &self.spares {
            Some(spares) => (
                spares
                    .returned
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(BUFFER_CAPACITY)),
                Some(spares.give_back.clone()),
            ),
            None => (Vec::new(), None),
        };
        let lines = std::mem::replace(&mut self.lines, next);
        match writer.to_writer.try_send(Filled { lines, give_back }) {
            Ok(()) => writer.shared.wake_writer(),
            Err(TrySendError::Full(Filled { lines, .. })) => {
                let count = lines.iter().filter(|&&b| b == b'\n').count();
                writer
                    .shared
                    .dropped
                    .fetch_add(count as u64, Ordering::Relaxed);
            }
            // The writer has stopped (the process is ending): nothing is
            // batched any more, so write the lines straight out.
            Err(TrySendError::Disconnected(Filled { lines, .. })) => {
                let _ = io::stderr().lock().write_all(&lines);
            }
        }
    }
}

impl Drop for Local {
    /// A thread's last lines leave with it.
    fn drop(&mut self) {
        self.hand_off();
    }
}

thread_local! {
    static LOCAL: RefCell<Local> = const {
        RefCell::new(Local {
            lines: Vec::new(),
            writer: None,
            spares: None,
            waiting: None,
        })
    };
}

/// From now on this thread's lines wait for a full buffer or for
/// [`hand_off_when_lines_wait`], which the caller must run on this thread
/// (a current-thread runtime's task).
pub fn batch_this_thread() {
    // Enough for what a busy thread has in the queue at once; a buffer
    // beyond that is freed.
    let (give_back, returned) = mpsc::sync_channel(8);
    let _ = LOCAL.try_with(|local| {
        local.borrow_mut().spares = Some(Spares {
            give_back,
            returned,
        })
    });
}

/// Hands this thread's lines to the writer now: a batching thread does so
/// before it ends its work.
pub fn hand_off_this_thread() {
    let _ = LOCAL.try_with(|local| local.borrow_mut().hand_off());
}

/// Hands this thread's lines to the writer one [`FLUSH_INTERVAL`] after
/// the first of them, so that no line waits longer than that; with no
/// lines, it sleeps without a timer.
pub async fn hand_off_when_lines_wait() {
    loop {
        lines_waiting().await;
        tokio::time::sleep(FLUSH_INTERVAL).await;
        hand_off_this_thread();
    }
}

/// Ready once this thread's buffer holds a line.
fn lines_waiting() -> impl Future<Output = ()> {
    std::future::poll_fn(|context| {
        let waiting = LOCAL.try_with(|local| {
            let mut local = local.borrow_mut();
            if local.lines.is_empty() {
                local.waiting = Some(context.waker().clone());
                true
            } else {
                false
            }
        });
        match waiting {
            Ok(true) => Poll::Pending,
            // Lines wait, or the thread is ending and keeps none.
            Ok(false) | Err(_) => Poll::Ready(()),
        }
    })
}

impl BatchedStderr {
    /// Starts the writer thread.
    pub fn start() -> io::Result<(BatchedStderr, FlushGuard)> {
        let shared = Arc::new(Shared {
            dropped: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            asleep: AtomicBool::new(false),
            writer: OnceLock::new(),
        });
        let (to_writer, filled) = mpsc::sync_channel(QUEUE_DEPTH);
        let flusher = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("switchyard-log".into())
                .spawn(move || flush_loop(&shared, &filled))?
        };
        let writer = BatchedStderr {
            shared: Arc::clone(&shared),
            to_writer,
        };
        Ok((
            writer,
            FlushGuard {
                shared,
                flusher: Some(flusher),
            },
        ))
    }

    /// Lets `write` append one whole line to this thread's buffer, in
    /// place: no line of its own, no second copy, no lock.
    pub fn append(&self, write: impl FnOnce(&mut Vec<u8>)) {
        let mut write = Some(write);
        let waiting = LOCAL.try_with(|local| {
            let mut local = local.borrow_mut();
            if local.writer.is_none() {
                local.writer = Some(self.clone());
            }
            if let Some(write) = write.take() {
                write(&mut local.lines);
            }
            if local.spares.is_none() || local.lines.len() >= HAND_OFF_AT {
                local.hand_off();
            }
            // Only the first line into an empty buffer finds the task
            // waiting; woken outside the borrow, in case it runs at once.
            local.waiting.take()
        });
        if let Ok(Some(waiting)) = waiting {
            waiting.wake();
        }
        if let Some(write) = write {
            // This thread is ending and its buffer is already gone: the
            // line goes out on its own.
            let mut line = Vec::new();
            write(&mut line);
            let _ = io::stderr().lock().write_all(&line);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchedStderr {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter { owner: self }
    }
}

/// Appends to the calling thread's buffer. tracing-subscriber formats an
/// event completely and then writes it with one `write_all`, so lines from
/// different threads never interleave.
pub struct LineWriter<'a> {
    owner: &'a BatchedStderr,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.owner.append(|lines| lines.extend_from_slice(bytes));
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        hand_off_this_thread();
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(flusher) = self.flusher.take() {
            flusher.thread().unpark();
            let _ = flusher.join();
        }
    }
}

fn flush_loop(shared: &Shared, filled: &Receiver<Filled>) {
    let _ = shared.writer.set(thread::current());
    loop {
        let stopping = shared.stop.load(Ordering::SeqCst);
        let wrote = write_out(shared, filled, None);
        if stopping {
            return;
        }
        if wrote {
            // Busy: what the next interval brings is taken in one go,
            // without a wake per buffer.
            thread::park_timeout(FLUSH_INTERVAL);
        } else {
            sleep_until_handed_off(shared, filled);
        }
    }
}

/// Parks the writer until a hand-off or the guard's drop wakes it, or
/// writes what slipped into the queue as it went to sleep.
fn sleep_until_handed_off(shared: &Shared, filled: &Receiver<Filled>) {
    shared.asleep.store(true, Ordering::SeqCst);
    // Pairs with the fence in `wake_writer`.
    fence(Ordering::SeqCst);
    if let Ok(first) = filled.try_recv() {
        shared.asleep.store(false, Ordering::SeqCst);
        write_out(shared, filled, Some(first));
        return;
    }
    while shared.asleep.load(Ordering::SeqCst) && !shared.stop.load(Ordering::SeqCst) {
        thread::park();
    }
}

/// Writes `first` and every buffer queued, and reports dropped lines.
/// Whether anything was written.
fn write_out(shared: &Shared, filled: &Receiver<Filled>, first: Option<Filled>) -> bool {
    let mut stderr = io::stderr().lock();
    let mut wrote = false;
    for Filled {
        mut lines,
        give_back,
    } in first
        .into_iter()
        .chain(std::iter::from_fn(|| filled.try_recv().ok()))
    {
        wrote = true;
        // Nowhere to report a failed write to; the next lines try again.
        let _ = stderr.write_all(&lines);
        if let Some(give_back) = give_back {
            lines.clear();
            let _ = give_back.try_send(lines);
        }
    }
    let dropped = shared.dropped.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        wrote = true;
        let _ = writeln!(
            stderr,
            "switchyard: {dropped} log lines dropped: stderr is not keeping up"
        );
    }
    let _ = stderr.flush();
    wrote
}
