//! HTTP/2 on the wire, built by hand: frames (a 9-byte header and a
//! payload, RFC 9113 4.1), the few HPACK representations the cases need
//! (RFC 7541 5 and 6), and a client connection over cleartext (prior
//! knowledge) or TLS (ALPN `h2`) that sends exactly the bytes a case asks
//! for and reads back what the server answers, frame by frame.
//!
//! No HTTP/2 library is used on the client side, so a case can send what
//! every library refuses to: bad lengths, wrong stream ids, broken header
//! blocks.

use std::net::SocketAddr;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// What a client with prior knowledge sends first (RFC 9113 3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a case waits for the server's next frame: h2spec's default
/// timeout is 2 s; this is generous for a loaded two-core machine.
pub const FRAME_WAIT: Duration = Duration::from_secs(5);

/// The initial SETTINGS_MAX_FRAME_SIZE (RFC 9113 6.5.2).
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16_384;

/// Frame types (RFC 9113 6).
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags (RFC 9113 6).
pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// SETTINGS parameters (RFC 9113 6.5.2).
pub mod setting {
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
}

/// An HTTP/2 error code (RFC 9113 7).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Code(pub u32);

impl Code {
    pub const NO_ERROR: Code = Code(0x0);
    pub const PROTOCOL_ERROR: Code = Code(0x1);
    pub const FLOW_CONTROL_ERROR: Code = Code(0x3);
    pub const STREAM_CLOSED: Code = Code(0x5);
    pub const FRAME_SIZE_ERROR: Code = Code(0x6);
    pub const REFUSED_STREAM: Code = Code(0x7);
    pub const CANCEL: Code = Code(0x8);
    pub const ENHANCE_YOUR_CALM: Code = Code(0xb);
}

impl std::fmt::Debug for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.0 {
            0x0 => "NO_ERROR",
            0x1 => "PROTOCOL_ERROR",
            0x2 => "INTERNAL_ERROR",
            0x3 => "FLOW_CONTROL_ERROR",
            0x4 => "SETTINGS_TIMEOUT",
            0x5 => "STREAM_CLOSED",
            0x6 => "FRAME_SIZE_ERROR",
            0x7 => "REFUSED_STREAM",
            0x8 => "CANCEL",
            0x9 => "COMPRESSION_ERROR",
            0xa => "CONNECT_ERROR",
            0xb => "ENHANCE_YOUR_CALM",
            0xc => "INADEQUATE_SECURITY",
            0xd => "HTTP_1_1_REQUIRED",
            _ => return write!(f, "0x{:x}", self.0),
        };
        f.write_str(name)
    }
}

/// One frame as read off the wire.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a GOAWAY or RST_STREAM frame.
    pub fn error_code(&self) -> Option<Code> {
        let at = match self.kind {
            kind::GOAWAY => 4,
            kind::RST_STREAM => 0,
            _ => return None,
        };
        let bytes = self.payload.get(at..at + 4)?;
        Some(Code(u32::from_be_bytes(bytes.try_into().ok()?)))
    }

    /// The last stream id of a GOAWAY frame.
    pub fn last_stream_id(&self) -> Option<u32> {
        let bytes = self.payload.get(..4)?;
        Some(u32::from_be_bytes(bytes.try_into().ok()?) & 0x7fff_ffff)
    }
}

/// A frame's bytes: its 9-byte header, then `payload`. The length is the
/// payload's, so a case that lies about the length writes the header
/// itself with [`frame_header`].
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = frame_header(payload.len(), kind, flags, stream);
    bytes.extend_from_slice(payload);
    bytes
}

/// A frame header with any length (24 bits), type, flags and stream id
/// (the reserved bit included, if set in `stream`).
pub fn frame_header(length: usize, kind: u8, flags: u8, stream: u32) -> Vec<u8> {
    let length = u32::try_from(length).expect("a 24-bit length");
    let mut bytes = length.to_be_bytes()[1..].to_vec();
    bytes.push(kind);
    bytes.push(flags);
    bytes.extend_from_slice(&stream.to_be_bytes());
    bytes
}

