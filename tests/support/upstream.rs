//! Upstream servers for the router to forward to: real HTTP/1.1 servers on
//! `127.0.0.1:0`, each stopped (with all its connections) when dropped.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;

/// The echo upstream reports at most this much of a body as text; it still
/// counts every byte, so a 64 MiB upload is measured without being held.
pub const ECHO_BODY_LIMIT: usize = 64 * 1024;

/// Each upstream answers with this header naming itself.
pub const UPSTREAM_HEADER: &str = "x-upstream";

type TcpHandler = Arc<dyn Fn(TcpStream) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

enum Kind {
    Http(axum::Router),
    Tcp(TcpHandler),
}

/// An upstream not yet started; see the constructors on [`Upstream`].
pub struct UpstreamSpec {
    kind: Kind,
}

/// A running upstream server. Dropping it stops the server and closes every
/// connection it accepted.
pub struct Upstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Upstream {
    /// Answers every request with a JSON description of what arrived (see
    /// [`Echoed`]) and `x-upstream: name`.
    pub fn echo(name: &str) -> UpstreamSpec {
        let name = name.to_owned();
        UpstreamSpec::http(axum::Router::new().fallback(move |request: Request| {
            let name = name.clone();
            async move { echo(&name, request).await }
        }))
    }

    /// Answers every request with `code`, an empty body and
    /// `x-upstream: status-CODE`.
    pub fn status(code: u16) -> UpstreamSpec {
        let status = StatusCode::from_u16(code).expect("a valid status code");
        UpstreamSpec::http(axum::Router::new().fallback(move || async move {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = status;
            response.headers_mut().insert(
                UPSTREAM_HEADER,
                HeaderValue::from_str(&format!("status-{code}")).expect("ASCII"),
            );
            response
        }))
    }

    /// Serves `router` as the upstream, for answers the other constructors
    /// do not cover. Connections support upgrades (`hyper::upgrade::on`).
    pub fn handler(router: axum::Router) -> UpstreamSpec {
        UpstreamSpec::http(router)
    }

    /// Answers every request with a `200` whose body is `total` bytes of
    /// `x`, produced `chunk` bytes at a time and sent chunked.
    pub fn streaming(total: u64, chunk: usize) -> UpstreamSpec {
        UpstreamSpec::http(axum::Router::new().fallback(move || async move {
            let piece = Bytes::from(vec![b'x'; chunk]);
            let chunks = total.div_ceil(chunk as u64);
            let stream = futures_util::stream::iter((0..chunks).map(move |i| {
                let left = total - i * chunk as u64;
                let len = left.min(chunk as u64) as usize;
                Ok::<_, Infallible>(piece.slice(..len))
            }));
            let mut response = Response::new(Body::from_stream(stream));
            response
                .headers_mut()
                .insert(UPSTREAM_HEADER, HeaderValue::from_static("streaming"));
            response
        }))
    }

    /// Accepts connections and never answers, holding each socket open
    /// until the upstream is dropped: the router's timeout must fire.
    pub fn silent() -> UpstreamSpec {
        Upstream::tcp(|stream| async move {
            let _held = stream;
            std::future::pending::<()>().await;
        })
    }

    /// Holds every request until the test calls [`Gate::open`] (one request
    /// per call), then answers `200` with `body` and `x-upstream: gated`;
    /// [`Gate::arrived`] says when a request is being held.
    pub fn gated(gate: &Arc<Gate>, body: &'static str) -> UpstreamSpec {
        let gate = Arc::clone(gate);
        UpstreamSpec::http(axum::Router::new().fallback(move || {
            let gate = Arc::clone(&gate);
            async move {
                gate.arrived.notify_one();
                gate.release.notified().await;
                ([(UPSTREAM_HEADER, "gated")], body)
            }
        }))
    }

