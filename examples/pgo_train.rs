//! The workload a profile-guided build learns Switchyard's hot paths from
//! (`scripts/pgo-build.sh`). It runs the binary it is given on loopback, in
//! front of the upstream of `examples/upstream.rs` served in-process, and
//! sends it what a sidecar mostly sees: small requests on kept-alive HTTP/1.1
//! connections, now and then an upload or a 1 MiB download, several routes
//! (by host, prefix and header), the same over HTTP/2 and over TLS with
//! fresh handshakes, then a route reload, admin reads and the traffic again.
//! What it never does (refusals, upstream failures) the compiler lays out as
//! cold code, which is what such paths are.
//!
//! `cargo run --release --example pgo_train -- PATH/TO/switchyard`

#[path = "upstream.rs"]
#[allow(dead_code)] // its `main`: here the same routes are served in-process
mod upstream;

use std::error::Error;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

pub type Failure = Box<dyn Error + Send + Sync>;

/// The whole run, start to exit, is bounded: a stuck router fails the build
/// instead of hanging it.
const DEADLINE: Duration = Duration::from_secs(300);

/// One pass of traffic: (protocol, connections, requests per connection,
/// requests before a connection is replaced by a fresh one).
const PASS: [(Protocol, usize, usize, usize); 4] = [
    (Protocol::Http1, 32, 1_500, usize::MAX),
    (Protocol::H2c, 4, 1_500, usize::MAX),
    (Protocol::TlsHttp1, 8, 500, 100),
    (Protocol::TlsH2, 2, 500, 100),
];

#[derive(Clone, Copy)]
enum Protocol {
    Http1,
    H2c,
    TlsHttp1,
    TlsH2,
}

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let binary = std::env::args()
        .nth(1)
        .ok_or("usage: pgo_train PATH/TO/switchyard")?;
    let started = Instant::now();
    let sent = tokio::time::timeout(DEADLINE, train(Path::new(&binary), 1))
        .await
        .map_err(|_| format!("training did not finish within {DEADLINE:?}"))??;
    eprintln!(
        "pgo_train: {sent} requests proxied in {:.1?}",
        started.elapsed()
    );
    Ok(())
}

