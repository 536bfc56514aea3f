//! A load generator for full TLS handshakes, for `benches/tls.sh`: each of
//! CONNS tasks opens a connection, completes a handshake with session
//! resumption off (wrk resumes sessions, so it cannot measure this), sends
//! one `GET /small` with `Connection: close`, reads the answer to its end,
//! and starts over, for SECONDS. Prints completed connections per second.
//!
//! `cargo run --release --example handshakes -- ADDR NAME CA.pem SECONDS CONNS`

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

type Failure = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, name, ca, seconds, conns] = args.as_slice() else {
        return Err("usage: handshakes ADDR NAME CA.pem SECONDS CONNS".into());
    };
    let addr: SocketAddr = addr.parse()?;
    let name = ServerName::try_from(name.clone())?;
    let duration = Duration::from_secs(seconds.parse()?);
    let conns: usize = conns.parse()?;

    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    let connector = TlsConnector::from(Arc::new(config));

    let request = format!(
        "GET /small HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        name.to_str()
    );
    let done = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let (connector, name, request) = (connector.clone(), name.clone(), request.clone());
        let (done, completed, failed) = (
            Arc::clone(&done),
            Arc::clone(&completed),
            Arc::clone(&failed),
        );
        tasks.push(tokio::spawn(async move {
            let mut answer = Vec::with_capacity(512);
            while !done.load(Ordering::Relaxed) {
                let exchange = async {
                    let tcp = TcpStream::connect(addr).await?;
                    tcp.set_nodelay(true)?;
                    let mut tls = connector.connect(name.clone(), tcp).await?;
                    tls.write_all(request.as_bytes()).await?;
                    answer.clear();
                    match tls.read_to_end(&mut answer).await {
                        // A peer that closes without close_notify has still
                        // answered in full when its headers said so.
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
                        Err(e) => return Err(e),
                    }
                    Ok::<_, std::io::Error>(answer.starts_with(b"HTTP/1.1 200"))
                };
                match exchange.await {
                    Ok(true) => completed.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(duration).await;
    done.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{} connections in {elapsed:.1}s, {:.0}/s, {} failed",
        completed.load(Ordering::Relaxed),
        completed.load(Ordering::Relaxed) as f64 / elapsed,
        failed.load(Ordering::Relaxed)
    );
    Ok(())
}