/// A SETTINGS payload of (identifier, value) pairs.
pub fn settings_payload(pairs: &[(u16, u32)]) -> Vec<u8> {
    let mut payload = Vec::new();
    for (id, value) in pairs {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    payload
}

/// HPACK's prefixed integer (RFC 7541 5.1): `first` holds the
/// representation's pattern bits above the `prefix` low bits.
pub fn hpack_int(first: u8, prefix: u32, value: usize) -> Vec<u8> {
    let max = (1usize << prefix) - 1;
    if value < max {
        return vec![first | value as u8];
    }
    let mut bytes = vec![first | max as u8];
    let mut rest = value - max;
    while rest >= 128 {
        bytes.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    bytes.push(rest as u8);
    bytes
}

/// A string literal, not Huffman-coded (RFC 7541 5.2).
pub fn hpack_string(text: &[u8]) -> Vec<u8> {
    let mut bytes = hpack_int(0x00, 7, text.len());
    bytes.extend_from_slice(text);
    bytes
}

/// A literal header field without indexing, with a new name (RFC 7541
/// 6.2.2): the easiest representation to write by hand.
pub fn literal(name: &str, value: &str) -> Vec<u8> {
    let mut bytes = vec![0x00];
    bytes.extend(hpack_string(name.as_bytes()));
    bytes.extend(hpack_string(value.as_bytes()));
    bytes
}

/// A literal header field with incremental indexing and a new name (RFC
/// 7541 6.2.1): it enters the dynamic table.
pub fn literal_indexed(name: &str, value: &str) -> Vec<u8> {
    let mut bytes = vec![0x40];
    bytes.extend(hpack_string(name.as_bytes()));
    bytes.extend(hpack_string(value.as_bytes()));
    bytes
}

/// An indexed header field (RFC 7541 6.1).
pub fn indexed(index: usize) -> Vec<u8> {
    hpack_int(0x80, 7, index)
}

/// A dynamic table size update (RFC 7541 6.3).
pub fn table_size_update(size: usize) -> Vec<u8> {
    hpack_int(0x20, 5, size)
}

/// The header block of a request: the four pseudo-headers of a GET to
/// `path`, then `extra` fields, each a literal without indexing.
pub fn request_block(method: &str, scheme: &str, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in [
        (":method", method),
        (":scheme", scheme),
        (":path", path),
        (":authority", "conformance.test"),
    ] {
        block.extend(literal(name, value));
    }
    for (name, value) in extra {
        block.extend(literal(name, value));
    }
    block
}

/// Any byte stream a connection runs over: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Which of the router's listeners a connection goes to.
#[derive(Clone)]
pub enum Listener {
    /// Cleartext, HTTP/2 with prior knowledge.
    Plain(SocketAddr),
    /// TLS, HTTP/2 agreed by ALPN.
    Tls(SocketAddr, TlsConnector),
}

impl Listener {
    pub fn name(&self) -> &'static str {
        match self {
            Listener::Plain(_) => "h2c",
            Listener::Tls(..) => "h2 over TLS",
        }
    }

    pub fn scheme(&self) -> &'static str {
        match self {
            Listener::Plain(_) => "http",
            Listener::Tls(..) => "https",
        }
    }

    /// A connected stream, before any HTTP/2 byte; for TLS, the handshake
    /// is done and ALPN agreed on `h2`.
    pub async fn connect(&self) -> Result<Box<dyn Io>, String> {
        let addr = match self {
            Listener::Plain(addr) | Listener::Tls(addr, _) => *addr,
        };
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        match self {
            Listener::Plain(_) => Ok(Box::new(tcp)),
            Listener::Tls(_, connector) => {
                let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
                let tls = tokio::time::timeout(FRAME_WAIT, connector.connect(name, tcp))
                    .await
                    .map_err(|_| "no TLS handshake in time".to_owned())?
                    .map_err(|e| format!("TLS handshake: {e}"))?;
                if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                    return Err("ALPN did not agree on h2".to_owned());
                }
                Ok(Box::new(tls))
            }
        }
    }
}

/// How a wait for the server ended without the frame it waited for.
#[derive(Debug)]
pub enum Ended {
    /// The server closed the connection (or reset it).
    Closed,
    /// Nothing came within [`FRAME_WAIT`].
    Silent,
}

/// A client connection that writes raw bytes and reads whole frames.
pub struct H2 {
    io: Box<dyn Io>,
    pub scheme: &'static str,
    /// Frames read and set aside by a wait that looked for another.
    pub seen: Vec<Frame>,
    /// The parameters of the server's first SETTINGS frame.
    server_settings: Vec<(u16, u32)>,
}

