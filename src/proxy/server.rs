//! Serving a listener: the accept loop, per-connection HTTP settings, and
//! graceful draining under a deadline.
//!
//! This replaces `axum::serve`, which sets no header-read timeout (so a
//! slowloris client holds a connection forever), no TCP_NODELAY, and waits
//! without limit for connections at shutdown. The service is still axum's
//! (the proxy's handler, or the admin API's `Router`). HTTP/1.1 and
//! cleartext HTTP/2 (prior knowledge) share the port: a cleartext
//! connection's first bytes say which it speaks (`sniff`), and hyper's
//! server for that protocol alone serves it. Each connection is driven by
//! `drive`, which keeps its header timeout and its drain signal with one
//! timer and one flag per connection, not per request.
//!
//! A TLS listener is the same loop with a handshake first, in the
//! connection's own task so a slow client never holds up the accept loop;
//! the protocol is the one the handshake agreed by ALPN.
//!
//! A listener is served by one task on whatever runtime calls [`serve`]:
//! the proxy's workers each run one on their own thread (see `run`), the
//! admin API one on the control runtime.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::{Service, ServiceExt};

use crate::proxy::body::Holding;
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

/// Streams an HTTP/2 client may have open at once on one connection (its
/// SETTINGS_MAX_CONCURRENT_STREAMS; more are refused with REFUSED_STREAM).
/// nginx's default: RFC 9113 6.5.2 asks for no less than 100, and each
/// open stream may hold [`H2_MAX_SEND_BUF_SIZE`] of response and an
/// upstream connection, so this bounds what one connection can claim
/// (tests/conformance/abuse.rs, streams that never read).
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 128;

/// Response bytes hyper queues per HTTP/2 stream beyond what the client's
/// window lets it send. hyper's default (400 KiB) times the streams a
/// client may open is 50 MiB per connection for a client that opens
/// its windows wide and then stops reading; at 64 KiB (four full frames,
/// enough to keep a stream fed between polls of its body) it is 8 MiB,
/// and the upstream waits under backpressure for the rest. Against that
/// attack (tests/conformance/abuse.rs) the router grows by 97 MiB without
/// this limit and by 33 MiB with it.
pub const H2_MAX_SEND_BUF_SIZE: usize = 64 * 1024;

/// Streams a client may open and reset before the router has accepted
/// them, before the connection is closed with ENHANCE_YOUR_CALM: the
/// defence against rapid reset (CVE-2023-44487), at the value h2 chose for
/// it. A client that cancels requests normally cancels ones already
/// accepted and never comes near it.
pub const H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;

/// Streams the router may reset because the client broke a rule on them
/// (a malformed request, a bad frame on the stream), before the connection
/// is closed with ENHANCE_YOUR_CALM: the defence against provoked resets
/// (the "MadeYouReset" attack), whose work per reset is the same as a
/// rapid reset's. hyper's default; a well-behaved client makes none.
pub const H2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

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
    let builders = Arc::new(Builders::new());
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
            builders: Arc::clone(&builders),
            app: make_app(Peer::new(peer)),
            peer,
            drain: Arc::clone(&drain),
        };
        // Every request on a connection runs under tokio's poll of the
        // connection's task, so the task's future is kept to a few
        // pointers: how the connection starts (its TLS handshake, the
        // sniff of its protocol) and what then serves it are each boxed.
        // tokio's poll reserves stack for the future it polls (more than
        // twice its size), and the start alone is ~700 bytes; inline, they
        // pushed every request 8 KiB deeper on the stack.
        let start: Starting = match &transport {
            Transport::Plain => Box::pin(connection.start_plain(stream)),
            Transport::Tls(acceptor) => Box::pin(connection.start_tls(acceptor.clone(), stream)),
        };
        connections.spawn(async move {
            let _open = open;
            if let Some(serving) = start.await {
                serving.await;
            }
        });
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