/// Runs `binary` through the workload, each connection's share of requests
/// divided by `divisor` (`tests/pgo_train.rs` runs a debug build through a
/// twentieth of it); the number of requests proxied, each answered 200.
pub async fn train(binary: &Path, divisor: usize) -> Result<usize, Failure> {
    let upstream = TcpListener::bind("127.0.0.1:0").await?;
    let upstream_addr = upstream.local_addr()?;
    tokio::spawn(async move { axum::serve(upstream, upstream::app()).await });

    let dir = tempfile::tempdir()?;
    let routes = dir.path().join("routes.yaml");
    std::fs::write(&routes, route_file(upstream_addr, false))?;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let (cert, key) = (dir.path().join("tls.pem"), dir.path().join("tls.key"));
    std::fs::write(&cert, certified.cert.pem())?;
    std::fs::write(&key, certified.signing_key.serialize_pem())?;
    let mut roots = RootCertStore::empty();
    roots.add(certified.cert.der().clone())?;

    let mut child = Command::new(binary)
        .arg("run")
        .arg("--config")
        .arg(&routes)
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(["--tls-listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let router = listening(&mut child).await?;
    let client = Client {
        router,
        tls_http1: connector(roots.clone(), b"http/1.1"),
        tls_h2: connector(roots, b"h2"),
        divisor: divisor.max(1),
    };

    let mut sent = client.pass().await?;
    std::fs::write(&routes, route_file(upstream_addr, true))?;
    client.await_route("/trained/ping").await?;
    for path in ["/healthz", "/metrics", "/routes", "/reloads"] {
        client.admin_get(path).await?;
    }
    sent += client.pass().await?;

    let status = stop(&mut child).await?;
    if !status.success() {
        return Err(format!("switchyard exited with {status}").into());
    }
    Ok(sent)
}

/// Several routes, as a real table has; `reloaded` adds one.
fn route_file(upstream: SocketAddr, reloaded: bool) -> String {
    let mut yaml = format!(
        "routes:
  users:
    host: api.example.com
    prefix: /api/users
    upstream: http://{upstream}/v2
    strip_prefix: true
    timeout: 5s
  users-canary:
    host: api.example.com
    prefix: /api/users
    headers: {{ x-canary: \"1\" }}
    upstreams: [http://{upstream}, http://{upstream}/canary]
  tenants:
    host: \"*.example.com\"
    prefix: /
    methods: [GET, POST]
    upstream: http://{upstream}
  hello:
    prefix: /hello
    respond: {{ status: 200, body: \"hello\\n\" }}
  everything:
    prefix: /
    upstream: http://{upstream}
"
    );
    if reloaded {
        yaml.push_str(&format!(
            "  trained:\n    prefix: /trained\n    upstream: http://{upstream}\n"
        ));
    }
    yaml
}

/// The router's addresses, read from its JSON start-up line; the rest of
/// its log (an access line per request) is read and dropped so that the
/// pipe never fills.
async fn listening(child: &mut Child) -> Result<Router, Failure> {
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let mut last = String::new();
    while let Some(line) = lines.next_line().await? {
        last.clone_from(&line);
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if entry["message"] != "switchyard listening" {
            continue;
        }
        let address = |name: &str| -> Result<SocketAddr, Failure> {
            let value = entry[name].as_str().ok_or(format!("no {name} in {line}"))?;
            Ok(value.parse()?)
        };
        let router = Router {
            proxy: address("proxy")?,
            admin: address("admin")?,
            tls: address("tls")?,
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        return Ok(router);
    }
    Err(format!("switchyard exited before listening: {last}").into())
}

/// SIGTERM, as an orchestrator stops it: the profile is written on exit.
async fn stop(child: &mut Child) -> Result<ExitStatus, Failure> {
    let pid = child.id().ok_or("switchyard already exited")?.to_string();
    // The shell's own `kill`: a build image need not have kill(1).
    let kill = Command::new("sh")
        .args(["-c", &format!("kill -s TERM {pid}")])
        .status()
        .await?;
    if !kill.success() {
        return Err(format!("kill -s TERM {pid} failed").into());
    }
    Ok(child.wait().await?)
}

fn connector(roots: RootCertStore, alpn: &[u8]) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the provider supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
}

#[derive(Clone, Copy)]
struct Router {
    proxy: SocketAddr,
    admin: SocketAddr,
    tls: SocketAddr,
}

#[derive(Clone)]
struct Client {
    router: Router,
    tls_http1: TlsConnector,
    tls_h2: TlsConnector,
    divisor: usize,
}

impl Client {
    /// Every protocol's connections at once; the number of requests sent.
    async fn pass(&self) -> Result<usize, Failure> {
        let mut connections = JoinSet::new();
        for (protocol, count, requests, per_connection) in PASS {
            let requests = (requests / self.divisor).max(1);
            for connection in 0..count {
                let client = self.clone();
                connections.spawn(async move {
                    let mut sent = 0;
                    while sent < requests {
                        let batch = per_connection.min(requests - sent);
                        let mut sender = client.connect(protocol).await?;
                        for n in sent..sent + batch {
                            let request = request(connection * requests + n);
                            let path = request.uri().clone();
                            let status = sender.exchange(request).await?;
                            if status != StatusCode::OK {
                                return Err(format!("{path}: {status}").into());
                            }
                        }
                        sent += batch;
                    }
                    Ok::<_, Failure>(sent)
                });
            }
        }
        let mut sent = 0;
        while let Some(done) = connections.join_next().await {
            sent += done??;
        }
        Ok(sent)
    }

    async fn connect(&self, protocol: Protocol) -> Result<Sender, Failure> {
        let (addr, tls) = match protocol {
            Protocol::Http1 | Protocol::H2c => (self.router.proxy, None),
            Protocol::TlsHttp1 => (self.router.tls, Some(&self.tls_http1)),
            Protocol::TlsH2 => (self.router.tls, Some(&self.tls_h2)),
        };
        let tcp = TcpStream::connect(addr).await?;
        let h2 = matches!(protocol, Protocol::H2c | Protocol::TlsH2);
        match tls {
            None => Sender::handshake(tcp, h2).await,
            Some(connector) => {
                let name = ServerName::try_from("localhost")?;
                Sender::handshake(connector.connect(name, tcp).await?, h2).await
            }
        }
    }

    /// Polls until a reload has made `path` routable.
    async fn await_route(&self, path: &str) -> Result<(), Failure> {
        let mut sender = self.connect(Protocol::Http1).await?;
        for _ in 0..500 {
            let probe = Request::get(path)
                .header("host", "localhost")
                .body(Full::default())?;
            if sender.exchange(probe).await? == StatusCode::OK {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(format!("{path} still unrouted after the reload").into())
    }

    async fn admin_get(&self, path: &str) -> Result<(), Failure> {
        let mut sender =
            Sender::handshake(TcpStream::connect(self.router.admin).await?, false).await?;
        let request = Request::get(path)
            .header("host", "localhost")
            .body(Full::default())?;
        match sender.exchange(request).await? {
            StatusCode::OK => Ok(()),
            status => Err(format!("admin {path}: {status}").into()),
        }
    }
}

/// The `n`th request of a connection: mostly small GETs to the catch-all
/// route, some to other routes and with the headers a service mesh adds, an
/// upload every 64th, a 1 MiB download every 256th.
fn request(n: usize) -> Request<Full<Bytes>> {
    let (method, host, path, body) = match n % 256 {
        255 => (
            Method::GET,
            "localhost",
            "/bytes/1048576".to_owned(),
            Bytes::new(),
        ),
        k if k % 64 == 63 => (
            Method::POST,
            "localhost",
            "/sink".to_owned(),
            Bytes::from(vec![b'x'; 64 * 1024]),
        ),
        k if k % 4 == 1 => (
            Method::GET,
            "api.example.com",
            format!("/api/users/{n}?fields=name"),
            Bytes::new(),
        ),
        k if k % 8 == 3 => (
            Method::GET,
            "tenant-7.example.com",
            "/orders".to_owned(),
            Bytes::new(),
        ),
        k if k % 16 == 6 => (Method::GET, "localhost", "/hello".to_owned(), Bytes::new()),
        _ => (Method::GET, "localhost", "/small".to_owned(), Bytes::new()),
    };
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .header("user-agent", "pgo-train/1");
    if n % 16 == 5 {
        request = request.header("x-canary", "1");
    }
    if n % 4 == 0 {
        request = request
            .header("x-request-id", format!("train-{n}"))
            .header("x-forwarded-for", "10.1.2.3");
    }
    request
        .body(Full::new(body))
        .expect("a request built from constants")
}

/// One client connection, HTTP/1.1 or HTTP/2.
enum Sender {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    async fn handshake<S>(io: S, h2: bool) -> Result<Sender, Failure>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let io = TokioIo::new(io);
        Ok(if h2 {
            let (sender, connection) = http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(connection);
            Sender::Http2(sender)
        } else {
            let (sender, connection) = http1::handshake(io).await?;
            tokio::spawn(connection);
            Sender::Http1(sender)
        })
    }

    /// Sends `request` and reads the whole answer; its status.
    async fn exchange(&mut self, mut request: Request<Full<Bytes>>) -> Result<StatusCode, Failure> {
        let response = match self {
            Sender::Http1(sender) => {
                sender.ready().await?;
                sender.send_request(request).await?
            }
            Sender::Http2(sender) => {
                // HTTP/2 carries the host as the URI's authority.
                let host = request
                    .headers_mut()
                    .remove("host")
                    .ok_or("a request without a host")?;
                let uri = format!("http://{}{}", host.to_str()?, request.uri());
                *request.uri_mut() = uri.parse()?;
                sender.ready().await?;
                sender.send_request(request).await?
            }
        };
        let status = response.status();
        response.into_body().collect().await?;
        Ok(status)
    }
}
