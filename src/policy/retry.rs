//! Retries on answers (SPEC 7.5): which outcomes of a try the route's
//! `retry` lets be tried again. The loop that tries, the budget it asks
//! and the upstream it picks are the forwarding's (`proxy::forward`).

use http::{Method, StatusCode};

use crate::routes::config::RetrySpec;
use crate::routes::counters::RetryReason;

/// How one try ended, as far as retrying cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryOutcome {
    /// A response head with this status.
    Answered(StatusCode),
    /// The upstream closed or reset before a complete response head.
    Reset,
    /// `per_try_timeout` passed without a response head.
    TimedOut,
}

/// Whether a request may be retried on an answer at all: an idempotent
/// method and no body, so it is never sent twice with something the first
/// try might have acted on.
pub fn replayable(method: &Method, has_body: bool) -> bool {
    !has_body
        && matches!(
            *method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        )
}

/// The reason to try again after `outcome`, if the route's `retry` names it.
pub fn reason(spec: &RetrySpec, outcome: TryOutcome) -> Option<RetryReason> {
    match outcome {
        TryOutcome::Answered(status) => spec
            .on
            .status(status.as_u16())
            .then_some(RetryReason::Status),
        TryOutcome::Reset => spec.on.reset.then_some(RetryReason::Reset),
        TryOutcome::TimedOut => spec.on.timeout.then_some(RetryReason::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::config::RetryOn;

    fn spec(on: RetryOn) -> RetrySpec {
        RetrySpec {
            on,
            attempts: 3,
            per_try_timeout: None,
            budget_percent: 20,
        }
    }

    #[test]
    fn only_what_on_names_is_retried() {
        let some = spec(RetryOn {
            statuses: vec![503],
            reset: true,
            ..RetryOn::default()
        });
        let answered = |code| TryOutcome::Answered(StatusCode::from_u16(code).expect("a code"));
        assert_eq!(reason(&some, answered(503)), Some(RetryReason::Status));
        assert_eq!(reason(&some, answered(502)), None);
        assert_eq!(reason(&some, answered(200)), None);
        assert_eq!(reason(&some, TryOutcome::Reset), Some(RetryReason::Reset));
        assert_eq!(reason(&some, TryOutcome::TimedOut), None);
        let all = spec(RetryOn {
            any_5xx: true,
            ..RetryOn::default()
        });
        assert_eq!(reason(&all, answered(599)), Some(RetryReason::Status));
        assert_eq!(reason(&all, answered(404)), None);
    }

    #[test]
    fn only_bodiless_idempotent_requests_are_replayable() {
        assert!(replayable(&Method::GET, false));
        assert!(replayable(&Method::DELETE, false));
        assert!(!replayable(&Method::GET, true));
        assert!(!replayable(&Method::POST, false));
        assert!(!replayable(&Method::PATCH, false));
    }
}
