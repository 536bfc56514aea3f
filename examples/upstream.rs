//! A small upstream for benchmarks and manual tours: `GET /bytes/N` streams
//! N zero bytes in 64 KiB chunks, `POST|PUT /sink` reads and counts a body of
//! any size without keeping it, and anything else answers `ok`.
//!
//! `cargo run --release --example upstream -- 127.0.0.1:9001`

use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use axum::extract::Path;
use axum::routing::{any, get};
use axum::Router;
use futures_util::StreamExt;

/// Chunk size of generated bodies: the size hyper writes in one go anyway.
const CHUNK: usize = 64 * 1024;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_owned())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("upstream listening on {}", listener.local_addr()?);
    axum::serve(listener, app()).await
}

/// The upstream's routes, also served in-process by `pgo_train`.
pub fn app() -> Router {
    Router::new()
        .route("/bytes/{n}", get(bytes))
        .route("/sink", any(sink))
        .fallback(|| async { "ok\n" })
}

async fn bytes(Path(n): Path<u64>) -> Body {
    let chunk = Bytes::from(vec![0u8; CHUNK]);
    let full = n / CHUNK as u64;
    let rest = (n % CHUNK as u64) as usize;
    let stream = futures_util::stream::iter((0..full).map(move |_| chunk.clone()))
        .chain(futures_util::stream::iter(
            (rest > 0).then(|| Bytes::from(vec![0u8; rest])),
        ))
        .map(Ok::<_, std::io::Error>);
    Body::from_stream(stream)
}

async fn sink(body: Body) -> String {
    let mut stream = body.into_data_stream();
    let mut total: u64 = 0;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => total += chunk.len() as u64,
            Err(error) => return format!("error after {total} bytes: {error}\n"),
        }
    }
    format!("{total}\n")
}