/// The HTTP servers a listener's connections are served with, configured
/// once per listener.
struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Builders {
    fn new() -> Self {
        let mut http1 = http1::Builder::new();
        http1
            // `drive` keeps the header timeout, the one thing hyper's
            // HTTP/1 timer was for, so HTTP/1 gets no timer.
            .header_read_timeout(None)
            .max_buf_size(READ_BUFFER_MAX);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            // Also where a CONTINUATION flood stops: h2 counts the decoded
            // header list as the frames come and ends the connection long
            // before the block is whole (CVE-2024-27316).
            .max_header_list_size(MAX_HEADER_BYTES as u32)
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            .max_send_buf_size(H2_MAX_SEND_BUF_SIZE)
            .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESET_STREAMS)
            .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESET_STREAMS);
        Builders { http1, http2 }
    }
}

/// One accepted connection, ready to be served over whatever stream its
/// transport gives.
struct Connection<A> {
    builders: Arc<Builders>,
    app: A,
    peer: SocketAddr,
    drain: Arc<Drain>,
}

impl<A: App> Connection<A> {
    /// Reads which protocol a cleartext connection speaks from its first
    /// bytes, and returns what serves it in that protocol, or `None` if the
    /// connection ended first.
    async fn start_plain(self, mut stream: TcpStream) -> Option<Serving> {
        let wait = Arc::new(HeadWait::new());
        match sniff_in_time(&mut stream, &wait, &self.drain).await {
            Ok((protocol, consumed)) => {
                return Some(self.serving(Prefixed::new(consumed, stream), protocol, wait));
            }
            Err(SniffEnd::Closed) => {}
            Err(SniffEnd::Draining) => {
                tracing::debug!(peer = %self.peer, "closing: draining before a request")
            }
            Err(SniffEnd::TimedOut) => {
                tracing::debug!(peer = %self.peer, "no request head within the header timeout; closing")
            }
            Err(SniffEnd::Failed(error)) => {
                tracing::debug!(peer = %self.peer, %error, "connection failed before a request")
            }
        }
        None
    }

    /// Runs the TLS handshake, then returns what serves the connection in
    /// the protocol the handshake agreed by ALPN (SPEC 4.11): `h2`, or
    /// HTTP/1.1 when the client named none.
    async fn start_tls(self, acceptor: TlsAcceptor, stream: TcpStream) -> Option<Serving> {
        let stream = handshake(&acceptor, stream, self.peer).await?;
        let protocol = match stream.get_ref().1.alpn_protocol() {
            Some(b"h2") => Protocol::Http2,
            _ => Protocol::Http1,
        };
        Some(self.serving(stream, protocol, Arc::new(HeadWait::new())))
    }

