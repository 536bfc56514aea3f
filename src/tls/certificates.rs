//! The live certificate set and everything that changes it: the first load,
//! reloads (watcher, SIGHUP, `POST /reload`), the status `/healthz` shows,
//! and the SNI resolver that rustls asks on every handshake.
//!
//! The set is immutable and lives behind an `ArcSwap`, like the route
//! table: a handshake loads it without a lock, a reload builds a whole new
//! set and swaps it in. A connection keeps the `CertifiedKey` it was given,
//! so a swap never touches an open connection. Reloads run one at a time
//! under a mutex that only synchronous control-plane code takes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use serde::Serialize;

use crate::pki::{rfc3339 as rfc3339_string, LoadedPair, PairError, PairPaths};
use crate::reload::reloader::{rfc3339, LastReload, Trigger};

/// A certificate this close to its expiry is warned about in the log, at
/// every load and once a day: two weeks leaves time to renew by hand when
/// automation has failed.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 60 * 60);

/// The protocols offered by ALPN, preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Every pair that failed to load, each with its own message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", join_errors(.0))]
pub struct TlsError(pub Vec<PairError>);

fn join_errors(errors: &[PairError]) -> String {
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    messages.join("; ")
}

/// The pairs serving now, in command-line order, and their names indexed
/// for SNI.
#[derive(Debug)]
pub struct CertSet {
    pairs: Vec<Arc<LoadedPair>>,
    exact: HashMap<String, usize>,
    /// `*.example.com` is kept under `example.com`.
    wildcard: HashMap<String, usize>,
}

impl CertSet {
    fn new(pairs: Vec<Arc<LoadedPair>>) -> Self {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (index, pair) in pairs.iter().enumerate() {
            for name in &pair.names {
                // The first pair to claim a name keeps it, so the order on
                // the command line settles overlaps.
                match name.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_owned()).or_insert(index),
                    None => exact.entry(name.clone()).or_insert(index),
                };
            }
        }
        CertSet {
            pairs,
            exact,
            wildcard,
        }
    }

    pub fn pairs(&self) -> &[Arc<LoadedPair>] {
        &self.pairs
    }

    /// The pair for a client that asked for `server_name`: the exact name,
    /// then a wildcard one label up, then the first pair (SPEC 4.11).
    pub fn pick(&self, server_name: Option<&str>) -> Option<&Arc<LoadedPair>> {
        let chosen = server_name.and_then(|name| {
            let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
                Cow::Owned(name.to_ascii_lowercase())
            } else {
                Cow::Borrowed(name)
            };
            self.exact.get(&*name).copied().or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent).copied()
            })
        });
        self.pairs.get(chosen.unwrap_or(0))
    }
}

/// Hands rustls the live set's certificate for each handshake.
#[derive(Debug)]
struct Resolver {
    live: Arc<ArcSwap<CertSet>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.live.load();
        set.pick(hello.server_name())
            .map(|pair| Arc::clone(&pair.certified))
    }
}

/// Whether a reload that found a broken pair reports it now, or leaves
/// everything as it was so the caller can look again: a watcher that sees
/// a new certificate before its key has been written (a half-done update)
/// must not report the pair as mismatched yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    Report,
    Hold,
}

/// What one reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsReload {
    /// At least one pair was replaced; none failed.
    Replaced,
    /// Every pair reads as it serves now.
    Unchanged,
    /// Some pair failed and was reported; pairs that loaded were put live.
    Failed(TlsError),
    /// Some pair failed and nothing was changed or reported
    /// ([`OnFailure::Hold`]).
    Held(TlsError),
}

/// What `/healthz` shows under `tls`.
#[derive(Debug, Clone, Serialize)]
pub struct TlsStatus {
    pub certificates: Vec<CertificateStatus>,
    pub last_reload: LastReload,
}

#[derive(Debug, Clone, Serialize)]
pub struct CertificateStatus {
    pub names: Vec<String>,
    #[serde(serialize_with = "rfc3339")]
    pub not_after: SystemTime,
    pub sha256: String,
    pub cert: String,
    pub key: String,
}

#[derive(Debug)]
struct Record {
    last: LastReload,
    /// The errors last reported, so a watcher event for an unrelated file
    /// that finds the same broken pair again is not a new failure.
    reported: Option<TlsError>,
}

/// The certificate pairs of the TLS listener.
#[derive(Debug)]
pub struct Certificates {
    paths: Vec<PairPaths>,
    provider: Arc<CryptoProvider>,
    live: Arc<ArcSwap<CertSet>>,
    record: Mutex<Record>,
    reloads_ok: AtomicU64,
    reloads_error: AtomicU64,
}

