//! Fixtures for the integration tests: real upstream servers and a real
//! router, each on `127.0.0.1:0`, plus an HTTP client, a raw-socket client,
//! a polling helper and a `/metrics` reader.
//!
//! ```ignore
//! let users = Upstream::echo("users").start().await;
//! let router = TestRouter::with_yaml(format!("routes:\n  users:\n    upstream: {}\n", users.url()))
//!     .start()
//!     .await;
//! let answer = router.get("/api/users/7").send().await.unwrap();
//! ```
//!
//! Every test file includes this module with `mod support;` and uses only
//! part of it, so unused helpers and re-exports are expected here.
#![allow(dead_code, unused_imports)]

mod held;
mod metrics;
mod process;
mod router;
mod tls;
mod upstream;
mod wire;

use std::future::Future;
use std::time::{Duration, Instant};

pub use self::held::{held_upstream, Held, RELEASED};
pub use self::metrics::Metrics;
pub use self::process::{run_switchyard, switchyard_command, RouteFile, SwitchyardProcess};
pub use self::router::{TestRouter, TestRouterBuilder};
pub use self::tls::{HttpsConnection, Leaf, TestCa};
pub use self::upstream::{
    closed_port_url, read_request_head, Echoed, Gate, Upstream, UpstreamSpec, UPSTREAM_HEADER,
};
pub use self::wire::{
    client, json_of, send_raw, send_raw_until_closed, streamed_body, RawResponse,
};

/// A route file with one route, `/greeting`, answering `text`: the smallest
/// table whose edits show in a response.
pub fn greeting(text: &str) -> String {
    format!(
        "routes:
  greeting:
    prefix: /greeting
    respond: {{ body: \"{text}\" }}
"
    )
}

/// The routes the route timeout's kept timers are tested on: `/fast` to an
/// answering upstream and `/slow` to a silent one, both timing out after
/// [`SHORT_TIMEOUT`], and `/long` to the answering one with a 30 s timeout.
pub struct TimeoutRoutes {
    pub answering: Upstream,
    pub silent: Upstream,
    pub router: TestRouter,
}

/// The timeout of `/fast` and `/slow` in [`TimeoutRoutes`].
pub const SHORT_TIMEOUT: Duration = Duration::from_millis(300);

impl TimeoutRoutes {
    pub async fn start() -> TimeoutRoutes {
        let answering = Upstream::echo("answering").start().await;
        let silent = Upstream::silent().start().await;
        let router = TestRouter::with_yaml(format!(
            "routes:
  long:
    prefix: /long
    upstream: {answering}
    timeout: 30s
  fast:
    prefix: /fast
    upstream: {answering}
    timeout: {short}ms
  slow:
    prefix: /slow
    upstream: {silent}
    timeout: {short}ms
",
            answering = answering.url(),
            silent = silent.url(),
            short = SHORT_TIMEOUT.as_millis(),
        ))
        .start()
        .await;
        TimeoutRoutes {
            answering,
            silent,
            router,
        }
    }
}

/// A 504 for a route timeout came no earlier than the timeout, and not
/// seconds later.
pub fn assert_timed_out_after(waited: Duration, timeout: Duration) {
    assert!(waited >= timeout, "answered after {waited:?}");
    assert!(waited < Duration::from_secs(3), "answered after {waited:?}");
}

/// How often [`eventually`] probes: short against the 1 s reload deadline,
/// long enough not to flood the router with probes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// What a probe of [`eventually`] returns: `true`/`Some(value)` once the
/// condition holds.
pub trait Settled {
    type Value;
    fn settled(self) -> Option<Self::Value>;
}

impl Settled for bool {
    type Value = ();
    fn settled(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Settled for Option<T> {
    type Value = T;
    fn settled(self) -> Option<T> {
        self
    }
}

/// Probes until the condition holds and returns its value; panics if it
/// still does not hold after `timeout`. The probe runs at least once, and
/// once more after the deadline, so a slow probe is not cut short.
pub async fn eventually<F, Fut>(timeout: Duration, mut probe: F) -> <Fut::Output as Settled>::Value
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Settled,
{
    let deadline = Instant::now() + timeout;
    loop {
        let expired = Instant::now() >= deadline;
        if let Some(value) = probe().await.settled() {
            return value;
        }
        if expired {
            panic!("condition still not met after {timeout:?}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