    /// Builds hyper's server for `protocol` alone over `stream` and returns
    /// it, driven, behind a pointer. One protocol's server rather than
    /// hyper-util's auto builder with both makes a smaller future and
    /// shallower polls, so a request touches less memory.
    fn serving<S>(self, stream: S, protocol: Protocol, wait: Arc<HeadWait>) -> Serving
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let stream = TokioIo::new(stream);
        let service = self.service(&wait);
        match protocol {
            Protocol::Http1 => {
                let connection = self
                    .builders
                    .http1
                    .serve_connection(stream, service)
                    .with_upgrades();
                Box::pin(self.drive_to_end(connection, |c| c.graceful_shutdown(), wait))
            }
            Protocol::Http2 => {
                let connection = self.builders.http2.serve_connection(stream, service);
                Box::pin(self.drive_to_end(connection, |c| c.graceful_shutdown(), wait))
            }
        }
    }

    /// [`drive`]s `connection` to its end and says how it ended.
    async fn drive_to_end<C>(
        self,
        connection: C,
        graceful_shutdown: impl FnOnce(Pin<&mut C>),
        wait: Arc<HeadWait>,
    ) where
        C: Future<Output = Result<(), hyper::Error>>,
    {
        let outcome = drive(connection, graceful_shutdown, &wait, &self.drain).await;
        report_end(self.peer, outcome);
    }

    /// The app as hyper calls it, each request counted in `wait` from its
    /// head to the end of its response body.
    fn service(
        &self,
        wait: &Arc<HeadWait>,
    ) -> impl hyper::service::Service<
        http::Request<Incoming>,
        Response = http::Response<InFlightBody>,
        Error = Infallible,
        Future: Send + 'static,
    > + Send
           + 'static {
        let app = self.app.clone();
        let wait = Arc::clone(wait);
        hyper::service::service_fn(move |request: http::Request<Incoming>| {
            let in_flight = RequestInFlight::begin(&wait, request.version());
            // Both apps are always ready (axum's handler service and
            // `Router` say so without looking at the context), so the
            // request is handed over at once instead of through `oneshot`,
            // whose state would hold it and move it again (150 instructions
            // and ~20 simulated L1d misses per request). An app that is not
            // ready gets `oneshot`, which waits with the task's own waker,
            // boxed: inline, its room for the request made the future that
            // hyper stores for every request 560 bytes instead of 64.
            let mut app = app.clone();
            let ready = app.poll_ready(&mut Context::from_waker(Waker::noop()));
            let response = match ready {
                Poll::Ready(Ok(())) => futures_util::future::Either::Left(app.call(request)),
                _ => futures_util::future::Either::Right(Box::pin(app.oneshot(request))),
            };
            async move {
                let response = response.await?;
                Ok::<_, Infallible>(response.map(|body| Holding::new(body, in_flight)))
            }
        })
    }
}

/// What a connection speaks over its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// What an HTTP/2 client with prior knowledge sends first (RFC 9113 3.4).
const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Why a cleartext connection ended before it chose a protocol.
#[derive(Debug)]
enum SniffEnd {
    Closed,
    TimedOut,
    Draining,
    Failed(io::Error),
}

/// [`sniff`] within the header timeout (counted from when the connection
/// opened, as the rest of its first head's wait is), given up at once if
/// the listener starts draining: no request has begun.
async fn sniff_in_time(
    stream: &mut TcpStream,
    wait: &HeadWait,
    drain: &Drain,
) -> Result<(Protocol, Bytes), SniffEnd> {
    // Created before the flag is read, so a drain starting in between still
    // wakes it.
    let draining = drain.signal.notified();
    if drain.started() {
        return Err(SniffEnd::Draining);
    }
    let deadline = wait.opened + HEADER_READ_TIMEOUT;
    tokio::select! {
        biased;
        sniffed = tokio::time::timeout_at(deadline, sniff(stream)) => match sniffed {
            Ok(Ok(Some(sniffed))) => Ok(sniffed),
            Ok(Ok(None)) => Err(SniffEnd::Closed),
            Ok(Err(error)) => Err(SniffEnd::Failed(error)),
            Err(_) => Err(SniffEnd::TimedOut),
        },
        () = draining => Err(SniffEnd::Draining),
    }
}

/// Tells HTTP/2 with prior knowledge from HTTP/1 by a connection's first
/// bytes, and returns the bytes it had to take off the stream to decide
/// (usually none), or `None` if the client closed first.
///
/// It peeks: one byte that differs from the HTTP/2 preface, or the whole
/// preface, decides, and the stream is left as it was. Only a first packet
/// that is a strict prefix of the preface (`P`, or `PRI * HTTP/2.0\r\n`;
/// not `POST`, whose `O` already differs) makes it read, since peeking
/// again would find the same bytes at once and spin; what it read goes
/// back in front of the stream through [`Prefixed`].
async fn sniff(stream: &mut TcpStream) -> io::Result<Option<(Protocol, Bytes)>> {
    let mut first = [0u8; HTTP2_PREFACE.len()];
    let peeked = stream.peek(&mut first).await?;
    if peeked == 0 {
        return Ok(None);
    }
    if let Some(protocol) = protocol_of(&first[..peeked]) {
        return Ok(Some((protocol, Bytes::new())));
    }
    let mut consumed = 0;
    loop {
        let read = stream.read(&mut first[consumed..]).await?;
        if read == 0 {
            return Ok(None);
        }
        consumed += read;
        if let Some(protocol) = protocol_of(&first[..consumed]) {
            return Ok(Some((protocol, Bytes::copy_from_slice(&first[..consumed]))));
        }
    }
}

