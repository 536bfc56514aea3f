//! Serving a listener: the accept loop, per-connection HTTP settings, and
//! graceful draining under a deadline.
//!
//! This replaces `axum::serve`, which sets no header-read timeout (so a
//! slowloris client holds a connection forever), no TCP_NODELAY, and waits
//! without limit for connections at shutdown. The service is still axum's
//! (the proxy's handler, or the admin API's `Router`); hyper-util's auto
//! builder speaks HTTP/1.1 and cleartext HTTP/2 (prior knowledge) on the
//! same port. Each connection is driven by
//! `drive`, which keeps its header timeout and its drain signal with one
//! timer and one flag per connection, not per request.
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
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
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
    let drain = Arc::new(Drain::default());
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
            drain: Arc::clone(&drain),
        };
        // One task type per transport: a plain connection's task then
        // holds and polls no TLS state, which keeps its future and the
        // stack its polls take smaller.
        match &transport {
            Transport::Plain => connections.spawn(async move {
                let _open = open;
                connection.serve(stream).await;
            }),
            Transport::Tls(acceptor) => {
                let acceptor = acceptor.clone();
                connections.spawn(async move {
                    let _open = open;
                    if let Some(stream) = handshake(&acceptor, stream, peer).await {
                        connection.serve(stream).await;
                    }
                })
            }
        };
    }
    drop(listener);
    drain.start();
    let open = connections.len();
    let all_closed = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(drain_timeout, all_closed)
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
    drain: Arc<Drain>,
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
            drain,
        } = self;
        let wait = Arc::new(HeadWait::new());
        let service = {
            let wait = Arc::clone(&wait);
            hyper::service::service_fn(move |request: http::Request<Incoming>| {
                let in_flight = RequestInFlight::begin(&wait, request.version());
                let response = app.clone().oneshot(request);
                async move {
                    let response = response.await?;
                    Ok::<_, Infallible>(response.map(|body| InFlightBody {
                        body,
                        _in_flight: in_flight,
                    }))
                }
            })
        };
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        match drive(connection, &wait, &drain).await {
            Some(Ok(())) => {}
            Some(Err(error)) => tracing::debug!(%peer, %error, "connection ended with an error"),
            None => tracing::debug!(%peer, "no request head within the header timeout; closing"),
        }
    }
}