impl Certificates {
    /// Loads every pair; any that fails means the listener must not start.
    pub fn load(paths: Vec<PairPaths>) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let now = SystemTime::now();
        let mut pairs = Vec::with_capacity(paths.len());
        let mut errors = Vec::new();
        for pair in &paths {
            match LoadedPair::load(pair, &provider, now) {
                Ok(loaded) => pairs.push(Arc::new(loaded)),
                Err(error) => errors.push(error),
            }
        }
        if !errors.is_empty() {
            return Err(TlsError(errors));
        }
        let set = CertSet::new(pairs);
        warn_if_expiring(&set, now);
        Ok(Certificates {
            paths,
            provider,
            live: Arc::new(ArcSwap::from_pointee(set)),
            record: Mutex::new(Record {
                last: LastReload {
                    ok: true,
                    at: now,
                    error: None,
                },
                reported: None,
            }),
            reloads_ok: AtomicU64::new(0),
            reloads_error: AtomicU64::new(0),
        })
    }

    pub fn paths(&self) -> &[PairPaths] {
        &self.paths
    }

    pub fn live(&self) -> Arc<CertSet> {
        self.live.load_full()
    }

    /// The listener's rustls configuration: TLS 1.2 and 1.3, ALPN `h2` and
    /// `http/1.1`, certificates from the live set, and session tickets so
    /// a returning client can skip the full handshake.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, rustls::Error> {
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver {
                live: Arc::clone(&self.live),
            }));
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
        Ok(Arc::new(config))
    }

    /// Reads every pair again and puts the ones that changed and pass
    /// every check live; a pair that fails keeps serving its old version.
    pub fn reload(&self, trigger: Trigger, on_failure: OnFailure) -> TlsReload {
        let mut record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
        let now = SystemTime::now();
        let current = self.live.load_full();
        let mut next = Vec::with_capacity(self.paths.len());
        let mut errors = Vec::new();
        let mut replaced = false;
        for (paths, serving) in self.paths.iter().zip(current.pairs()) {
            next.push(match LoadedPair::load(paths, &self.provider, now) {
                Ok(loaded) if loaded.sha256 == serving.sha256 => Arc::clone(serving),
                Ok(loaded) => {
                    replaced = true;
                    Arc::new(loaded)
                }
                Err(error) => {
                    errors.push(error);
                    Arc::clone(serving)
                }
            });
        }
        if !errors.is_empty() && on_failure == OnFailure::Hold {
            return TlsReload::Held(TlsError(errors));
        }
        if replaced {
            for (pair, serving) in next.iter().zip(current.pairs()) {
                if !Arc::ptr_eq(pair, serving) {
                    tracing::info!(%trigger, names = %pair.names_joined(), not_after = %rfc3339_string(pair.not_after),
                        sha256 = %pair.sha256, "certificate live");
                }
            }
            let set = CertSet::new(next);
            warn_if_expiring(&set, now);
            self.live.store(Arc::new(set));
        }
        if errors.is_empty() {
            record.reported = None;
            // Files put back the way they serve end an earlier failure too.
            if replaced || !record.last.ok {
                record.last = LastReload {
                    ok: true,
                    at: now,
                    error: None,
                };
            }
            if !replaced {
                return TlsReload::Unchanged;
            }
            self.reloads_ok.fetch_add(1, Ordering::Relaxed);
            return TlsReload::Replaced;
        }
        let error = TlsError(errors);
        let followed = matches!(trigger, Trigger::Watch | Trigger::Poll);
        if followed && !replaced && record.reported.as_ref() == Some(&error) {
            return TlsReload::Failed(error);
        }
        tracing::error!(%trigger, %error, "certificate reload rejected; the old pair keeps serving");
        self.reloads_error.fetch_add(1, Ordering::Relaxed);
        record.last = LastReload {
            ok: false,
            at: now,
            error: Some(error.to_string()),
        };
        record.reported = Some(error.clone());
        TlsReload::Failed(error)
    }

    pub fn status(&self) -> TlsStatus {
        let last_reload = self
            .record
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last
            .clone();
        let certificates = self
            .live
            .load()
            .pairs()
            .iter()
            .map(|pair| CertificateStatus {
                names: pair.names.clone(),
                not_after: pair.not_after,
                sha256: pair.sha256.clone(),
                cert: pair.paths.cert.display().to_string(),
                key: pair.paths.key.display().to_string(),
            })
            .collect();
        TlsStatus {
            certificates,
            last_reload,
        }
    }

    /// The TLS series of `/metrics`, read at scrape time.
    pub fn collector(self: &Arc<Self>) -> Box<dyn Collector> {
        Box::new(CertificateMetrics(Arc::clone(self)))
    }

    /// Warns about every live certificate that expires within
    /// [`EXPIRY_WARNING`]; run once a day, since certificates expire
    /// without anything being reloaded.
    pub fn warn_if_expiring(&self) {
        warn_if_expiring(&self.live.load(), SystemTime::now());
    }
}

fn warn_if_expiring(set: &CertSet, now: SystemTime) {
    for pair in set.pairs() {
        let left = pair.expires_in(now);
        if left < EXPIRY_WARNING {
            tracing::warn!(
                names = %pair.names_joined(),
                cert = %pair.paths.cert.display(),
                not_after = %rfc3339_string(pair.not_after),
                days_left = left.as_secs() / 86_400,
                "certificate expires soon"
            );
        }
    }
}

/// `switchyard_tls_certificate_expiry_timestamp_seconds{name}` for every
/// name of every live pair, and `switchyard_tls_reloads_total{result}`.
#[derive(Debug)]
struct CertificateMetrics(Arc<Certificates>);

impl Collector for CertificateMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let set = self.0.live.load_full();
        let mut expiry = encoder.encode_descriptor(
            "switchyard_tls_certificate_expiry_timestamp_seconds",
            "When the certificate serving this name expires, in seconds since the Unix epoch",
            None,
            MetricType::Gauge,
        )?;
        for pair in set.pairs() {
            let not_after = pair.not_after_unix();
            for name in &pair.names {
                expiry
                    .encode_family(&[("name", name.as_str())])?
                    .encode_gauge(&not_after)?;
            }
        }
        let mut reloads = encoder.encode_descriptor(
            "switchyard_tls_reloads",
            "Certificate reloads that put a new pair live (ok) or found a pair that cannot serve (error)",
            None,
            MetricType::Counter,
        )?;
        for (result, count) in [("ok", &self.0.reloads_ok), ("error", &self.0.reloads_error)] {
            reloads
                .encode_family(&[("result", result)])?
                .encode_counter::<NoLabelSet, _, u64>(&count.load(Ordering::Relaxed), None)?;
        }
        Ok(())
    }
}