/// The protocol that a connection starting with `first` (not empty)
/// speaks, or `None` while `first` is a strict prefix of the HTTP/2
/// preface.
fn protocol_of(first: &[u8]) -> Option<Protocol> {
    if !HTTP2_PREFACE.starts_with(first) {
        Some(Protocol::Http1)
    } else if first.len() == HTTP2_PREFACE.len() {
        Some(Protocol::Http2)
    } else {
        None
    }
}

/// A stream with bytes already taken off it put back in front, for hyper
/// to read as if they had never been taken.
struct Prefixed<S> {
    prefix: Bytes,
    stream: S,
}

impl<S> Prefixed<S> {
    fn new(prefix: Bytes, stream: S) -> Self {
        Prefixed { prefix, stream }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        }
        let taken = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix.split_to(taken));
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// How a connection starts: what it runs from its accept until it knows
/// its protocol, and then what serves it, or `None` if it ended first.
type Starting = Pin<Box<dyn Future<Output = Option<Serving>> + Send>>;

/// What serves one connection, behind a pointer: the connection task's
/// own future then holds neither protocol's server, and tokio's poll of
/// the task, under which every request on the connection runs, reserves no
/// stack for them.
type Serving = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Logs how a connection ended, out of line: a request's polls pass
/// through the caller, and the log's formatting would widen its frame.
#[cold]
#[inline(never)]
fn report_end(peer: SocketAddr, outcome: Option<Result<(), hyper::Error>>) {
    match outcome {
        Some(Ok(())) => {}
        Some(Err(error)) => tracing::debug!(%peer, %error, "connection ended with an error"),
        None => tracing::debug!(%peer, "no request head within the header timeout; closing"),
    }
}

