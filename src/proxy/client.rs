//! The upstream side's HTTP clients (SPEC 8). A reqwest client has one
//! protocol setting, so each worker keeps three, made when it starts:
//! HTTP/1.1 only for `http://`, HTTP/2 with prior knowledge for `h2c://`,
//! and ALPN for `https://`. A route with `upstream_tls` needs a client of
//! its own per upstream; a worker makes it the first time a request needs
//! it and keeps it in a map of its own thread, keyed by the upstream's TLS
//! target and the generation of its certificates, so the request path
//! takes no lock and a reload never waits on a connection.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use rustls::ClientConfig;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::routes::upstream_tls::{Redirected, TlsTarget};
use crate::routes::upstreams::Connect;

/// Idle upstream connections are closed after this long; below the common
/// 60 s to 120 s keep-alive of upstream servers, so the router is the side
/// that closes and never writes into a connection the upstream just dropped.
pub const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// Idle connections kept per upstream host: enough for a busy sidecar's
/// bursts without holding hundreds of sockets open on the upstream.
pub const UPSTREAM_MAX_IDLE_PER_HOST: usize = 256;

/// A TCP connect that takes longer than this means the upstream is not
/// there; the route `timeout` still bounds the whole wait for headers.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP/2 upstream connection that has been silent this long is asked
/// for a PING; one that does not answer within [`H2_KEEPALIVE_TIMEOUT`] is
/// closed, so a long gRPC stream over a connection that died without a
/// FIN (a NAT that forgot it, a host that vanished) fails instead of
/// hanging.
pub const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// One worker's clients for upstreams without `upstream_tls`.
#[derive(Debug, Clone)]
pub struct UpstreamClients {
    http1: reqwest::Client,
    h2c: reqwest::Client,
    https: reqwest::Client,
}

/// Why a worker's upstream clients could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Build(#[from] reqwest::Error),
    #[error("cannot read the system's trust store: {0}")]
    TrustStore(String),
}

impl UpstreamClients {
    pub fn new() -> Result<Self, ClientError> {
        let tls = |alpn: &[&[u8]]| -> Result<ClientConfig, ClientError> {
            let mut config = system_tls()?;
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(config)
        };
        Ok(UpstreamClients {
            http1: relaying()
                .http1_only()
                .tls_backend_preconfigured(tls(&[b"http/1.1"])?)
                .build()?,
            h2c: http2(relaying())
                .http2_prior_knowledge()
                .tls_backend_preconfigured(tls(&[])?)
                .build()?,
            https: http2(relaying())
                .tls_backend_preconfigured(tls(&[b"h2", b"http/1.1"])?)
                .build()?,
        })
    }

    /// The client that sends requests to an upstream reached by `connect`.
    /// Only an `upstream_tls` target can fail, when its client cannot be
    /// made.
    pub fn for_upstream(&self, connect: &Connect) -> Result<reqwest::Client, reqwest::Error> {
        match connect {
            Connect::Http1 => Ok(self.http1.clone()),
            Connect::H2c => Ok(self.h2c.clone()),
            Connect::Https => Ok(self.https.clone()),
            Connect::Tls(target) => tls_client(target),
        }
    }

    /// The client for `http://` upstreams, borrowed: the path nearly every
    /// request takes.
    pub fn http1(&self) -> &reqwest::Client {
        &self.http1
    }
}

/// A client set up to relay, not to browse: no redirects followed, no
/// decompression (the crate features are off, and nothing re-enables them),
/// no proxy taken from the environment, and no retries of its own: which
/// request may go to an upstream twice is the router's decision alone,
/// and reqwest's default policy would otherwise copy every request's
/// headers in case an HTTP/2 upstream refuses it. It adds one header of
/// its own: `Accept: */*` when the request has none, which reqwest cannot
/// be told not to do; RFC 9110 12.5.1 gives a missing Accept the same
/// meaning.
fn relaying() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .retry(reqwest::retry::never().max_retries_per_request(0))
        .no_proxy()
        .tcp_nodelay(true)
        .connect_timeout(UPSTREAM_CONNECT_TIMEOUT)
        .pool_idle_timeout(UPSTREAM_IDLE_TIMEOUT)
        .pool_max_idle_per_host(UPSTREAM_MAX_IDLE_PER_HOST)
}

/// HTTP/2 settings for upstream connections: keep-alive PINGs, and flow
/// control windows that grow with the connection's bandwidth-delay product
/// (hyper's adaptive window), so one long gRPC stream is not held to the
/// 64 KiB default window's pace.
fn http2(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    builder
        .http2_keep_alive_interval(H2_KEEPALIVE_INTERVAL)
        .http2_keep_alive_timeout(H2_KEEPALIVE_TIMEOUT)
        .http2_keep_alive_while_idle(true)
        .http2_adaptive_window(true)
}

/// The TLS settings of `https://` upstreams without `upstream_tls`: the
/// system's trust store, as reqwest's own default, read once for the
/// process. reqwest reads and parses every certificate of the store for
/// each client it builds by default (some 20 million instructions, and
/// the memory to hold them), and each worker has three clients.
fn system_tls() -> Result<ClientConfig, ClientError> {
    static SYSTEM: OnceLock<Result<ClientConfig, String>> = OnceLock::new();
    let loaded = SYSTEM.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = rustls_platform_verifier::Verifier::new(Arc::clone(&provider))
            .map_err(|e| e.to_string())?;
        Ok(ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth())
    });
    loaded.clone().map_err(ClientError::TrustStore)
}

thread_local! {
    /// This thread's clients for `upstream_tls` targets, by target id.
    static TLS_CLIENTS: RefCell<HashMap<u64, TlsClient>> = RefCell::default();
}

/// A client made for one TLS target with one generation of its files.
struct TlsClient {
    target: Weak<TlsTarget>,
    generation: u64,
    client: reqwest::Client,
}

/// This thread's client for `target`, made now if it has none for the
/// target's current certificates. Making one forgets the clients of
/// targets no table holds any more; dropping a client closes its idle
/// connections, while requests still on them finish.
fn tls_client(target: &Arc<TlsTarget>) -> Result<reqwest::Client, reqwest::Error> {
    let loaded = target.tls.current();
    TLS_CLIENTS.with_borrow_mut(|clients| {
        if let Some(kept) = clients.get(&target.id) {
            if kept.generation == loaded.generation {
                return Ok(kept.client.clone());
            }
        }
        clients.retain(|_, kept| kept.target.strong_count() > 0);
        let mut builder = http2(relaying()).tls_backend_preconfigured((*loaded.config).clone());
        if let Some(redirect) = &target.redirect {
            builder = builder.dns_resolver(Arc::new(ResolveTo(redirect.clone())));
        }
        let client = builder.build()?;
        clients.insert(
            target.id,
            TlsClient {
                target: Arc::downgrade(target),
                generation: loaded.generation,
                client: client.clone(),
            },
        );
        Ok(client)
    })
}

/// Resolves an upstream's `server_name`, which its requests name, to the
/// host its URL gives, so that connections go where the file says while
/// the handshake sends and verifies the name.
struct ResolveTo(Redirected);

impl Resolve for ResolveTo {
    fn resolve(&self, name: Name) -> Resolving {
        let Redirected {
            server_name,
            host,
            port,
        } = self.0.clone();
        Box::pin(async move {
            if name.as_str() != server_name {
                let error = format!("{} is not {server_name}", name.as_str());
                return Err(error.into());
            }
            // An IPv6 literal comes bracketed from the URL.
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}
