//! Serving a listener: the accept loop, per-connection HTTP settings, and
//! graceful draining under a deadline.
//!
//! This replaces `axum::serve`, which sets no header-read timeout (so a
//! slowloris client holds a connection forever), no TCP_NODELAY, and waits
//! without limit for connections at shutdown. axum's `Router` is still the
//! service; hyper-util's auto builder speaks HTTP/1.1 and cleartext HTTP/2
//! (prior knowledge) on the same port.
//!
//! A TLS listener is the same loop with a handshake first, in the
//! connection's own task so a slow client never holds up the accept loop.
//!
//! A listener is served by one task on whatever runtime calls [`serve`]:
//! the proxy's workers each run one on their own thread (see `run`), the
//! admin API one on the control runtime.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::util::Oneshot;
use tower::{Service, ServiceExt};

use crate::proxy::headers::ClientAddress;

/// A client that has not sent its request headers within this time is
/// disconnected (SPEC 4.9): long enough for a slow mobile link, short enough
/// that idle sockets cannot pile up.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Request headers larger than this in total get 431 (SPEC 4.9): from the
/// proxy handler for HTTP/1 (see [`READ_BUFFER_MAX`]), from h2 for HTTP/2.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// hyper's cap on one HTTP/1 read, which is also its cap on a request head
/// (a longer head gets hyper's own 431). It is not [`MAX_HEADER_BYTES`]:
/// with a 64 KiB cap a 64 KiB upload and its head never fit one read, and
/// the extra read, frame and write cost the upload a tenth of its
/// instructions. The buffer only grows this far for a connection whose
/// reads fill it.
pub const READ_BUFFER_MAX: usize = 256 * 1024;

/// A client that has not finished its TLS handshake within this time is
/// disconnected (SPEC 4.11), for the same reason as the header timeout.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// After an accept error (usually out of file descriptors) the loop waits
/// this long before accepting again, instead of spinning on the error.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// What a listener serves on one connection: axum's `Router` for the admin
/// API, the proxy's handler as a service of its own for the request path.
pub trait App:
    Service<http::Request<Incoming>, Response = Response, Error = Infallible, Future: Send>
    + Clone
    + Send
    + 'static
{
}

impl<S> App for S where
    S: Service<http::Request<Incoming>, Response = Response, Error = Infallible, Future: Send>
        + Clone
        + Send
        + 'static
{
}

/// Makes the service for one accepted connection from its client end, so
/// the proxy can hand a connection's peer to its handler once, in the
/// handler's state, instead of inserting it into every request's
/// extensions (a map allocated per request).
pub trait MakeApp: Fn(Peer) -> Self::App + Send + 'static {
    type App: App;
}

impl<F, A> MakeApp for F
where
    F: Fn(Peer) -> A + Send + 'static,
    A: App,
{
    type App = A;
}

/// Serves `router` with each request carrying its connection's [`Peer`] as
/// an extension: for the admin API, whose handlers take it with
/// `Extension<Peer>` and whose few requests make the map's cost moot.
pub fn with_peer_extension(router: axum::Router) -> impl MakeApp {
    move |peer: Peer| {
        router
            .clone()
            .map_request(move |mut request: http::Request<Incoming>| {
                request.extensions_mut().insert(peer.clone());
                request
            })
    }
}

/// What a connection speaks under HTTP.
#[derive(Clone)]
pub enum Transport {
    Plain,
    Tls(TlsAcceptor),
}