    /// Hands each accepted connection to `handler`, for upstreams that must
    /// misbehave below HTTP (invalid responses, bodies cut short).
    pub fn tcp<F, Fut>(handler: F) -> UpstreamSpec
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        UpstreamSpec {
            kind: Kind::Tcp(Arc::new(move |stream| Box::pin(handler(stream)))),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash, so a base path can
    /// be appended with `format!("{}/v2", upstream.url())`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// HTTP requests received so far (always 0 for [`Upstream::tcp`]).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Holds the requests of an [`Upstream::gated`] until opened, and says when
/// one has arrived.
#[derive(Default)]
pub struct Gate {
    arrived: Notify,
    release: Notify,
}

impl Gate {
    pub fn new() -> Arc<Gate> {
        Arc::default()
    }

    /// Returns once a request has arrived (at once if one already has and
    /// was not yet waited for).
    pub async fn arrived(&self) {
        self.arrived.notified().await;
    }

    /// Lets one held request (or the next to arrive) be answered.
    pub fn open(&self) {
        self.release.notify_one();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // The accept task owns the connection tasks; aborting it ends them.
        self.task.abort();
    }
}

impl UpstreamSpec {
    fn http(router: axum::Router) -> Self {
        UpstreamSpec {
            kind: Kind::Http(router),
        }
    }

    pub async fn start(self) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an upstream on 127.0.0.1:0");
        self.serve(listener)
    }

    /// Starts on a given address: an upstream coming back where it was.
    pub async fn start_on(self, addr: SocketAddr) -> Upstream {
        let listener = TcpListener::bind(addr)
            .await
            .expect("bind the upstream's old address again");
        self.serve(listener)
    }

    fn serve(self, listener: TcpListener) -> Upstream {
        let addr = listener.local_addr().expect("the upstream's address");
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(accept_loop(
            listener,
            self.kind,
            Arc::clone(&connections),
            Arc::clone(&requests),
        ));
        Upstream {
            addr,
            connections,
            requests,
            task,
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    kind: Kind,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
) {
    // Dropped with this task when the upstream is dropped, which aborts
    // every connection still open.
    let mut open = JoinSet::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            Some(_) = open.join_next(), if !open.is_empty() => continue,
        };
        connections.fetch_add(1, Ordering::SeqCst);
        match &kind {
            Kind::Tcp(handler) => {
                open.spawn(handler(stream));
            }
            Kind::Http(router) => {
                let router = router.clone();
                let requests = Arc::clone(&requests);
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        requests.fetch_add(1, Ordering::SeqCst);
                        router.clone().oneshot(request.map(Body::new))
                    },
                );
                open.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        }
    }
}

async fn echo(name: &str, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (header, value) in &parts.headers {
        headers
            .entry(header.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }

    let mut body = body;
    let mut body_len: u64 = 0;
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Response::builder()
                .status(StatusCode::BAD_REQUEST)
                .body(Body::from("request body broke off"))
                .expect("a valid response");
        };
        if let Some(data) = frame.data_ref() {
            body_len += data.len() as u64;
            let room = ECHO_BODY_LIMIT.saturating_sub(kept.len());
            kept.extend_from_slice(&data[..data.len().min(room)]);
        }
    }

    let report = json!({
        "upstream": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_len": body_len,
        "body": String::from_utf8_lossy(&kept),
    });
    Response::builder()
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(UPSTREAM_HEADER, name)
        .body(Body::from(report.to_string()))
        .expect("a valid response")
}

/// What the echo upstream saw, parsed from its answer.
#[derive(Debug, Clone, Deserialize)]
pub struct Echoed {
    pub upstream: String,
    pub method: String,
    /// The path exactly as it arrived on the wire.
    pub path: String,
    /// The query exactly as it arrived, without `?`.
    pub query: Option<String>,
    /// Lower-case names, values in arrival order.
    pub headers: BTreeMap<String, Vec<String>>,
    pub body_len: u64,
    /// The first [`ECHO_BODY_LIMIT`] bytes of the body, lossily as UTF-8.
    pub body: String,
}

impl Echoed {
    /// Reads an echo upstream's answer; panics if it is not one.
    pub async fn from_response(response: reqwest::Response) -> Echoed {
        let status = response.status();
        let bytes = response.bytes().await.expect("the echo body");
        serde_json::from_slice(&bytes).unwrap_or_else(|error| {
            panic!(
                "not an echo answer ({status}): {error}: {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    }

    /// Parses an echo answer's body (e.g. from [`crate::support::send_raw`]).
    pub fn from_body(body: &[u8]) -> Echoed {
        serde_json::from_slice(body).unwrap_or_else(|error| {
            panic!(
                "not an echo answer: {error}: {}",
                String::from_utf8_lossy(body)
            )
        })
    }

    /// Every value of a header (name in any case), empty if absent.
    pub fn header_all(&self, name: &str) -> &[String] {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map_or(&[], Vec::as_slice)
    }

    /// The header's only value; `None` if absent, panics if repeated.
    pub fn header(&self, name: &str) -> Option<&str> {
        match self.header_all(name) {
            [] => None,
            [value] => Some(value),
            values => panic!("header {name} arrived {} times: {values:?}", values.len()),
        }
    }
}

/// Reads from an [`Upstream::tcp`] connection until the end of a request
/// head (`\r\n\r\n`) and returns the head; `None` if the connection
/// closed first.
pub async fn read_request_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(head)
}

/// The URL of a port that refuses connections: bound, then released. The
/// port could in principle be taken again before use; the kernel hands out
/// ephemeral ports in sequence, so in practice it is not.
pub async fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("the bound address");
    drop(listener);
    format!("http://{addr}")
}
