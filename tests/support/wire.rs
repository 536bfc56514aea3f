//! Talking to the router: an HTTP client that behaves like a plain client
//! (no proxies, no redirects followed), a raw-socket client for requests no
//! HTTP library will send, and streamed request bodies.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A test whose exchange takes longer than this is stuck, not slow; it
/// fails instead of hanging the suite.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// A client that talks to the address it is given (no `HTTP_PROXY` from
/// the environment) and hands back redirects instead of following them.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(EXCHANGE_TIMEOUT)
        .build()
        .expect("a test HTTP client")
}

/// Reads a response body as JSON; panics with the body if it is not.
pub async fn json_of(response: reqwest::Response) -> Value {
    let status = response.status();
    let bytes = response.bytes().await.expect("a response body");
    serde_json::from_slice(&bytes).unwrap_or_else(|error| {
        panic!(
            "body of a {status} answer is not JSON ({error}): {}",
            String::from_utf8_lossy(&bytes)
        )
    })
}

/// A request body of `total` bytes of `u`, produced `chunk` bytes at a time
/// by a stream, so neither the test nor the client holds it whole.
pub fn streamed_body(total: u64, chunk: usize) -> reqwest::Body {
    let piece = Bytes::from(vec![b'u'; chunk]);
    let chunks = total.div_ceil(chunk as u64);
    let stream = futures_util::stream::iter((0..chunks).map(move |i| {
        let left = total - i * chunk as u64;
        let len = left.min(chunk as u64) as usize;
        Ok::<_, std::io::Error>(piece.slice(..len))
    }));
    reqwest::Body::wrap_stream(stream)
}

/// A response read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked if it was sent chunked.
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "body of a {} answer is not JSON ({error}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Writes `request` and reads until the router closes the connection, for
/// requests the router refuses: it may close before reading all of the
/// request, so a failed write or a reset are tolerated. Panics if the
/// connection stays open for 5 s. Returns whatever arrived, as text.
pub async fn send_raw_until_closed(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.write_all(request.as_bytes()).await;
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the router kept the connection open");
    String::from_utf8_lossy(&received).into_owned()
}

/// Writes `request` byte for byte to `addr` and reads the answer until the
/// server closes the connection, so the request should say
/// `Connection: close`. For request targets that HTTP clients would
/// normalize before sending (`/a/../b`, `%2e%2e`, `\`).
pub async fn send_raw(addr: SocketAddr, request: &str) -> RawResponse {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write the request");
        let mut received = Vec::new();
        stream
            .read_to_end(&mut received)
            .await
            .expect("read the response");
        received
    };
    let received = tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .expect("the server closes the connection after answering");
    parse_response(&received)
}

fn parse_response(received: &[u8]) -> RawResponse {
    let text_end = received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no complete response head in {:?}",
                String::from_utf8_lossy(received)
            )
        });
    let head = String::from_utf8_lossy(&received[..text_end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let raw_body = &received[text_end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(raw_body)
    } else {
        raw_body.to_vec()
    };
    RawResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size line");
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).expect("a hex chunk size");
        raw = &raw[line_end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}