/// Serves `listener` until `stop` completes, each connection with the
/// service `make_app` makes for it, then stops accepting and gives open
/// connections up to `drain_timeout` to finish their requests. Returns once
/// every connection has closed or the deadline passed.
pub async fn serve(
    listener: TcpListener,
    transport: Transport,
    make_app: impl MakeApp,
    stop: impl Future<Output = ()>,
    drain_timeout: Duration,
    open_connections: Arc<AtomicUsize>,
) {
    let builder = Arc::new(connection_builder());
    let graceful = GracefulShutdown::new();
    // Owns every connection task, so the ones still open when the drain
    // deadline passes can be cut instead of outliving `serve`.
    let mut connections = JoinSet::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
            // Reap finished connections so the set only holds open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            () = &mut stop => break,
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let open = OpenConnection::count(&open_connections);
        let connection = Connection {
            builder: Arc::clone(&builder),
            app: make_app(Peer::new(peer)),
            peer,
            graceful: graceful.watcher(),
        };
        let transport = transport.clone();
        connections.spawn(async move {
            let _open = open;
            match transport {
                Transport::Plain => connection.serve(stream).await,
                Transport::Tls(acceptor) => {
                    if let Some(stream) = handshake(&acceptor, stream, peer).await {
                        connection.serve(stream).await;
                    }
                }
            }
        });
    }
    drop(listener);
    let open = connections.len();
    if tokio::time::timeout(drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            open,
            ?drain_timeout,
            "drain deadline passed; closing the remaining connections"
        );
    }
    // Within the deadline every task has finished or is finishing; past it,
    // this aborts the connections still open, closing their sockets.
    connections.shutdown().await;
}

/// Runs the server side of a TLS handshake within [`TLS_HANDSHAKE_TIMEOUT`].
async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "no TLS handshake within its timeout; closing");
            None
        }
    }
}

/// One accepted connection, ready to be served over whatever stream its
/// transport gives.
struct Connection<A> {
    builder: Arc<auto::Builder<TokioExecutor>>,
    app: A,
    peer: SocketAddr,
    graceful: Watcher,
}

impl<A: App> Connection<A> {
    async fn serve<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            builder,
            app,
            peer,
            graceful,
        } = self;
        let first_request = FirstRequest::default();
        let service = hyper::service::service_fn(noting_first_request(app, first_request.clone()));
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        let mut connection = std::pin::pin!(connection);
        // hyper's header timeout only starts once the auto builder has
        // chosen HTTP/1; until then (no bytes yet, or a partial HTTP/2
        // preface) nothing bounds the wait, so the first request gets the
        // same deadline here. The deadline goes once that request is in,
        // so the connection's later polls do not pass through a timer.
        let until_first_request = async {
            tokio::select! {
                result = connection.as_mut() => Some(result),
                () = first_request.arrived() => None,
            }
        };
        let result = match tokio::time::timeout(HEADER_READ_TIMEOUT, until_first_request).await {
            Ok(Some(result)) => result,
            Ok(None) => connection.await,
            Err(_) => {
                tracing::debug!(%peer, "no request within the header timeout; closing");
                return;
            }
        };
        if let Err(error) = result {
            tracing::debug!(%peer, %error, "connection ended with an error");
        }
    }
}

/// Counts a connection in the open-connections gauge until its task ends,
/// however it ends (finished, cut at the drain deadline, or panicked).
struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
    fn count(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(Arc::clone(open))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Set once a connection has delivered a complete request head to the
/// service; shared by the connection's service and its deadline.
#[derive(Clone, Default)]
struct FirstRequest(Arc<(AtomicBool, Notify)>);

impl FirstRequest {
    fn mark(&self) {
        let (marked, arrived) = &*self.0;
        // Every later request of the connection stops at this load.
        if !marked.load(Ordering::Relaxed) {
            marked.store(true, Ordering::Relaxed);
            arrived.notify_one();
        }
    }

    /// Completes once the first request has arrived (at once if it has).
    async fn arrived(&self) {
        self.0 .1.notified().await;
    }
}

/// The client end of a connection, given to the service made for it (where
/// `axum::serve` would give `ConnectInfo`): its address, and that address
/// as `X-Forwarded-For` writes it, formatted once.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub forwarded_for: ClientAddress,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Self {
        Peer {
            addr,
            forwarded_for: ClientAddress::new(addr.ip()),
        }
    }
}

/// Adapts the service to hyper, noting that the connection has sent a
/// request.
fn noting_first_request<A: App>(
    app: A,
    first_request: FirstRequest,
) -> impl Fn(http::Request<Incoming>) -> Oneshot<A, http::Request<Incoming>> + Clone {
    move |request: http::Request<Incoming>| {
        first_request.mark();
        app.clone().oneshot(request)
    }
}

fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(READ_BUFFER_MAX);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    builder
}
