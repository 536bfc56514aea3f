//! What the request path shares: each worker's proxy state, each client
//! connection's, and, for one request, what its framing says ([`Wire`])
//! and the answer on its way back ([`Answer`]). The handler and the
//! forwarding both read them; neither imports the other's.

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::response::Response;

use crate::candidate::CandidateSlot;
use crate::observe::access::{Holds, Routed};
use crate::proxy::client::{ClientError, UpstreamClients};
use crate::proxy::server::Peer;
use crate::proxy::tunnel::Tunnels;
use crate::routes::table::RouteTable;
use crate::trace::Tracer;

/// Which proxy listener a request came in on: what `X-Forwarded-Proto`
/// says and the access log's `listener` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Plain,
    Tls,
}

impl Listener {
    pub fn scheme(self) -> &'static str {
        match self {
            Listener::Plain => "http",
            Listener::Tls => "https",
        }
    }

    /// The label of the listener in logs and in `switchyard_connections_open`.
    pub fn name(self) -> &'static str {
        match self {
            Listener::Plain => "proxy",
            Listener::Tls => "tls",
        }
    }
}

/// What the proxy handler needs: the live table and the upstream clients.
#[derive(Clone)]
pub struct ProxyState {
    pub live: Arc<ArcSwap<RouteTable>>,
    /// The candidate table beside the live one, when one runs (SPEC 10).
    pub candidate: Arc<CandidateSlot>,
    /// This worker's upstream clients, one per protocol setting.
    pub clients: Arc<UpstreamClients>,
    /// Set per listener, so a request learns its scheme without a lookup.
    pub listener: Listener,
    /// Per-request metrics and access log; off only to measure their cost.
    pub observe: bool,
    /// The upgraded connections this worker relays.
    pub tunnels: Tunnels,
    /// Set when tracing is on (SPEC 9); `None` costs a request one branch.
    pub tracer: Option<Arc<Tracer>>,
}

impl ProxyState {
    pub fn new(live: Arc<ArcSwap<RouteTable>>, tunnels: Tunnels) -> Result<Self, ClientError> {
        Ok(ProxyState {
            live,
            candidate: Arc::default(),
            clients: Arc::new(UpstreamClients::new()?),
            listener: Listener::Plain,
            observe: true,
            tunnels,
            tracer: None,
        })
    }
}

/// What the requests of one client connection share: the worker's proxy
/// state and the connection's client end. Made once per connection, so a
/// request reaches both through one reference count.
pub struct ClientConnection {
    pub proxy: ProxyState,
    pub peer: Peer,
}

/// What the steps of one request fill in as they go: where it went, and
/// what it holds until its response ends.
#[derive(Debug, Default)]
pub struct Progress {
    pub routed: Routed,
    pub holds: Holds,
}

/// A response on its way to the client: an upstream's, whose body is boxed
/// only once, as the handler observes it, or one the router made.
pub enum Answer {
    Upstream(http::Response<reqwest::Body>),
    Made(Response),
}

/// What the request's framing says about how it is answered, read in the
/// same pass over its headers as routing's checks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wire {
    /// A gRPC request (`content-type: application/grpc...`): the router's
    /// own answers to it are gRPC's (SPEC 8), and `grpc-timeout` counts.
    pub grpc: bool,
    /// An HTTP/1.1 client that accepts trailers (`TE: trailers`): they
    /// reach it as chunked trailers.
    pub http1_trailers: bool,
    /// The head says `Transfer-Encoding`, so hyper decodes the body as
    /// chunked (it refuses any other transfer coding of a request); the
    /// first chunk is decoded before an upstream is contacted (see the
    /// handler's `first_chunk_decoded`).
    pub chunked: bool,
}
