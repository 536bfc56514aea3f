//! `upstream_tls:` (SPEC 8): the trust anchors, client certificate and
//! server name a route's `https://` upstreams are spoken to with. Each
//! file is read and checked as the file is parsed, as the TLS listener's
//! pairs are, so a bad one is refused with its line and column.

use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

use rustls::pki_types::ServerName;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::Checked;
use crate::pki::{load_roots, LoadedPair, PairPaths};

/// A route's `upstream_tls`, its files checked when it was read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamTlsSpec {
    /// Trust anchors that replace the system's roots.
    pub ca: Option<PathBuf>,
    /// The client certificate and key presented to the upstream.
    pub identity: Option<PairPaths>,
    /// Sent as SNI and verified in place of the URL's host.
    pub server_name: Option<String>,
}

impl fmt::Display for UpstreamTlsSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(ca) = &self.ca {
            parts.push(format!("ca {}", ca.display()));
        }
        if let Some(identity) = &self.identity {
            parts.push(format!("client certificate {identity}"));
        }
        if let Some(name) = &self.server_name {
            parts.push(format!("server name {name}"));
        }
        f.write_str(&parts.join(", "))
    }
}

/// A file named in `upstream_tls`, as written.
struct FilePath(PathBuf);

fn file_path(text: &str) -> Result<FilePath, String> {
    if text.is_empty() {
        return Err("a file path cannot be empty".to_owned());
    }
    Ok(FilePath(PathBuf::from(text)))
}

fn trust_anchors(text: &str) -> Result<FilePath, String> {
    let path = file_path(text)?;
    load_roots(&path.0).map_err(|e| format!("`ca`: {e}"))?;
    Ok(path)
}

fn server_name(text: &str) -> Result<String, String> {
    match ServerName::try_from(text) {
        Ok(ServerName::DnsName(_)) => Ok(text.to_ascii_lowercase()),
        _ => Err(format!("`{text}` is not a DNS name to send as SNI")),
    }
}

impl<'de> Deserialize<'de> for UpstreamTlsSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SpecVisitor;
        impl<'de> Visitor<'de> for SpecVisitor {
            type Value = UpstreamTlsSpec;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`{ ca, cert, key, server_name }`")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UpstreamTlsSpec, A::Error> {
                let mut ca = None;
                let mut cert = None;
                let mut key = None;
                let mut name = None;
                while let Some(field) = map.next_key::<String>()? {
                    let repeated = match field.as_str() {
                        "ca" => ca
                            .replace(map.next_value_seed(Checked("a PEM file", trust_anchors))?)
                            .is_some(),
                        "cert" => cert
                            .replace(map.next_value_seed(Checked("a PEM file", file_path))?)
                            .is_some(),
                        "key" => key
                            .replace(map.next_value_seed(Checked("a PEM file", file_path))?)
                            .is_some(),
                        "server_name" => name
                            .replace(map.next_value_seed(Checked("a DNS name", server_name))?)
                            .is_some(),
                        other => {
                            return Err(de::Error::unknown_field(
                                other,
                                &["ca", "cert", "key", "server_name"],
                            ))
                        }
                    };
                    if repeated {
                        return Err(de::Error::custom(format!("duplicate field `{field}`")));
                    }
                }
                let identity = match (cert, key) {
                    (None, None) => None,
                    (Some(cert), Some(key)) => {
                        let paths = PairPaths {
                            cert: cert.0,
                            key: key.0,
                        };
                        let provider = rustls::crypto::aws_lc_rs::default_provider();
                        LoadedPair::load(&paths, &provider, SystemTime::now()).map_err(|e| {
                            de::Error::custom(format!("`upstream_tls`: client certificate: {e}"))
                        })?;
                        Some(paths)
                    }
                    _ => {
                        return Err(de::Error::custom(
                            "`upstream_tls`: `cert` and `key` go together: give both or neither",
                        ))
                    }
                };
                Ok(UpstreamTlsSpec {
                    ca: ca.map(|c| c.0),
                    identity,
                    server_name: name,
                })
            }
        }
        d.deserialize_map(SpecVisitor)
    }
}
