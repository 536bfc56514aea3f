//! What a route's `upstream_tls` is built into: a rustls client
//! configuration (trust anchors, client certificate, ALPN), kept behind an
//! `ArcSwap` so that a rotated certificate replaces it without a reload of
//! the routes, and the per-upstream target the request path picks a client
//! by.
//!
//! A configuration carries a generation, bumped by every replacement; a
//! worker keeps one upstream client per target and generation (see
//! `proxy::client`), so a rotated certificate is presented on the next new
//! connection while streams on the old ones run to their end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, SignatureScheme};

use crate::pki::{load_roots, sha256_hex, LoadedPair};
use crate::routes::config::UpstreamTlsSpec;

/// The protocols offered to an `https://` upstream by ALPN, preferred
/// first (SPEC 8): it speaks what it picks.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// One `upstream_tls` setting, loaded. Shared by every route and table
/// that states the same setting, as health is shared by URL.
#[derive(Debug)]
pub struct UpstreamTls {
    pub spec: UpstreamTlsSpec,
    current: ArcSwap<LoadedTls>,
}

/// The files of an [`UpstreamTls`] as last loaded.
#[derive(Debug)]
pub struct LoadedTls {
    /// Grows by one with each replacement.
    pub generation: u64,
    pub config: Arc<ClientConfig>,
    /// When the client certificate expires, if there is one.
    pub client_not_after: Option<SystemTime>,
    /// Of every file's bytes: a reload that finds the same bytes changes
    /// nothing.
    digest: String,
}

impl UpstreamTls {
    /// Loads the setting's files; the error names the file at fault.
    pub fn load(spec: &UpstreamTlsSpec) -> Result<Self, String> {
        let loaded = load(spec, 1)?;
        Ok(UpstreamTls {
            spec: spec.clone(),
            current: ArcSwap::from_pointee(loaded),
        })
    }

    pub fn current(&self) -> Arc<LoadedTls> {
        self.current.load_full()
    }

    /// Reads the files again and, if their bytes changed and they load,
    /// makes them current. `Ok(true)` when replaced; an error keeps what
    /// was current.
    pub fn reload(&self) -> Result<bool, String> {
        let current = self.current.load_full();
        if files_digest(&self.spec) == current.digest {
            return Ok(false);
        }
        let loaded = load(&self.spec, current.generation + 1)?;
        self.current.store(Arc::new(loaded));
        Ok(true)
    }
}

/// One digest over every file of `spec` (an unreadable file counts as
/// empty, and fails the load that follows).
fn files_digest(spec: &UpstreamTlsSpec) -> String {
    let mut all = Vec::new();
    let paths = spec.ca.iter().chain(
        spec.identity
            .iter()
            .flat_map(|pair| [&pair.cert, &pair.key]),
    );
    for path in paths {
        all.extend(std::fs::read(path).unwrap_or_default());
        all.push(0);
    }
    sha256_hex(&all)
}

fn load(spec: &UpstreamTlsSpec, generation: u64) -> Result<LoadedTls, String> {
    let digest = files_digest(spec);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &spec.ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for root in load_roots(ca).map_err(|e| e.to_string())? {
                roots
                    .add(root)
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let verifier =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_webpki_verifier(verifier)
        }
        None => {
            let verifier = rustls_platform_verifier::Verifier::new(Arc::clone(&provider))
                .map_err(|e| format!("the system's trust store: {e}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
        }
    };
    let (mut config, client_not_after) = match &spec.identity {
        Some(paths) => {
            let pair = LoadedPair::load(paths, &provider, SystemTime::now())
                .map_err(|e| format!("client certificate: {e}"))?;
            let config =
                builder.with_client_cert_resolver(Arc::new(Presents(Arc::clone(&pair.certified))));
            (config, Some(pair.not_after))
        }
        None => (builder.with_no_client_auth(), None),
    };
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(LoadedTls {
        generation,
        config: Arc::new(config),
        client_not_after,
        digest,
    })
}

/// Presents the one client certificate to every upstream that asks.
#[derive(Debug)]
struct Presents(Arc<CertifiedKey>);

impl ResolvesClientCert for Presents {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Where one upstream's TLS connections go and with what: the setting, and
/// where its URL's host names the server (`server_name`) instead of the
/// address, that address. Its `id` keys the per-worker client made for it.
#[derive(Debug)]
pub struct TlsTarget {
    pub id: u64,
    pub tls: Arc<UpstreamTls>,
    pub redirect: Option<Redirected>,
}

/// An upstream whose requests name `server_name` (so that it is the SNI
/// sent and the name verified) while connections go to `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirected {
    pub server_name: String,
    pub host: String,
    pub port: u16,
}

impl TlsTarget {
    pub fn new(tls: Arc<UpstreamTls>, redirect: Option<Redirected>) -> Self {
        /// Unique for the process: a worker's cached clients are keyed by
        /// it.
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        TlsTarget {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            tls,
            redirect,
        }
    }
}