impl H2 {
    /// Connects without sending anything.
    pub async fn connect(listener: &Listener) -> Result<H2, String> {
        Ok(H2 {
            io: listener.connect().await?,
            scheme: listener.scheme(),
            seen: Vec::new(),
            server_settings: Vec::new(),
        })
    }

    /// Connects and completes the opening exchange as h2spec does: the
    /// preface and an empty SETTINGS out, the server's SETTINGS in and
    /// acknowledged, our SETTINGS acknowledged by the server.
    pub async fn open(listener: &Listener) -> Result<H2, String> {
        H2::open_with(listener, &[]).await
    }

    /// [`H2::open`] with our SETTINGS carrying `settings`.
    pub async fn open_with(listener: &Listener, settings: &[(u16, u32)]) -> Result<H2, String> {
        let mut h2 = H2::connect(listener).await?;
        let mut opening = PREFACE.to_vec();
        opening.extend(frame(kind::SETTINGS, 0, 0, &settings_payload(settings)));
        h2.send(&opening).await?;
        let mut got_settings = false;
        let mut got_ack = false;
        while !(got_settings && got_ack) {
            let next = h2
                .next_frame()
                .await
                .map_err(|e| format!("handshake: {e:?}"))?;
            if next.kind == kind::SETTINGS && next.flags & flag::ACK == 0 {
                got_settings = true;
                h2.server_settings = next
                    .payload
                    .chunks_exact(6)
                    .map(|pair| {
                        (
                            u16::from_be_bytes([pair[0], pair[1]]),
                            u32::from_be_bytes([pair[2], pair[3], pair[4], pair[5]]),
                        )
                    })
                    .collect();
                h2.send(&frame(kind::SETTINGS, flag::ACK, 0, &[])).await?;
            } else if next.kind == kind::SETTINGS {
                got_ack = true;
            }
        }
        Ok(h2)
    }

    /// The value the server's first SETTINGS gave `id`, if it gave one.
    pub fn server_setting(&self, id: u16) -> Option<u32> {
        self.server_settings
            .iter()
            .rev()
            .find(|(setting, _)| *setting == id)
            .map(|(_, value)| *value)
    }

