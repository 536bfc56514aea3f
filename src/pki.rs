//! Certificates and keys read from PEM files and checked, for every part
//! that speaks TLS: a certificate pair (a chain and its private key: both
//! parse, the key is the certificate's, the certificate has not expired)
//! with the names, expiry and fingerprint that `check`, `/healthz` and the
//! metrics show, as the TLS listener serves them and an upstream client
//! presents them; trust anchors for verifying upstreams; and the SHA-256
//! digests the router names files by.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use x509_parser::extensions::GeneralName;

use sha2::{Digest, Sha256};

/// Where one pair is read from, as given by `--tls-cert` and `--tls-key`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PairPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl fmt::Display for PairPaths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} + {}", self.cert.display(), self.key.display())
    }
}

/// Why a pair cannot serve. Each message names the file at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: not a PEM certificate chain: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("{path}: not a usable PEM private key: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("{key} is not the key of the certificate in {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("{path}: the certificate expired at {not_after}")]
    Expired { path: PathBuf, not_after: String },
}

/// A pair that passed every check, ready to hand to rustls.
#[derive(Debug)]
pub struct LoadedPair {
    pub paths: PairPaths,
    /// The DNS names the certificate is for (its subject alternative
    /// names, or its common name when it has none), lower case; wildcards
    /// keep their `*.`.
    pub names: Vec<String>,
    pub not_after: SystemTime,
    /// Of the leaf certificate's DER bytes, in hex: what
    /// `openssl x509 -noout -fingerprint -sha256` prints, without colons.
    pub sha256: String,
    pub certified: Arc<CertifiedKey>,
}

impl LoadedPair {
    /// Reads and checks the pair at `paths`, as of `now`.
    pub fn load(
        paths: &PairPaths,
        provider: &CryptoProvider,
        now: SystemTime,
    ) -> Result<LoadedPair, PairError> {
        let cert_pem = read(&paths.cert)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| certificate_error(&paths.cert, e))?;
        let leaf = chain
            .first()
            .ok_or_else(|| certificate_error(&paths.cert, "no CERTIFICATE section"))?;
        let (names, not_after) = describe(leaf).map_err(|e| certificate_error(&paths.cert, e))?;
        let sha256 = sha256_hex(leaf.as_ref());

        let key_pem = read(&paths.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| PairError::Key {
            path: paths.key.clone(),
            reason: e.to_string(),
        })?;
        let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => PairError::Mismatch {
                cert: paths.cert.clone(),
                key: paths.key.clone(),
            },
            other => PairError::Key {
                path: paths.key.clone(),
                reason: other.to_string(),
            },
        })?;
        if not_after <= now {
            return Err(PairError::Expired {
                path: paths.cert.clone(),
                not_after: rfc3339(not_after),
            });
        }
        Ok(LoadedPair {
            paths: paths.clone(),
            names,
            not_after,
            sha256,
            certified: Arc::new(certified),
        })
    }

    /// How long until the certificate expires; zero once it has.
    pub fn expires_in(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or(Duration::ZERO)
    }

    /// Seconds since the Unix epoch, for the expiry metric.
    pub fn not_after_unix(&self) -> i64 {
        match self.not_after.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
        }
    }

    /// The names for messages: `a.example.com, *.b.example.com`.
    pub fn names_joined(&self) -> String {
        self.names.join(", ")
    }
}

/// Reads the trust anchors in a PEM bundle: every certificate in it, at
/// least one.
pub fn load_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, PairError> {
    let pem = read(path)?;
    let roots = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| certificate_error(path, e))?;
    if roots.is_empty() {
        return Err(certificate_error(path, "no CERTIFICATE section"));
    }
    Ok(roots)
}

fn read(path: &Path) -> Result<Vec<u8>, PairError> {
    std::fs::read(path).map_err(|e| PairError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn certificate_error(path: &Path, reason: impl fmt::Display) -> PairError {
    PairError::Certificate {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The leaf's DNS names and its `notAfter`.
fn describe(leaf: &CertificateDer<'_>) -> Result<(Vec<String>, SystemTime), String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| e.to_string())?;
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(e.to_string()),
    };
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    let timestamp = cert.validity().not_after.timestamp();
    let not_after = match u64::try_from(timestamp) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => UNIX_EPOCH - Duration::from_secs(timestamp.unsigned_abs()),
    };
    Ok((names, not_after))
}

/// RFC 3339 UTC with whole seconds, as everything else the router prints.
pub fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// The SHA-256 of `bytes` in lower-case hex, the form `sha256sum` prints.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