/// Drives `connection` until it ends, or until it has waited
/// [`HEADER_READ_TIMEOUT`] for a request head (`None`): since it opened,
/// or since its last response ended. Once `drain` starts, the connection is
/// asked to finish its request in flight and close.
///
/// This is the whole header timeout of HTTP/1; hyper's own is off, because
/// it arms, registers and clears a boxed timer on every request, where this
/// timer fires at most once per timeout per connection. It also covers the
/// bytes before the auto builder has chosen a protocol (none yet, or a
/// partial HTTP/2 preface), which hyper's does not. Once a connection is
/// known to speak HTTP/2 the deadline goes: h2 keeps its own streams, and a
/// request head there is one frame.
///
/// The timer and the drain signal hold the task's waker from their first
/// poll; a later wake-up with the same waker only reads whether either has
/// fired, so a request's several wake-ups cost two loads, not two polls
/// (hyper-util's graceful watcher takes a lock on every poll).
async fn drive<C: GracefulConnection>(
    connection: C,
    wait: &HeadWait,
    drain: &Drain,
) -> Option<C::Output> {
    let mut connection = std::pin::pin!(connection);
    let mut timer = std::pin::pin!(tokio::time::sleep(HEADER_READ_TIMEOUT));
    let mut drain_signal = std::pin::pin!(drain.signal.notified());
    let mut registered: Option<Waker> = None;
    let mut head_deadline = true;
    let mut draining = false;
    std::future::poll_fn(|cx| {
        let fresh = registered
            .as_ref()
            .is_none_or(|waker| !waker.will_wake(cx.waker()));
        if fresh {
            registered = Some(cx.waker().clone());
            // Only registers: the signal completes through `Drain::start`,
            // which also sets the flag read below.
            let _ = drain_signal.as_mut().poll(cx);
        }
        if !draining && drain.started() {
            draining = true;
            connection.as_mut().graceful_shutdown();
        }
        if let Poll::Ready(output) = connection.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        if !head_deadline || !(fresh || timer.is_elapsed()) {
            return Poll::Pending;
        }
        loop {
            if timer.is_elapsed() {
                match wait.deadline(tokio::time::Instant::now()) {
                    HeadDeadline::Passed => return Poll::Ready(None),
                    HeadDeadline::None => {
                        head_deadline = false;
                        return Poll::Pending;
                    }
                    HeadDeadline::At(deadline) => timer.as_mut().reset(deadline),
                }
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    })
    .await
}

/// Tells a listener's connections that it is draining.
#[derive(Default)]
struct Drain {
    started: AtomicBool,
    signal: Notify,
}

impl Drain {
    fn start(&self) {
        self.started.store(true, Ordering::Release);
        self.signal.notify_waiters();
    }

    fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }
}

/// Where a connection stands against the header timeout.
enum HeadDeadline {
    Passed,
    At(tokio::time::Instant),
    /// HTTP/2: no deadline.
    None,
}

/// What the header timeout of one connection reads: whether a request is
/// being served, and since when the connection has waited for a head.
/// Written by its requests, read when its timer fires.
struct HeadWait {
    opened: tokio::time::Instant,
    in_flight: AtomicUsize,
    /// Nanoseconds from `opened` to the end of the last response body.
    idle_since: AtomicU64,
    http2: AtomicBool,
}

impl HeadWait {
    fn new() -> Self {
        HeadWait {
            opened: tokio::time::Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            http2: AtomicBool::new(false),
        }
    }

    fn deadline(&self, now: tokio::time::Instant) -> HeadDeadline {
        if self.http2.load(Ordering::Relaxed) {
            return HeadDeadline::None;
        }
        // A request being served is not a head being waited for; its body
        // may take as long as it takes.
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return HeadDeadline::At(now + HEADER_READ_TIMEOUT);
        }
        let since_opened = Duration::from_nanos(self.idle_since.load(Ordering::Relaxed));
        let Some(deadline) = self.opened.checked_add(since_opened + HEADER_READ_TIMEOUT) else {
            return HeadDeadline::At(now + HEADER_READ_TIMEOUT);
        };
        if now >= deadline {
            HeadDeadline::Passed
        } else {
            HeadDeadline::At(deadline)
        }
    }
}

/// One request of a connection, from its head until its response body has
/// been handed to hyper to the end (or dropped).
struct RequestInFlight(Arc<HeadWait>);

impl RequestInFlight {
    fn begin(wait: &Arc<HeadWait>, version: http::Version) -> Self {
        if version == http::Version::HTTP_2 {
            wait.http2.store(true, Ordering::Relaxed);
        }
        wait.in_flight.fetch_add(1, Ordering::Relaxed);
        RequestInFlight(Arc::clone(wait))
    }
}

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        let wait = &*self.0;
        let since_opened = wait.opened.elapsed().as_nanos();
        wait.idle_since.store(
            u64::try_from(since_opened).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        wait.in_flight.fetch_sub(1, Ordering::Release);
    }
}

/// A response body that holds its request's [`RequestInFlight`], so the
/// header timeout starts counting only once the body has ended.
struct InFlightBody {
    body: Body,
    _in_flight: RequestInFlight,
}

impl http_body::Body for InFlightBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
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

fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // `drive` keeps the header timeout, the one thing hyper's HTTP/1
        // timer was for, so HTTP/1 gets no timer.
        .header_read_timeout(None)
        .max_buf_size(READ_BUFFER_MAX);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    builder
}