    /// Writes `bytes` as they are.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.io
            .write_all(bytes)
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.io.flush().await.map_err(|e| format!("flush: {e}"))
    }

    /// Writes one frame.
    pub async fn send_frame(
        &mut self,
        kind: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
    ) -> Result<(), String> {
        self.send(&frame(kind, flags, stream, payload)).await
    }

    /// Sends a GET for `path` on `stream`, its header block in one
    /// HEADERS frame with END_HEADERS, and END_STREAM.
    pub async fn get(&mut self, stream: u32, path: &str) -> Result<(), String> {
        let block = request_block("GET", self.scheme, path, &[]);
        self.send_frame(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            stream,
            &block,
        )
        .await
    }

    /// Reads the next frame, waiting at most [`FRAME_WAIT`].
    pub async fn next_frame(&mut self) -> Result<Frame, Ended> {
        self.next_frame_within(FRAME_WAIT).await
    }

    /// Reads the next frame, waiting at most `wait`.
    pub async fn next_frame_within(&mut self, wait: Duration) -> Result<Frame, Ended> {
        read_frame(&mut self.io, wait).await
    }

    /// The connection's stream, for a client that reads and writes at
    /// once (see `tokio::io::split`).
    pub fn into_io(self) -> Box<dyn Io> {
        self.io
    }

    /// Reads frames until one satisfies `wanted`, keeping the others in
    /// [`H2::seen`].
    pub async fn wait_for(&mut self, wanted: impl Fn(&Frame) -> bool) -> Result<Frame, Ended> {
        loop {
            let next = self.next_frame().await?;
            if wanted(&next) {
                return Ok(next);
            }
            self.seen.push(next);
        }
    }

    /// The server must fail the connection with a GOAWAY carrying `code`
    /// (RFC 9113 5.4.1).
    pub async fn expect_goaway(&mut self, code: Code) -> Result<(), String> {
        match self.wait_for(|f| f.kind == kind::GOAWAY).await {
            Ok(goaway) if goaway.error_code() == Some(code) => Ok(()),
            Ok(goaway) => Err(format!(
                "GOAWAY {:?}, expected GOAWAY {code:?}",
                goaway.error_code()
            )),
            Err(ended) => Err(format!("{ended:?}, expected GOAWAY {code:?}")),
        }
    }

    /// The server must reset `stream` with `code` (RFC 9113 5.4.2). A
    /// GOAWAY with the same code is also what h2spec accepts for a stream
    /// error, since an endpoint may treat one as a connection error; it is
    /// reported so a case can tell which it got.
    pub async fn expect_reset(&mut self, stream: u32, code: Code) -> Result<Reaction, String> {
        let seen = self
            .wait_for(|f| {
                (f.kind == kind::RST_STREAM && f.stream == stream) || f.kind == kind::GOAWAY
            })
            .await;
        match seen {
            Ok(f) if f.error_code() == Some(code) && f.kind == kind::RST_STREAM => {
                Ok(Reaction::Reset)
            }
            Ok(f) if f.error_code() == Some(code) => Ok(Reaction::GoAway),
            Ok(f) => Err(format!(
                "{} {:?}, expected RST_STREAM {code:?} on stream {stream}",
                if f.kind == kind::GOAWAY {
                    "GOAWAY"
                } else {
                    "RST_STREAM"
                },
                f.error_code()
            )),
            Err(ended) => Err(format!(
                "{ended:?}, expected RST_STREAM {code:?} on stream {stream}"
            )),
        }
    }

    /// The connection must still work: a PING is answered with its
    /// payload (what h2spec checks after a frame that must be ignored).
    pub async fn expect_alive(&mut self) -> Result<(), String> {
        let payload = *b"alive?!!";
        self.send_frame(kind::PING, 0, 0, &payload).await?;
        match self
            .wait_for(|f| {
                f.kind == kind::PING && f.flags & flag::ACK != 0 || f.kind == kind::GOAWAY
            })
            .await
        {
            Ok(ping) if ping.kind == kind::PING && ping.payload == payload => Ok(()),
            Ok(other) => Err(format!(
                "expected the PING answered, got {:?} {:?}",
                other.kind,
                other.error_code()
            )),
            Err(ended) => Err(format!("{ended:?}, expected the PING answered")),
        }
    }

    /// The server must answer `stream` with a HEADERS frame.
    pub async fn expect_response(&mut self, stream: u32) -> Result<Frame, String> {
        self.wait_for(|f| (f.kind == kind::HEADERS && f.stream == stream) || f.kind == kind::GOAWAY)
            .await
            .map_err(|ended| format!("{ended:?}, expected a response on stream {stream}"))
            .and_then(|f| {
                if f.kind == kind::HEADERS {
                    Ok(f)
                } else {
                    Err(format!("GOAWAY {:?}, expected a response", f.error_code()))
                }
            })
    }

    /// The server must close the connection, with or without a GOAWAY
    /// first; returns the GOAWAY's code if there was one.
    pub async fn expect_closed(&mut self) -> Result<Option<Code>, String> {
        let mut goaway = None;
        loop {
            match self.next_frame().await {
                Ok(f) if f.kind == kind::GOAWAY => goaway = f.error_code(),
                Ok(_) => {}
                Err(Ended::Closed) => return Ok(goaway),
                Err(Ended::Silent) => return Err("the connection stays open".to_owned()),
            }
        }
    }
}

/// Reads one frame from `reader`, waiting at most `wait`.
pub async fn read_frame(
    reader: &mut (impl AsyncRead + Unpin),
    wait: Duration,
) -> Result<Frame, Ended> {
    let read = async {
        let mut header = [0u8; 9];
        reader.read_exact(&mut header).await.ok()?;
        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let mut payload = vec![0u8; length];
        reader.read_exact(&mut payload).await.ok()?;
        Some(Frame {
            kind: header[3],
            flags: header[4],
            stream: u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff,
            payload,
        })
    };
    match tokio::time::timeout(wait, read).await {
        Ok(Some(frame)) => Ok(frame),
        Ok(None) => Err(Ended::Closed),
        Err(_) => Err(Ended::Silent),
    }
}

/// How the server answered a stream error.
#[derive(Debug, PartialEq, Eq)]
pub enum Reaction {
    /// RST_STREAM on the stream: the connection lives on.
    Reset,
    /// GOAWAY: the server treated it as a connection error.
    GoAway,
}
