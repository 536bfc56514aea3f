//! The router under test: the real binary, serving cleartext HTTP/2 and
//! TLS (a certificate from a CA of the test's own) in front of an echo
//! upstream, with the routes the suites rely on.

use std::net::SocketAddr;

use tempfile::TempDir;

use crate::h2wire::Listener;
use crate::http2_cases::FIXED_BODY;
use crate::support::{SwitchyardProcess, TestCa, Upstream};

/// A running router, its upstream and the CA its clients trust.
pub struct Target {
    pub router: SwitchyardProcess,
    pub upstream: Upstream,
    ca: TestCa,
    _certificates: TempDir,
}

impl Target {
    /// The router with `/` to an echo upstream, `/fixed` answered by
    /// itself, and `extra` routes (YAML lines under `routes:`, indented
    /// by two spaces) before those.
    pub async fn start() -> Target {
        Target::start_with(Upstream::echo("conformance").start().await, "").await
    }

    pub async fn start_with(upstream: Upstream, extra_routes: &str) -> Target {
        let ca = TestCa::new();
        let certificates = tempfile::tempdir().expect("a directory for the certificate");
        let (cert, key) = ca
            .leaf(&["localhost", "127.0.0.1"])
            .write(certificates.path(), "localhost");
        let yaml = format!(
            "routes:
{extra_routes}  fixed:
    prefix: /fixed
    respond: {{ body: \"{FIXED_BODY}\" }}
  echo:
    prefix: /
    upstream: {}
",
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
            ca,
            _certificates: certificates,
        }
    }

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
