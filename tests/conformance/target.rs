//! The router under test: the real binary, serving cleartext HTTP/2 and
//! TLS (a certificate from a CA of the test's own) in front of an echo
//! upstream, with the routes the suites rely on.

use std::net::SocketAddr;

use tempfile::TempDir;

use crate::h2wire::Listener;
use crate::http2_cases::FIXED_BODY;
use crate::support::{SwitchyardProcess, TestCa, Upstream};

/// What `/large` answers with: big enough that no buffer along the way
/// could hold it, so only backpressure keeps the router's memory flat.
pub const LARGE_BODY: u64 = 100 * 1024 * 1024;

/// A running router, its upstreams and the CA its clients trust.
pub struct Target {
    pub router: SwitchyardProcess,
    /// Behind `/`: answers with what it received, once it has read it all.
    pub upstream: Upstream,
    /// Behind `/large`: [`LARGE_BODY`] bytes, produced as they are read.
    pub large: Upstream,
    ca: TestCa,
    _certificates: TempDir,
}

impl Target {
    /// The router with `/` to an echo upstream, `/large` to
    /// [`LARGE_BODY`] bytes and `/fixed` answered by itself, on a
    /// cleartext and a TLS listener.
    pub async fn start() -> Target {
        let upstream = Upstream::echo("conformance").start().await;
        let large = Upstream::streaming(LARGE_BODY, 64 * 1024).start().await;
        let ca = TestCa::new();
        let certificates = tempfile::tempdir().expect("a directory for the certificate");
        let (cert, key) = ca
            .leaf(&["localhost", "127.0.0.1"])
            .write(certificates.path(), "localhost");
        let yaml = format!(
            "routes:
  large:
    prefix: /large
    upstream: {}
  fixed:
    prefix: /fixed
    respond: {{ body: \"{FIXED_BODY}\" }}
  echo:
    prefix: /
    upstream: {}
",
            large.url(),
            upstream.url()
        );
        let router = SwitchyardProcess::run_with_yaml(
            &yaml,
            &[
                "--tls-listen",
                "127.0.0.1:0",
                "--tls-cert",
                cert.to_str().expect("a UTF-8 path"),
                "--tls-key",
                key.to_str().expect("a UTF-8 path"),
            ],
        )
        .await;
        Target {
            router,
            upstream,
            large,
            ca,
            _certificates: certificates,
        }
    }

    /// The cleartext listener's address (HTTP/1.1 and HTTP/2).
    pub fn plain_addr(&self) -> SocketAddr {
        self.router
            .proxy_url("")
            .trim_start_matches("http://")
            .parse()
            .expect("the proxy address")
    }

    /// The cleartext listener, HTTP/2 with prior knowledge.
    pub fn plain(&self) -> Listener {
        Listener::Plain(self.plain_addr())
    }

    /// The TLS listener, HTTP/2 by ALPN.
    pub fn tls(&self) -> Listener {
        Listener::Tls(self.router.tls_addr(), self.ca.client(&[b"h2"]))
    }
}
