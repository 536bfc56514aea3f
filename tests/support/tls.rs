//! Certificates made for one test (a CA of its own and leaves it signs,
//! written as PEM files) and a real TLS client that trusts only that CA
//! and says which certificate the server presented and which protocol ALPN
//! chose.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A TLS exchange that has not finished by then is stuck.
pub const TLS_DEADLINE: Duration = Duration::from_secs(10);

/// A certificate authority of the test's own.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its key, as PEM.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl Leaf {
    /// Writes `NAME.pem` and `NAME.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write the certificate");
        std::fs::write(&key, &self.key_pem).expect("write the key");
        (cert, key)
    }

    /// Replaces the files at `cert` and `key` the way a careful tool does:
    /// each written beside its target and renamed over it, key first.
    pub fn rename_over(&self, cert: &Path, key: &Path) {
        for (path, text) in [(key, &self.key_pem), (cert, &self.cert_pem)] {
            let staged = path.with_extension("staged");
            std::fs::write(&staged, text).expect("write the staged file");
            std::fs::rename(&staged, path).expect("rename over the live file");
        }
    }
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, "switchyard test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("a CA key");
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, key).expect("a CA certificate"),
        }
    }

    /// The CA's own certificate, as PEM: what a client or server that
    /// trusts it is given.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA's certificate as `NAME.pem` into `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, self.pem()).expect("write the CA certificate");
        path
    }

    /// A client certificate (extended key usage: client authentication)
    /// named `name`, valid from a day ago for 90 days.
    pub fn client_leaf(&self, name: &str) -> Leaf {
        let now = time_now();
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(90);
        let key = KeyPair::generate().expect("a client key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("a signed client certificate");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// A leaf for `names` (DNS names, or IP addresses), valid from a day
    /// ago for 90 days.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_expiring_in(names, 90)
    }

    /// A leaf for `names` that expires in `days` days.
    pub fn leaf_expiring_in(&self, names: &[&str], days: i64) -> Leaf {
        let now = time_now();
        self.leaf_valid(
            names,
            now - time::Duration::days(1),
            now + time::Duration::days(days),
        )
    }

    /// A leaf whose validity ended yesterday.
    pub fn expired_leaf(&self, names: &[&str]) -> Leaf {
        let now = time_now();
        self.leaf_valid(
            names,
            now - time::Duration::days(30),
            now - time::Duration::days(1),
        )
    }

    fn leaf_valid(
        &self,
        names: &[&str],
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("leaf parameters");
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate().expect("a leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("a signed leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// A client that trusts this CA only and offers `alpn`.
    pub fn client(&self, alpn: &[&[u8]]) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.issuer.der().clone())
            .expect("the CA certificate is a trust anchor");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// One HTTPS connection to the router, HTTP/1.1 or HTTP/2 as ALPN chose.
pub struct HttpsConnection {
    /// The leaf certificate the server presented.
    pub presented: CertificateDer<'static>,
    /// The protocol ALPN settled on.
    pub alpn: Option<Vec<u8>>,
    sender: Sender,
    host: String,
}

enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl HttpsConnection {
    /// Connects to `addr` asking for `server_name` by SNI (an IP address
    /// sends no SNI) and completes the handshake.
    pub async fn open(
        addr: SocketAddr,
        server_name: &str,
        connector: &TlsConnector,
    ) -> Result<HttpsConnection, String> {
        tokio::time::timeout(TLS_DEADLINE, Self::open_now(addr, server_name, connector))
            .await
            .map_err(|_| format!("no TLS connection to {addr} within {TLS_DEADLINE:?}"))?
    }

    async fn open_now(
        addr: SocketAddr,
        server_name: &str,
        connector: &TlsConnector,
    ) -> Result<HttpsConnection, String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from(server_name.to_owned()).map_err(|e| e.to_string())?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let (_, session) = tls.get_ref();
        let presented = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .cloned()
            .ok_or("the server presented no certificate")?;
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let io = TokioIo::new(tls);
        let sender = if alpn.as_deref() == Some(b"h2") {
            let (sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            Sender::Http2(sender)
        } else {
            let (sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            Sender::Http1(sender)
        };
        Ok(HttpsConnection {
            presented,
            alpn,
            sender,
            host: server_name.to_owned(),
        })
    }

    /// `GET path` on this connection: the status and the body as text.
    pub async fn get(&mut self, path: &str) -> Result<(StatusCode, String), String> {
        tokio::time::timeout(TLS_DEADLINE, self.get_now(path))
            .await
            .map_err(|_| format!("no answer to GET {path} within {TLS_DEADLINE:?}"))?
    }

    async fn get_now(&mut self, path: &str) -> Result<(StatusCode, String), String> {
        let response = match &mut self.sender {
            Sender::Http1(sender) => {
                let request = Request::get(path)
                    .header("host", &self.host)
                    .body(Empty::new())
                    .map_err(|e| e.to_string())?;
                sender.ready().await.map_err(|e| e.to_string())?;
                sender.send_request(request).await
            }
            Sender::Http2(sender) => {
                let request = Request::get(format!("https://{}{path}", self.host))
                    .body(Empty::new())
                    .map_err(|e| e.to_string())?;
                sender.ready().await.map_err(|e| e.to_string())?;
                sender.send_request(request).await
            }
        }
        .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}
