//! The route `timeout`'s timers, kept and reused by each worker thread.
//!
//! A fresh `tokio::time::Sleep` per upstream request is put into the
//! runtime's timer wheel when made and taken out again when the answer
//! comes first, which it nearly always does: ~700 instructions and ~85
//! instruction-cache misses per proxied request (cachegrind), bookkeeping
//! that no feature needs.
//!
//! A kept timer costs a fraction of that. Its deadline is left alone when
//! it already falls within [`SLACK`] after the request's, and otherwise
//! moved later, which is one atomic update: the wheel only notices when the
//! old deadline comes round. And it is polled only when the task waiting on
//! it is another than the one it last woke for; otherwise whether it has
//! fired is one load.
//!
//! The spare timers are a thread-local list, not shared state: a request
//! runs on its worker's current-thread runtime from start to end, so it
//! takes and gives back on one thread without a lock. A timer belongs to
//! the runtime that made it, so the list remembers which runtime that was
//! and is emptied when another one runs on the thread.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::runtime::{Handle, Id};
use tokio::time::{Instant, Sleep};

/// How late a route timeout may end: a kept timer whose deadline is this
/// close after a request's serves it unchanged. Tokio's timers count whole
/// milliseconds; a route's timeout is seconds.
pub const SLACK: Duration = Duration::from_millis(10);

/// Spare timers kept per thread: as many as requests a worker usually has
/// waiting on upstreams at once. A timer beyond them is dropped.
const SPARES_KEPT: usize = 256;

/// What [`timeout_at`] returns when the deadline came before the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// `tokio::time::timeout_at` on a kept timer: `future`'s output, or
/// [`Elapsed`] once `deadline` (and at most [`SLACK`] more) has passed.
pub fn timeout_at<F: Future + Unpin>(deadline: Instant, future: F) -> Timeout<F> {
    Timeout {
        future,
        timer: Lease::until(deadline),
    }
}

/// The future of [`timeout_at`]. A struct, not an `async fn`: the request
/// future that awaits it holds it as it is, without a state machine of its
/// own around it.
pub struct Timeout<F> {
    future: F,
    timer: Lease,
}

impl<F: Future + Unpin> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    /// The future first, so an answer that is ready wins over a deadline
    /// that has just passed.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Poll::Ready(output) = Pin::new(&mut this.future).poll(cx) {
            return Poll::Ready(Ok(output));
        }
        this.timer.poll_elapsed(cx).map(|()| Err(Elapsed))
    }
}

/// A timer and the task it wakes when it fires.
struct Kept {
    sleep: Pin<Box<Sleep>>,
    /// The waker of its last poll; `None` when it has none since its reset.
    wakes: Option<Waker>,
}

/// A timer taken from this thread's spares, given back when dropped.
struct Lease {
    /// `None` only once given back.
    kept: Option<Kept>,
    runtime: Id,
}

struct Spares {
    runtime: Option<Id>,
    timers: Vec<Kept>,
}

thread_local! {
    static SPARES: RefCell<Spares> = const {
        RefCell::new(Spares {
            runtime: None,
            timers: Vec::new(),
        })
    };
}

impl Lease {
    /// Panics outside a Tokio runtime, as `tokio::time::sleep_until` does.
    fn until(deadline: Instant) -> Lease {
        let runtime = Handle::current().id();
        let mut stale = Vec::new();
        let spare = SPARES
            .try_with(|spares| {
                let mut spares = spares.try_borrow_mut().ok()?;
                if spares.runtime != Some(runtime) {
                    spares.runtime = Some(runtime);
                    stale = std::mem::take(&mut spares.timers);
                }
                spares.timers.pop()
            })
            .ok()
            .flatten();
        // Another runtime's timers are dropped once the list is let go of:
        // dropping a timer's waker may free a task.
        drop(stale);
        let kept = match spare {
            Some(mut kept) => {
                // One that has fired needs no check of its own: it fired
                // at or after `set`, so if `set` is not before `deadline`,
                // the request's deadline has passed too.
                let set = kept.sleep.deadline();
                if set < deadline || set > deadline + SLACK {
                    kept.sleep.as_mut().reset(deadline + SLACK);
                    kept.wakes = None;
                }
                kept
            }
            None => Kept {
                sleep: Box::pin(tokio::time::sleep_until(deadline + SLACK)),
                wakes: None,
            },
        };
        Lease {
            kept: Some(kept),
            runtime,
        }
    }

    fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(kept) = self.kept.as_mut() else {
            return Poll::Pending;
        };
        match &kept.wakes {
            Some(waker) if waker.will_wake(cx.waker()) => {
                if kept.sleep.is_elapsed() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }
            _ => {
                // Outside the task's budget: a poll that the budget turned
                // away would leave the timer waking no one.
                let polled =
                    std::pin::pin!(tokio::task::unconstrained(kept.sleep.as_mut())).poll(cx);
                kept.wakes = Some(cx.waker().clone());
                polled
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut kept = self.kept.take();
        let runtime = self.runtime;
        let _ = SPARES.try_with(|spares| {
            if let Ok(mut spares) = spares.try_borrow_mut() {
                if spares.runtime == Some(runtime) && spares.timers.len() < SPARES_KEPT {
                    spares.timers.extend(kept.take());
                }
            }
        });
        // A timer not kept is dropped here, outside the list, as above.
        drop(kept);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOON: Duration = Duration::from_millis(20);
    /// Only a hung timer takes this long; the tests end in milliseconds.
    const HUNG: Duration = Duration::from_secs(10);

    fn spares_here() -> usize {
        SPARES.with_borrow(|spares| spares.timers.len())
    }

    /// Waits on an answer that never comes, for [`SOON`]; panics if only
    /// the guard ends the wait, which is what a timer waking no one (or
    /// the wrong task) would come to, or if the wait ends early.
    async fn never_answered() -> Result<(), Elapsed> {
        let asked = Instant::now();
        let waited = tokio::select! {
            biased;
            () = tokio::time::sleep(HUNG) => panic!("the kept timer did not wake this task"),
            waited = timeout_at(asked + SOON, std::future::pending::<()>()) => waited,
        };
        // Timers never fire early; one that did was not this wait's.
        assert!(asked.elapsed() >= SOON, "ended after {:?}", asked.elapsed());
        waited
    }

    #[tokio::test]
    async fn an_answer_ready_before_the_deadline_wins_and_its_timer_is_kept() {
        let answer = timeout_at(Instant::now() + HUNG, std::future::ready(7)).await;
        assert_eq!(answer, Ok(7));
        assert_eq!(spares_here(), 1);
    }

    #[tokio::test]
    async fn an_answer_ready_after_the_deadline_still_wins() {
        let answer = timeout_at(Instant::now(), std::future::ready(7)).await;
        assert_eq!(answer, Ok(7));
    }

    /// Leaves a timer polled by this task, deadline [`SOON`] from now.
    async fn answered_after_one_poll() {
        let answer = timeout_at(Instant::now() + SOON, Box::pin(tokio::task::yield_now())).await;
        assert_eq!(answer, Ok(()));
    }

    #[tokio::test]
    async fn a_kept_timer_still_ends_a_wait_that_outlives_it() {
        for _ in 0..3 {
            // Kept as it is, deadline and waker, for the next wait.
            answered_after_one_poll().await;
            assert_eq!(never_answered().await, Err(Elapsed));
        }
        assert_eq!(spares_here(), 1);
    }

    /// Routes with different timeouts take turns on a connection: a timer
    /// last set for a long timeout must be moved earlier for a short one.
    #[tokio::test]
    async fn a_kept_timer_set_for_a_longer_timeout_still_ends_a_shorter_one() {
        let answer = timeout_at(
            Instant::now() + HUNG * 2,
            Box::pin(tokio::task::yield_now()),
        )
        .await;
        assert_eq!(answer, Ok(()));
        assert_eq!(spares_here(), 1);
        assert_eq!(never_answered().await, Err(Elapsed));
    }

    #[tokio::test]
    async fn a_kept_timer_wakes_the_task_now_waiting_not_the_last_one() {
        tokio::spawn(answered_after_one_poll())
            .await
            .expect("the first task ran");
        assert_eq!(spares_here(), 1);
        // The same timer, deadline unchanged, must now wake this task.
        let waited = tokio::spawn(never_answered())
            .await
            .expect("the second task ran");
        assert_eq!(waited, Err(Elapsed));
    }

    #[test]
    fn a_runtime_never_gets_the_timers_of_one_that_ended_on_its_thread() {
        for _ in 0..2 {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            // The second runtime would panic polling the first one's timer.
            assert_eq!(runtime.block_on(never_answered()), Err(Elapsed));
            assert_eq!(spares_here(), 1);
        }
    }
}