/// Drives `connection` until it ends, or until it has waited
/// [`HEADER_READ_TIMEOUT`] for a request head (`None`): since it opened,
/// or since its last response ended. Once `drain` starts, the connection is
/// asked, through `graceful_shutdown`, to finish its request in flight and
/// close.
///
/// This is the whole header timeout of HTTP/1; hyper's own is off, because
/// it arms, registers and clears a boxed timer on every request, where this
/// timer fires at most once per timeout per connection. (The bytes before a
/// cleartext connection has named its protocol are `sniff_in_time`'s,
/// against the same deadline.) Once a connection is
/// known to speak HTTP/2 the deadline goes: h2 keeps its own streams, and a
/// request head there is one frame.
///
/// The timer and the drain signal hold the task's waker from their first
/// poll; a later wake-up with the same waker only reads whether either has
/// fired, so a request's several wake-ups cost two loads, not two polls
/// (hyper-util's graceful watcher takes a lock on every poll).
async fn drive<C: Future>(
    connection: C,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
    wait: &HeadWait,
    drain: &Drain,
) -> Option<C::Output> {
    let mut connection = std::pin::pin!(connection);
    let mut timer = std::pin::pin!(tokio::time::sleep(HEADER_READ_TIMEOUT));
    let mut drain_signal = std::pin::pin!(drain.signal.notified());
    let mut registered: Option<Waker> = None;
    let mut head_deadline = true;
    let mut graceful_shutdown = Some(graceful_shutdown);
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
        if drain.started() {
            if let Some(graceful_shutdown) = graceful_shutdown.take() {
                graceful_shutdown(connection.as_mut());
            }
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
type InFlightBody = Holding<Body, RequestInFlight>;

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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A connected pair on loopback: the client's end and the server's.
    async fn connected() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"));
        let (client, accepted) = tokio::join!(client, listener.accept());
        (client.expect("connect"), accepted.expect("accept").0)
    }

    /// What the server reads once sniffing is done: the bytes sniffing took,
    /// then the rest of the stream up to the client's close.
    async fn read_back(consumed: Bytes, server: TcpStream) -> Vec<u8> {
        let mut all = Vec::new();
        Prefixed::new(consumed, server)
            .read_to_end(&mut all)
            .await
            .expect("read to the end");
        all
    }

    #[tokio::test]
    async fn a_whole_first_packet_is_peeked_not_taken() {
        let request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".as_slice();
        let preface_and_frame = [HTTP2_PREFACE.as_slice(), b"\0\0\0\x04\0\0\0\0\0"].concat();
        for (sent, protocol) in [
            (request, Protocol::Http1),
            (preface_and_frame.as_slice(), Protocol::Http2),
            // "PO" already differs from "PRI".
            (b"POST /".as_slice(), Protocol::Http1),
        ] {
            let (mut client, mut server) = connected().await;
            client.write_all(sent).await.expect("write");
            client.shutdown().await.expect("shutdown");
            let (sniffed, consumed) = sniff(&mut server).await.expect("sniff").expect("bytes");
            assert_eq!(sniffed, protocol, "{sent:?}");
            assert!(consumed.is_empty(), "{sent:?}: took {consumed:?}");
            assert_eq!(read_back(consumed, server).await, sent);
        }
    }

    #[tokio::test]
    async fn a_first_packet_that_begins_the_preface_waits_for_more_and_loses_nothing() {
        for (first, rest, protocol) in [
            (
                b"PRI * HTTP/2.0\r\n".as_slice(),
                b"\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0".as_slice(),
                Protocol::Http2,
            ),
            (
                b"P".as_slice(),
                b"UT /p HTTP/1.1\r\n\r\n".as_slice(),
                Protocol::Http1,
            ),
        ] {
            let (mut client, mut server) = connected().await;
            client.write_all(first).await.expect("write");
            let sniffed = {
                let mut sniffing = std::pin::pin!(sniff(&mut server));
                // It cannot decide on `first`; the wait lets it take
                // `first` off the stream before the rest comes, so the
                // reading path is the one exercised (whatever the timing,
                // the outcome below must hold).
                let undecided =
                    tokio::time::timeout(Duration::from_millis(100), &mut sniffing).await;
                assert!(undecided.is_err(), "{first:?} decided: {undecided:?}");
                client.write_all(rest).await.expect("write");
                client.shutdown().await.expect("shutdown");
                sniffing.await
            };
            let (sniffed, consumed) = sniffed.expect("sniff").expect("bytes");
            assert_eq!(sniffed, protocol, "{first:?}");
            assert_eq!(read_back(consumed, server).await, [first, rest].concat());
        }
    }

    #[tokio::test]
    async fn a_client_that_closes_before_deciding_is_closed() {
        for sent in [b"".as_slice(), b"PRI * HTTP"] {
            let (mut client, mut server) = connected().await;
            client.write_all(sent).await.expect("write");
            client.shutdown().await.expect("shutdown");
            assert!(
                sniff(&mut server).await.expect("sniff").is_none(),
                "{sent:?}"
            );
        }
    }

    #[test]
    fn the_protocol_is_decided_by_the_first_byte_off_the_preface() {
        assert_eq!(protocol_of(b"G"), Some(Protocol::Http1));
        assert_eq!(protocol_of(b"PRI * HTTP/1.1"), Some(Protocol::Http1));
        assert_eq!(protocol_of(b"PRI * HTTP/2.0\r\n"), None);
        assert_eq!(protocol_of(HTTP2_PREFACE), Some(Protocol::Http2));
    }
}
