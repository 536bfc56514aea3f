//! The server cases of h2spec (its `http2` and `hpack` groups: RFC 9113
//! and RFC 7541), one function each, named in the table at the bottom by
//! h2spec's id. Each case opens its own connection to one listener and
//! returns `Ok` when the router answered as the RFC requires (the error
//! code of the GOAWAY or RST_STREAM included), or what it did instead.
//!
//! Where hyper's h2 server answers otherwise, the case asserts what it
//! does and says why next to it; docs/conformance.md lists those cases.
//!
//! Paths on the router under test (see `http2_frames_conform_on_both_listeners`):
//! `/` goes to an echo upstream that reads the whole request body before
//! answering (so a request stream without END_STREAM stays open), and
//! `/fixed` is answered by the router itself with [`FIXED_BODY`].

use futures_util::future::BoxFuture;

use super::h2wire::*;

/// The body the router answers `/fixed` with: long enough for the flow
/// control cases to see it cut into one-byte DATA frames.
pub const FIXED_BODY: &str = "flow-controlled body";

pub type Outcome = Result<(), String>;

/// What h2 (hyper's HTTP/2) fails the connection with when it cannot
/// decode a frame: a SETTINGS, PING, RST_STREAM, WINDOW_UPDATE or PRIORITY
/// of the wrong length, a SETTINGS value out of range, a header block
/// HPACK cannot decode. Its frame decoder maps every such error to
/// PROTOCOL_ERROR (h2 0.4, `codec/framed_read.rs`), where RFC 9113 and
/// RFC 7541 name FRAME_SIZE_ERROR, FLOW_CONTROL_ERROR or
/// COMPRESSION_ERROR. The connection is failed either way, as the RFC
/// requires; only the code differs, and hyper has no setting for it.
const H2_DECODE_ERROR: Code = Code::PROTOCOL_ERROR;

/// What h2 fails the connection with when a HEADERS or DATA frame comes
/// on a stream whose remote side is closed: PROTOCOL_ERROR for the whole
/// connection, where RFC 9113 5.1 asks for a stream error STREAM_CLOSED
/// (or, after END_STREAM, a connection error STREAM_CLOSED). Again the
/// peer is stopped, with another code.
const H2_STATE_ERROR: Code = Code::PROTOCOL_ERROR;

/// One h2spec case.
pub struct Case {
    /// h2spec's id, e.g. `http2/4.2/3`.
    pub id: &'static str,
    /// What the case sends, in h2spec's words.
    pub title: &'static str,
    pub run: fn(Listener) -> BoxFuture<'static, Outcome>,
    /// How the router's answer differs from the RFC's, where it does; the
    /// case then checks the answer it gives.
    pub deviates: Option<&'static str>,
}

macro_rules! case {
    ($id:literal, $title:literal, $run:ident) => {
        Case {
            id: $id,
            title: $title,
            run: |listener| Box::pin($run(listener)),
            deviates: None,
        }
    };
    ($id:literal, $title:literal, $run:ident, deviates: $how:literal) => {
        Case {
            id: $id,
            title: $title,
            run: |listener| Box::pin($run(listener)),
            deviates: Some($how),
        }
    };
}

/// A POST's header block on the connection's scheme, to the echo
/// upstream, which waits for the whole body: its stream stays open.
fn post_block(h2: &H2, extra: &[(&str, &str)]) -> Vec<u8> {
    request_block("POST", h2.scheme, "/", extra)
}

/// A GET of `/fixed` on the connection's scheme.
fn fixed_block(h2: &H2) -> Vec<u8> {
    request_block("GET", h2.scheme, "/fixed", &[])
}

/// Opens a connection, sends `frames` (built with the connection's
/// scheme), and expects a GOAWAY with `code`.
async fn connection_error(
    listener: Listener,
    code: Code,
    frames: impl FnOnce(&H2) -> Vec<u8>,
) -> Outcome {
    let mut h2 = H2::open(&listener).await?;
    let bytes = frames(&h2);
    h2.send(&bytes).await?;
    h2.expect_goaway(code).await
}

/// Opens a connection, sends `frames`, and expects `stream` reset with
/// `code`; a GOAWAY with the same code is accepted too (RFC 9113 5.4.2
/// lets an endpoint treat a stream error as a connection error), as h2spec
/// does.
async fn stream_error(
    listener: Listener,
    stream: u32,
    code: Code,
    frames: impl FnOnce(&H2) -> Vec<u8>,
) -> Outcome {
    let mut h2 = H2::open(&listener).await?;
    let bytes = frames(&h2);
    h2.send(&bytes).await?;
    h2.expect_reset(stream, code).await.map(|_| ())
}

/// A request on stream 1 whose header block holds `fields` after the four
/// pseudo-headers (or instead of them, with `pseudo: false`) must be
/// refused as malformed (RFC 9113 8.1.1): a stream error PROTOCOL_ERROR.
async fn malformed_request(listener: Listener, block: impl FnOnce(&H2) -> Vec<u8>) -> Outcome {
    stream_error(listener, 1, Code::PROTOCOL_ERROR, |h2| {
        frame(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            1,
            &block(h2),
        )
    })
    .await
}

/// Reads the response to `stream` up to its first DATA frame and returns
/// that frame's length.
async fn first_data_length(h2: &mut H2, stream: u32) -> Result<usize, String> {
    let data = h2
        .wait_for(|f| (f.kind == kind::DATA && f.stream == stream) || f.kind == kind::GOAWAY)
        .await
        .map_err(|e| format!("{e:?}, expected DATA on stream {stream}"))?;
    if data.kind != kind::DATA {
        return Err(format!("GOAWAY {:?}, expected DATA", data.error_code()));
    }
    Ok(data.payload.len())
}

/// Reads until the response on `stream` has ended (END_STREAM on HEADERS
/// or DATA).
async fn read_to_end_of_stream(h2: &mut H2, stream: u32) -> Outcome {
    h2.wait_for(|f| {
        f.stream == stream
            && (f.kind == kind::DATA || f.kind == kind::HEADERS)
            && f.flags & flag::END_STREAM != 0
    })
    .await
    .map(|_| ())
    .map_err(|e| format!("{e:?}, expected the end of stream {stream}"))
}

// 3.5 HTTP/2 Connection Preface

async fn preface_valid(listener: Listener) -> Outcome {
    H2::open(&listener).await.map(|_| ())
}

/// RFC 9113 3.4: an invalid preface MUST be treated as a connection error
/// of type PROTOCOL_ERROR; a GOAWAY MAY be omitted (the client may not
/// speak HTTP/2 at all). On the cleartext port these bytes are not the
/// preface, so the connection is HTTP/1.1 and is answered 400 and closed;
/// over TLS, h2 closes the connection without a GOAWAY. Both close, which
/// is what h2spec checks.
async fn preface_invalid(listener: Listener) -> Outcome {
    let mut h2 = H2::connect(&listener).await?;
    h2.send(b"INVALID CONNECTION PREFACE\r\n\r\n").await?;
    match h2.expect_closed().await? {
        None | Some(Code::PROTOCOL_ERROR) => Ok(()),
        Some(other) => Err(format!("GOAWAY {other:?}")),
    }
}

// 4.1 Frame Format

async fn unknown_frame_type_is_ignored(listener: Listener) -> Outcome {
    let mut h2 = H2::open(&listener).await?;
    h2.send_frame(0x16, 0, 0, b"unknown").await?;
    h2.expect_alive().await
}

async fn undefined_flags_are_ignored(listener: Listener) -> Outcome {
    let mut h2 = H2::open(&listener).await?;
    h2.send_frame(kind::PING, 0x16, 0, b"flagged!").await?;
    let ack = h2
        .wait_for(|f| f.kind == kind::PING)
        .await
        .map_err(|e| format!("{e:?}, expected a PING ACK"))?;
    if ack.flags & flag::ACK != 0 && ack.payload == b"flagged!" {
        Ok(())
    } else {
        Err(format!("PING {ack:?}"))
    }
}

async fn reserved_bit_is_ignored(listener: Listener) -> Outcome {
    let mut h2 = H2::open(&listener).await?;
    h2.send_frame(kind::PING, 0, 0x8000_0000, b"reserved")
        .await?;
    let ack = h2
        .wait_for(|f| f.kind == kind::PING || f.kind == kind::GOAWAY)
        .await
        .map_err(|e| format!("{e:?}, expected a PING ACK"))?;
    if ack.kind == kind::PING && ack.payload == b"reserved" {
        Ok(())
    } else {
        Err(format!("{ack:?}"))
    }
}

// 4.2 Frame Size

async fn data_of_max_frame_size_is_accepted(listener: Listener) -> Outcome {
    let mut h2 = H2::open(&listener).await?;
    let length = DEFAULT_MAX_FRAME_SIZE.to_string();
    let block = post_block(&h2, &[("content-length", &length)]);
    h2.send_frame(kind::HEADERS, flag::END_HEADERS, 1, &block)
        .await?;
    h2.send_frame(
        kind::DATA,
        flag::END_STREAM,
        1,
        &vec![b'x'; DEFAULT_MAX_FRAME_SIZE],
    )
    .await?;
    h2.expect_response(1).await.map(|_| ())
}

async fn data_over_max_frame_size(listener: Listener) -> Outcome {
    stream_error(listener, 1, Code::FRAME_SIZE_ERROR, |h2| {
        let mut bytes = frame(kind::HEADERS, flag::END_HEADERS, 1, &post_block(h2, &[]));
        bytes.extend(frame(
            kind::DATA,
            flag::END_STREAM,
            1,
            &vec![b'x'; DEFAULT_MAX_FRAME_SIZE + 1],
        ));
        bytes
    })
    .await
}

async fn headers_over_max_frame_size(listener: Listener) -> Outcome {
    connection_error(listener, Code::FRAME_SIZE_ERROR, |h2| {
        let long = "x".repeat(DEFAULT_MAX_FRAME_SIZE);
        let block = request_block("GET", h2.scheme, "/fixed", &[("x-long", &long)]);
        frame(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            1,
            &block,
        )
    })
    .await
}

// 4.3 Header Compression and Decompression

async fn invalid_header_block(listener: Listener) -> Outcome {
    connection_error(listener, H2_DECODE_ERROR, |_| {
        // A literal whose name claims 5 bytes and has 1.
        frame(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            1,
            &[0x00, 0x05, b'a'],
        )
    })
    .await
}

async fn priority_inside_header_block(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |h2| {
        let mut bytes = frame(kind::HEADERS, flag::END_STREAM, 1, &fixed_block(h2));
        bytes.extend(frame(kind::PRIORITY, 0, 1, &[0, 0, 0, 0, 15]));
        bytes
    })
    .await
}

async fn headers_to_another_stream_inside_header_block(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |h2| {
        let mut bytes = frame(kind::HEADERS, flag::END_STREAM, 1, &fixed_block(h2));
        bytes.extend(frame(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            3,
            &fixed_block(h2),
        ));
        bytes
    })
    .await
}

// 5.1 Stream States

async fn idle_data(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |_| {
        frame(kind::DATA, flag::END_STREAM, 1, b"test")
    })
    .await
}

async fn idle_rst_stream(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |_| {
        frame(kind::RST_STREAM, 0, 1, &Code::CANCEL.0.to_be_bytes())
    })
    .await
}

async fn idle_window_update(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |_| {
        frame(kind::WINDOW_UPDATE, 0, 1, &100u32.to_be_bytes())
    })
    .await
}

async fn idle_continuation(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |h2| {
        frame(kind::CONTINUATION, flag::END_HEADERS, 1, &fixed_block(h2))
    })
    .await
}

/// A request to the echo upstream with END_STREAM: the stream is
/// half-closed (remote) on the router until the answer comes back.
fn half_closed_remote(h2: &H2) -> Vec<u8> {
    let block = request_block("GET", h2.scheme, "/", &[]);
    frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        1,
        &block,
    )
}

async fn half_closed_remote_data(listener: Listener) -> Outcome {
    connection_error(listener, H2_STATE_ERROR, |h2| {
        let mut bytes = half_closed_remote(h2);
        bytes.extend(frame(kind::DATA, flag::END_STREAM, 1, b"test"));
        bytes
    })
    .await
}

async fn half_closed_remote_headers(listener: Listener) -> Outcome {
    connection_error(listener, H2_STATE_ERROR, |h2| {
        let mut bytes = half_closed_remote(h2);
        bytes.extend(half_closed_remote(h2));
        bytes
    })
    .await
}

/// RFC 9113 6.10: a CONTINUATION not preceded by a HEADERS without
/// END_HEADERS is a connection error PROTOCOL_ERROR; h2spec accepts that
/// or STREAM_CLOSED.
async fn expect_stream_closed_or_protocol_error(h2: &mut H2, stream: u32) -> Outcome {
    let seen = h2
        .wait_for(|f| f.kind == kind::GOAWAY || (f.kind == kind::RST_STREAM && f.stream == stream))
        .await
        .map_err(|e| format!("{e:?}, expected STREAM_CLOSED or PROTOCOL_ERROR"))?;
    match seen.error_code() {
        Some(Code::STREAM_CLOSED | Code::PROTOCOL_ERROR) => Ok(()),
        other => Err(format!(
            "{other:?}, expected STREAM_CLOSED or PROTOCOL_ERROR"
        )),
    }
}

async fn half_closed_remote_continuation(listener: Listener) -> Outcome {
    let mut h2 = H2::open(&listener).await?;
    let mut bytes = half_closed_remote(&h2);
    bytes.extend(frame(
        kind::CONTINUATION,
        flag::END_HEADERS,
        1,
        &literal("x-more", "1"),
    ));
    h2.send(&bytes).await?;
    expect_stream_closed_or_protocol_error(&mut h2, 1).await
}

/// An open request stream (no END_STREAM), then our RST_STREAM on it.
fn reset_by_client(h2: &H2) -> Vec<u8> {
    let mut bytes = frame(kind::HEADERS, flag::END_HEADERS, 1, &post_block(h2, &[]));
    bytes.extend(frame(kind::RST_STREAM, 0, 1, &Code::CANCEL.0.to_be_bytes()));
    bytes
}

async fn closed_by_reset_data(listener: Listener) -> Outcome {
    stream_error(listener, 1, Code::STREAM_CLOSED, |h2| {
        let mut bytes = reset_by_client(h2);
        bytes.extend(frame(kind::DATA, flag::END_STREAM, 1, b"test"));
        bytes
    })
    .await
}

async fn closed_by_reset_headers(listener: Listener) -> Outcome {
    connection_error(listener, H2_STATE_ERROR, |h2| {
        let mut bytes = reset_by_client(h2);
        bytes.extend(frame(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            1,
            &fixed_block(h2),
        ));
        bytes
    })
    .await
}

async fn closed_by_reset_continuation(listener: Listener) -> Outcome {
    let mut h2 = H2::open(&listener).await?;
    let mut bytes = reset_by_client(&h2);
    bytes.extend(frame(
        kind::CONTINUATION,
        flag::END_HEADERS,
        1,
        &literal("x-more", "1"),
    ));
    h2.send(&bytes).await?;
    expect_stream_closed_or_protocol_error(&mut h2, 1).await
}

/// Stream 1 asked for and answered to its end: closed on both sides.
async fn closed_stream(listener: &Listener) -> Result<H2, String> {
    let mut h2 = H2::open(listener).await?;
    h2.get(1, "/fixed").await?;
    read_to_end_of_stream(&mut h2, 1).await?;
    Ok(h2)
}

async fn closed_data(listener: Listener) -> Outcome {
    let mut h2 = closed_stream(&listener).await?;
    h2.send_frame(kind::DATA, flag::END_STREAM, 1, b"test")
        .await?;
    h2.expect_reset(1, Code::STREAM_CLOSED).await.map(|_| ())
}

async fn closed_headers(listener: Listener) -> Outcome {
    let mut h2 = closed_stream(&listener).await?;
    h2.get(1, "/fixed").await?;
    h2.expect_goaway(H2_STATE_ERROR).await
}

async fn closed_continuation(listener: Listener) -> Outcome {
    let mut h2 = closed_stream(&listener).await?;
    h2.send_frame(
        kind::CONTINUATION,
        flag::END_HEADERS,
        1,
        &literal("x-more", "1"),
    )
    .await?;
    expect_stream_closed_or_protocol_error(&mut h2, 1).await
}

// 5.1.1 Stream Identifiers

async fn even_stream_id(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |h2| {
        frame(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            2,
            &fixed_block(h2),
        )
    })
    .await
}

async fn smaller_stream_id(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |h2| {
        let mut bytes = frame(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            5,
            &fixed_block(h2),
        );
        bytes.extend(frame(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            3,
            &fixed_block(h2),
        ));
        bytes
    })
    .await
}

// 5.1.2 Stream Concurrency

/// Opens one stream more than the router's SETTINGS_MAX_CONCURRENT_STREAMS,
/// each held open by the echo upstream waiting for its body: the extra
/// one must be refused, RST_STREAM PROTOCOL_ERROR or REFUSED_STREAM
/// (RFC 9113 5.1.2).
async fn over_max_concurrent_streams(listener: Listener) -> Outcome {
    let mut h2 = H2::open(&listener).await?;
    let Some(limit) = h2.server_setting(setting::MAX_CONCURRENT_STREAMS) else {
        return Err("the router sets no SETTINGS_MAX_CONCURRENT_STREAMS".to_owned());
    };
    let block = post_block(&h2, &[]);
    let mut bytes = Vec::new();
    for i in 0..=limit {
        bytes.extend(frame(kind::HEADERS, flag::END_HEADERS, 1 + 2 * i, &block));
    }
    h2.send(&bytes).await?;
    let extra = 1 + 2 * limit;
    let seen = h2
        .wait_for(|f| f.kind == kind::GOAWAY || f.kind == kind::RST_STREAM)
        .await
        .map_err(|e| format!("{e:?}, expected stream {extra} refused"))?;
    match (seen.kind, seen.stream, seen.error_code()) {
        (kind::RST_STREAM, stream, Some(Code::REFUSED_STREAM | Code::PROTOCOL_ERROR))
            if stream == extra =>
        {
            Ok(())
        }
        other => Err(format!("{other:?}, expected stream {extra} refused")),
    }
}

// 5.3.1 Stream Dependencies

async fn headers_depending_on_itself(listener: Listener) -> Outcome {
    stream_error(listener, 1, Code::PROTOCOL_ERROR, |h2| {
        let mut payload = vec![0, 0, 0, 1, 15];
        payload.extend(fixed_block(h2));
        frame(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM | flag::PRIORITY,
            1,
            &payload,
        )
    })
    .await
}

async fn priority_depending_on_itself(listener: Listener) -> Outcome {
    stream_error(listener, 1, Code::PROTOCOL_ERROR, |_| {
        frame(kind::PRIORITY, 0, 1, &[0, 0, 0, 1, 15])
    })
    .await
}

// 5.4.1 Connection Error Handling

async fn connection_error_closes(listener: Listener) -> Outcome {
    let mut h2 = H2::open(&listener).await?;
    h2.send_frame(kind::PING, 0, 0, b"short!").await?;
    h2.expect_goaway(H2_DECODE_ERROR).await?;
    h2.expect_closed().await.map(|_| ())
}

async fn goaway_names_last_stream(listener: Listener) -> Outcome {
    let mut h2 = H2::open(&listener).await?;
    h2.get(1, "/fixed").await?;
    read_to_end_of_stream(&mut h2, 1).await?;
    h2.send_frame(kind::PING, 0, 0, b"short!").await?;
    let goaway = h2
        .wait_for(|f| f.kind == kind::GOAWAY)
        .await
        .map_err(|e| format!("{e:?}, expected GOAWAY"))?;
    match (goaway.last_stream_id(), goaway.error_code()) {
        (Some(1), Some(H2_DECODE_ERROR)) => Ok(()),
        other => Err(format!("GOAWAY (last stream, code) {other:?}")),
    }
}

// 5.5 Extending HTTP/2

async fn unknown_extension_frame_is_ignored(listener: Listener) -> Outcome {
    let mut h2 = H2::open(&listener).await?;
    h2.send_frame(0xff, 0, 0, b"extension").await?;
    h2.expect_alive().await
}

async fn unknown_extension_frame_inside_header_block(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |h2| {
        let mut bytes = frame(kind::HEADERS, flag::END_STREAM, 1, &fixed_block(h2));
        bytes.extend(frame(0xff, 0, 0, b"extension"));
        bytes
    })
    .await
}

// 6.1 DATA

async fn data_on_stream_zero(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |_| {
        frame(kind::DATA, flag::END_STREAM, 0, b"test")
    })
    .await
}

async fn data_on_half_closed_stream(listener: Listener) -> Outcome {
    half_closed_remote_data(listener).await
}

async fn data_with_invalid_padding(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |h2| {
        let mut bytes = frame(kind::HEADERS, flag::END_HEADERS, 1, &post_block(h2, &[]));
        // Pad length 6 with 4 bytes after it.
        bytes.extend(frame(
            kind::DATA,
            flag::END_STREAM | flag::PADDED,
            1,
            &[6, b't', b'e', b's', b't'],
        ));
        bytes
    })
    .await
}

// 6.2 HEADERS

async fn headers_then_priority_on_another_stream(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |h2| {
        let mut bytes = frame(kind::HEADERS, flag::END_STREAM, 1, &fixed_block(h2));
        bytes.extend(frame(kind::PRIORITY, 0, 3, &[0, 0, 0, 0, 15]));
        bytes
    })
    .await
}

async fn headers_on_stream_zero(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |h2| {
        frame(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            0,
            &fixed_block(h2),
        )
    })
    .await
}

async fn headers_with_invalid_padding(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |h2| {
        let block = fixed_block(h2);
        let mut payload = vec![u8::try_from(block.len() + 1).unwrap_or(u8::MAX)];
        payload.extend(block);
        frame(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM | flag::PADDED,
            1,
            &payload,
        )
    })
    .await
}

// 6.3 PRIORITY

async fn priority_on_stream_zero(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |_| {
        frame(kind::PRIORITY, 0, 0, &[0, 0, 0, 0, 15])
    })
    .await
}

async fn priority_of_wrong_length(listener: Listener) -> Outcome {
    connection_error(listener, H2_DECODE_ERROR, |_| {
        frame(kind::PRIORITY, 0, 1, &[0, 0, 0, 0])
    })
    .await
}

// 6.4 RST_STREAM

async fn rst_stream_on_stream_zero(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |_| {
        frame(kind::RST_STREAM, 0, 0, &Code::CANCEL.0.to_be_bytes())
    })
    .await
}

async fn rst_stream_on_idle_stream(listener: Listener) -> Outcome {
    idle_rst_stream(listener).await
}

async fn rst_stream_of_wrong_length(listener: Listener) -> Outcome {
    connection_error(listener, H2_DECODE_ERROR, |h2| {
        let mut bytes = frame(kind::HEADERS, flag::END_HEADERS, 1, &post_block(h2, &[]));
        bytes.extend(frame(kind::RST_STREAM, 0, 1, &[0, 0, 8]));
        bytes
    })
    .await
}

// 6.5 SETTINGS

async fn settings_ack_with_payload(listener: Listener) -> Outcome {
    connection_error(listener, H2_DECODE_ERROR, |_| {
        frame(
            kind::SETTINGS,
            flag::ACK,
            0,
            &settings_payload(&[(setting::ENABLE_PUSH, 0)]),
        )
    })
    .await
}

async fn settings_on_a_stream(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |_| {
        frame(
            kind::SETTINGS,
            0,
            1,
            &settings_payload(&[(setting::ENABLE_PUSH, 0)]),
        )
    })
    .await
}

async fn settings_of_wrong_length(listener: Listener) -> Outcome {
    connection_error(listener, H2_DECODE_ERROR, |_| {
        frame(kind::SETTINGS, 0, 0, &[0, 2, 0])
    })
    .await
}

/// SETTINGS with one (identifier, value) pair the RFC forbids.
async fn bad_setting(listener: Listener, id: u16, value: u32, code: Code) -> Outcome {
    connection_error(listener, code, |_| {
        frame(kind::SETTINGS, 0, 0, &settings_payload(&[(id, value)]))
    })
    .await
}

async fn enable_push_not_0_or_1(listener: Listener) -> Outcome {
    bad_setting(listener, setting::ENABLE_PUSH, 2, Code::PROTOCOL_ERROR).await
}

async fn initial_window_size_over_maximum(listener: Listener) -> Outcome {
    bad_setting(
        listener,
        setting::INITIAL_WINDOW_SIZE,
        1 << 31,
        H2_DECODE_ERROR,
    )
    .await
}

async fn max_frame_size_below_initial(listener: Listener) -> Outcome {
    bad_setting(
        listener,
        setting::MAX_FRAME_SIZE,
        16_383,
        Code::PROTOCOL_ERROR,
    )
    .await
}

async fn max_frame_size_over_maximum(listener: Listener) -> Outcome {
    bad_setting(
        listener,
        setting::MAX_FRAME_SIZE,
        1 << 24,
        Code::PROTOCOL_ERROR,
    )
    .await
}

async fn unknown_setting_is_ignored(listener: Listener) -> Outcome {
    let mut h2 = H2::open(&listener).await?;
    h2.send_frame(kind::SETTINGS, 0, 0, &settings_payload(&[(0xff, 1)]))
        .await?;
    expect_settings_ack(&mut h2).await
}

async fn expect_settings_ack(h2: &mut H2) -> Outcome {
    let seen = h2
        .wait_for(|f| f.kind == kind::SETTINGS || f.kind == kind::GOAWAY)
        .await
        .map_err(|e| format!("{e:?}, expected a SETTINGS ACK"))?;
    if seen.kind == kind::SETTINGS && seen.flags & flag::ACK != 0 && seen.payload.is_empty() {
        Ok(())
    } else {
        Err(format!("{seen:?}, expected a SETTINGS ACK"))
    }
}

async fn last_of_repeated_settings_wins(listener: Listener) -> Outcome {
    let mut h2 = H2::open(&listener).await?;
    h2.send_frame(
        kind::SETTINGS,
        0,
        0,
        &settings_payload(&[
            (setting::INITIAL_WINDOW_SIZE, 100),
            (setting::INITIAL_WINDOW_SIZE, 1),
        ]),
    )
    .await?;
    expect_settings_ack(&mut h2).await?;
    h2.get(1, "/fixed").await?;
    match first_data_length(&mut h2, 1).await? {
        1 => Ok(()),
        other => Err(format!("DATA of {other} bytes, expected 1")),
    }
}

async fn settings_are_acknowledged(listener: Listener) -> Outcome {
    let mut h2 = H2::open(&listener).await?;
    h2.send_frame(
        kind::SETTINGS,
        0,
        0,
        &settings_payload(&[(setting::ENABLE_PUSH, 0)]),
    )
    .await?;
    expect_settings_ack(&mut h2).await
}

// 6.7 PING

async fn ping_is_answered(listener: Listener) -> Outcome {
    H2::open(&listener).await?.expect_alive().await
}

async fn ping_ack_is_not_answered(listener: Listener) -> Outcome {
    let mut h2 = H2::open(&listener).await?;
    h2.send_frame(kind::PING, flag::ACK, 0, b"unsolici").await?;
    h2.send_frame(kind::PING, 0, 0, b"expected").await?;
    let ack = h2
        .wait_for(|f| f.kind == kind::PING)
        .await
        .map_err(|e| format!("{e:?}, expected a PING ACK"))?;
    if ack.payload == b"expected" && ack.flags & flag::ACK != 0 {
        Ok(())
    } else {
        Err(format!("answered {ack:?}"))
    }
}

async fn ping_on_a_stream(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |_| {
        frame(kind::PING, 0, 1, b"onstream")
    })
    .await
}

async fn ping_of_wrong_length(listener: Listener) -> Outcome {
    connection_error(listener, H2_DECODE_ERROR, |_| {
        frame(kind::PING, 0, 0, b"short!")
    })
    .await
}

// 6.8 GOAWAY

async fn goaway_on_a_stream(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |_| {
        let mut payload = 0u32.to_be_bytes().to_vec();
        payload.extend(Code::NO_ERROR.0.to_be_bytes());
        frame(kind::GOAWAY, 0, 1, &payload)
    })
    .await
}

// 6.9 WINDOW_UPDATE

async fn window_update_of_zero_on_connection(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |_| {
        frame(kind::WINDOW_UPDATE, 0, 0, &0u32.to_be_bytes())
    })
    .await
}

async fn window_update_of_zero_on_stream(listener: Listener) -> Outcome {
    stream_error(listener, 1, Code::PROTOCOL_ERROR, |h2| {
        let mut bytes = frame(kind::HEADERS, flag::END_HEADERS, 1, &post_block(h2, &[]));
        bytes.extend(frame(kind::WINDOW_UPDATE, 0, 1, &0u32.to_be_bytes()));
        bytes
    })
    .await
}

async fn window_update_of_wrong_length(listener: Listener) -> Outcome {
    connection_error(listener, H2_DECODE_ERROR, |_| {
        frame(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 1])
    })
    .await
}

// 6.9.1 The Flow-Control Window

async fn window_of_one_byte(listener: Listener) -> Outcome {
    let mut h2 = H2::open_with(&listener, &[(setting::INITIAL_WINDOW_SIZE, 1)]).await?;
    h2.get(1, "/fixed").await?;
    match first_data_length(&mut h2, 1).await? {
        1 => Ok(()),
        other => Err(format!("DATA of {other} bytes, expected 1")),
    }
}

const MAX_WINDOW: u32 = (1 << 31) - 1;

async fn connection_window_over_maximum(listener: Listener) -> Outcome {
    connection_error(listener, Code::FLOW_CONTROL_ERROR, |_| {
        let mut bytes = frame(kind::WINDOW_UPDATE, 0, 0, &MAX_WINDOW.to_be_bytes());
        bytes.extend(frame(kind::WINDOW_UPDATE, 0, 0, &MAX_WINDOW.to_be_bytes()));
        bytes
    })
    .await
}

async fn stream_window_over_maximum(listener: Listener) -> Outcome {
    stream_error(listener, 1, Code::FLOW_CONTROL_ERROR, |h2| {
        let mut bytes = frame(kind::HEADERS, flag::END_HEADERS, 1, &post_block(h2, &[]));
        bytes.extend(frame(kind::WINDOW_UPDATE, 0, 1, &MAX_WINDOW.to_be_bytes()));
        bytes.extend(frame(kind::WINDOW_UPDATE, 0, 1, &MAX_WINDOW.to_be_bytes()));
        bytes
    })
    .await
}

// 6.9.2 Initial Flow-Control Window Size

async fn window_opened_by_settings_after_headers(listener: Listener) -> Outcome {
    let mut h2 = H2::open_with(&listener, &[(setting::INITIAL_WINDOW_SIZE, 0)]).await?;
    h2.get(1, "/fixed").await?;
    h2.expect_response(1).await?;
    h2.send_frame(
        kind::SETTINGS,
        0,
        0,
        &settings_payload(&[(setting::INITIAL_WINDOW_SIZE, 1)]),
    )
    .await?;
    match first_data_length(&mut h2, 1).await? {
        1 => Ok(()),
        other => Err(format!("DATA of {other} bytes, expected 1")),
    }
}

async fn negative_window(listener: Listener) -> Outcome {
    let mut h2 = H2::open_with(&listener, &[(setting::INITIAL_WINDOW_SIZE, 3)]).await?;
    h2.get(1, "/fixed").await?;
    let first = first_data_length(&mut h2, 1).await?;
    if first != 3 {
        return Err(format!("first DATA of {first} bytes, expected 3"));
    }
    // The window goes from 0 to -1, then +2: one byte may be sent.
    h2.send_frame(
        kind::SETTINGS,
        0,
        0,
        &settings_payload(&[(setting::INITIAL_WINDOW_SIZE, 2)]),
    )
    .await?;
    h2.send_frame(kind::WINDOW_UPDATE, 0, 1, &2u32.to_be_bytes())
        .await?;
    match first_data_length(&mut h2, 1).await? {
        1 => Ok(()),
        other => Err(format!("DATA of {other} bytes, expected 1")),
    }
}

async fn initial_window_over_maximum(listener: Listener) -> Outcome {
    initial_window_size_over_maximum(listener).await
}

// 6.10 CONTINUATION

async fn continuations_complete_a_header_block(listener: Listener) -> Outcome {
    let mut h2 = H2::open(&listener).await?;
    let block = fixed_block(&h2);
    let (first, rest) = block.split_at(block.len() / 3);
    let (second, third) = rest.split_at(rest.len() / 2);
    let mut bytes = frame(kind::HEADERS, flag::END_STREAM, 1, first);
    bytes.extend(frame(kind::CONTINUATION, 0, 1, second));
    bytes.extend(frame(kind::CONTINUATION, flag::END_HEADERS, 1, third));
    h2.send(&bytes).await?;
    h2.expect_response(1).await.map(|_| ())
}

async fn continuation_followed_by_data(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |h2| {
        let block = post_block(h2, &[]);
        let (first, second) = block.split_at(block.len() / 2);
        let mut bytes = frame(kind::HEADERS, 0, 1, first);
        bytes.extend(frame(kind::CONTINUATION, 0, 1, second));
        bytes.extend(frame(kind::DATA, flag::END_STREAM, 1, b"test"));
        bytes
    })
    .await
}

async fn continuation_on_stream_zero(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |h2| {
        let block = fixed_block(h2);
        let (first, second) = block.split_at(block.len() / 2);
        let mut bytes = frame(kind::HEADERS, flag::END_STREAM, 1, first);
        bytes.extend(frame(kind::CONTINUATION, flag::END_HEADERS, 0, second));
        bytes
    })
    .await
}

async fn continuation_after_end_headers(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |h2| {
        let mut bytes = frame(kind::HEADERS, flag::END_HEADERS, 1, &post_block(h2, &[]));
        bytes.extend(frame(
            kind::CONTINUATION,
            flag::END_HEADERS,
            1,
            &literal("x-more", "1"),
        ));
        bytes
    })
    .await
}

async fn continuation_after_continuation_with_end_headers(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |h2| {
        let block = post_block(h2, &[]);
        let (first, second) = block.split_at(block.len() / 2);
        let mut bytes = frame(kind::HEADERS, 0, 1, first);
        bytes.extend(frame(kind::CONTINUATION, flag::END_HEADERS, 1, second));
        bytes.extend(frame(
            kind::CONTINUATION,
            flag::END_HEADERS,
            1,
            &literal("x-more", "1"),
        ));
        bytes
    })
    .await
}

async fn continuation_after_data(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |h2| {
        let mut bytes = frame(kind::HEADERS, flag::END_HEADERS, 1, &post_block(h2, &[]));
        bytes.extend(frame(kind::DATA, 0, 1, b"test"));
        bytes.extend(frame(
            kind::CONTINUATION,
            flag::END_HEADERS,
            1,
            &literal("x-more", "1"),
        ));
        bytes
    })
    .await
}

// 7 Error Codes

/// RFC 9113 7: unknown error codes MUST NOT trigger special behaviour.
/// After a client's GOAWAY the server may finish and close (6.8), so what
/// is checked is that it does not answer with an error of its own: either
/// the PING is answered or the connection ends with GOAWAY NO_ERROR or no
/// GOAWAY at all.
async fn goaway_with_unknown_code(listener: Listener) -> Outcome {
    let mut h2 = H2::open(&listener).await?;
    let mut payload = 0u32.to_be_bytes().to_vec();
    payload.extend(0xffu32.to_be_bytes());
    h2.send_frame(kind::GOAWAY, 0, 0, &payload).await?;
    h2.send_frame(kind::PING, 0, 0, b"still ok").await?;
    loop {
        match h2.next_frame().await {
            Ok(f) if f.kind == kind::PING && f.payload == b"still ok" => return Ok(()),
            Ok(f) if f.kind == kind::GOAWAY && f.error_code() != Some(Code::NO_ERROR) => {
                return Err(format!("GOAWAY {:?}", f.error_code()))
            }
            Ok(_) => {}
            Err(Ended::Closed) => return Ok(()),
            Err(Ended::Silent) => return Err("no answer".to_owned()),
        }
    }
}

async fn rst_stream_with_unknown_code(listener: Listener) -> Outcome {
    let mut h2 = H2::open(&listener).await?;
    let block = post_block(&h2, &[]);
    h2.send_frame(kind::HEADERS, flag::END_HEADERS, 1, &block)
        .await?;
    h2.send_frame(kind::RST_STREAM, 0, 1, &0xffu32.to_be_bytes())
        .await?;
    h2.expect_alive().await
}

// 8.1 HTTP Request/Response Exchange

async fn second_headers_without_end_stream(listener: Listener) -> Outcome {
    stream_error(listener, 1, Code::PROTOCOL_ERROR, |h2| {
        let mut bytes = frame(kind::HEADERS, flag::END_HEADERS, 1, &post_block(h2, &[]));
        bytes.extend(frame(
            kind::HEADERS,
            flag::END_HEADERS,
            1,
            &literal("x-trailer", "1"),
        ));
        bytes
    })
    .await
}

// 8.1.2 HTTP Header Fields (RFC 9113 8.2 and 8.3)

async fn uppercase_header_name(listener: Listener) -> Outcome {
    malformed_request(listener, |h2| {
        request_block("GET", h2.scheme, "/fixed", &[("X-TEST", "ok")])
    })
    .await
}

async fn unknown_pseudo_header(listener: Listener) -> Outcome {
    malformed_request(listener, |h2| {
        let mut block = fixed_block(h2);
        block.extend(literal(":test", "ok"));
        block
    })
    .await
}

async fn response_pseudo_header_in_request(listener: Listener) -> Outcome {
    malformed_request(listener, |h2| {
        let mut block = fixed_block(h2);
        block.extend(literal(":status", "200"));
        block
    })
    .await
}

/// RFC 9113 8.1: pseudo-header fields MUST NOT appear in a trailer
/// section, which makes the request malformed (a stream error
/// PROTOCOL_ERROR). h2 checks pseudo-headers only in a request's first
/// header block; a trailer section's `:method` is dropped, so the request
/// is answered. Nothing of it reaches the upstream: hyper hands trailers
/// over without pseudo-headers.
async fn pseudo_header_in_trailers(listener: Listener) -> Outcome {
    let mut h2 = H2::open(&listener).await?;
    let bytes = {
        let h2 = &h2;
        let mut bytes = frame(kind::HEADERS, flag::END_HEADERS, 1, &post_block(h2, &[]));
        bytes.extend(frame(kind::DATA, 0, 1, b"test"));
        bytes.extend(frame(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            1,
            &literal(":method", "GET"),
        ));
        bytes
    };
    h2.send(&bytes).await?;
    h2.expect_response(1).await.map(|_| ())
}

async fn pseudo_header_after_regular(listener: Listener) -> Outcome {
    malformed_request(listener, |h2| {
        let mut block = literal("x-first", "1");
        block.extend(fixed_block(h2));
        block
    })
    .await
}

async fn connection_specific_header(listener: Listener) -> Outcome {
    malformed_request(listener, |h2| {
        request_block("GET", h2.scheme, "/fixed", &[("connection", "keep-alive")])
    })
    .await
}

async fn te_other_than_trailers(listener: Listener) -> Outcome {
    malformed_request(listener, |h2| {
        request_block("GET", h2.scheme, "/fixed", &[("te", "trailers, deflate")])
    })
    .await
}

/// A request's header block from `(name, value)` pairs as given, so a
/// pseudo-header can be left out, doubled or emptied.
fn block_of(fields: &[(&str, &str)]) -> Vec<u8> {
    fields
        .iter()
        .flat_map(|(name, value)| literal(name, value))
        .collect()
}

async fn empty_path(listener: Listener) -> Outcome {
    malformed_request(listener, |h2| {
        block_of(&[
            (":method", "GET"),
            (":scheme", h2.scheme),
            (":path", ""),
            (":authority", "conformance.test"),
        ])
    })
    .await
}

async fn missing_method(listener: Listener) -> Outcome {
    malformed_request(listener, |h2| {
        block_of(&[
            (":scheme", h2.scheme),
            (":path", "/fixed"),
            (":authority", "conformance.test"),
        ])
    })
    .await
}

async fn missing_scheme(listener: Listener) -> Outcome {
    malformed_request(listener, |_| {
        block_of(&[
            (":method", "GET"),
            (":path", "/fixed"),
            (":authority", "conformance.test"),
        ])
    })
    .await
}

async fn missing_path(listener: Listener) -> Outcome {
    malformed_request(listener, |h2| {
        block_of(&[
            (":method", "GET"),
            (":scheme", h2.scheme),
            (":authority", "conformance.test"),
        ])
    })
    .await
}

async fn duplicate_method(listener: Listener) -> Outcome {
    malformed_request(listener, |h2| {
        let mut block = fixed_block(h2);
        block.extend(literal(":method", "GET"));
        block
    })
    .await
}

async fn duplicate_scheme(listener: Listener) -> Outcome {
    malformed_request(listener, |h2| {
        let mut block = fixed_block(h2);
        block.extend(literal(":scheme", h2.scheme));
        block
    })
    .await
}

async fn duplicate_path(listener: Listener) -> Outcome {
    malformed_request(listener, |h2| {
        let mut block = fixed_block(h2);
        block.extend(literal(":path", "/fixed"));
        block
    })
    .await
}

async fn content_length_unlike_data(listener: Listener) -> Outcome {
    stream_error(listener, 1, Code::PROTOCOL_ERROR, |h2| {
        let mut bytes = frame(
            kind::HEADERS,
            flag::END_HEADERS,
            1,
            &post_block(h2, &[("content-length", "1")]),
        );
        bytes.extend(frame(kind::DATA, flag::END_STREAM, 1, b"test"));
        bytes
    })
    .await
}

async fn content_length_unlike_sum_of_data(listener: Listener) -> Outcome {
    stream_error(listener, 1, Code::PROTOCOL_ERROR, |h2| {
        let mut bytes = frame(
            kind::HEADERS,
            flag::END_HEADERS,
            1,
            &post_block(h2, &[("content-length", "1")]),
        );
        bytes.extend(frame(kind::DATA, 0, 1, b"test"));
        bytes.extend(frame(kind::DATA, flag::END_STREAM, 1, b"test"));
        bytes
    })
    .await
}

// 8.2 Server Push

async fn push_promise_from_client(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |h2| {
        let mut bytes = frame(kind::HEADERS, flag::END_HEADERS, 1, &post_block(h2, &[]));
        let mut payload = 2u32.to_be_bytes().to_vec();
        payload.extend(fixed_block(h2));
        bytes.extend(frame(kind::PUSH_PROMISE, flag::END_HEADERS, 1, &payload));
        bytes
    })
    .await
}

// HPACK (RFC 7541)

/// A request whose header block ends with `tail`, which the router's HPACK
/// decoder must refuse: a connection error COMPRESSION_ERROR (RFC 7541
/// 2.3.3, 4.2, 5.2, 6.1, 6.3; RFC 9113 4.3).
async fn compression_error(listener: Listener, tail: Vec<u8>) -> Outcome {
    connection_error(listener, H2_DECODE_ERROR, |h2| {
        let mut block = fixed_block(h2);
        block.extend(tail);
        frame(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            1,
            &block,
        )
    })
    .await
}

/// The static table has 61 entries and the dynamic one is empty.
async fn indexed_past_the_tables(listener: Listener) -> Outcome {
    compression_error(listener, indexed(70)).await
}

async fn literal_name_past_the_tables(listener: Listener) -> Outcome {
    let mut tail = hpack_int(0x00, 4, 70);
    tail.extend(hpack_string(b"value"));
    compression_error(listener, tail).await
}

async fn table_size_update_at_end_of_block(listener: Listener) -> Outcome {
    compression_error(listener, table_size_update(0)).await
}

/// `x-test: <value>` with the value Huffman-coded as `huffman`.
fn huffman_value(huffman: &[u8]) -> Vec<u8> {
    let mut tail = vec![0x00];
    tail.extend(hpack_string(b"x-test"));
    tail.extend(hpack_int(0x80, 7, huffman.len()));
    tail.extend_from_slice(huffman);
    tail
}

async fn huffman_padding_over_7_bits(listener: Listener) -> Outcome {
    // `a` is 00011; then 11 bits of padding.
    compression_error(listener, huffman_value(&[0x1f, 0xff])).await
}

async fn huffman_padded_with_zeros(listener: Listener) -> Outcome {
    // `a` is 00011; padding must be the EOS prefix (ones), here zeros.
    compression_error(listener, huffman_value(&[0x18])).await
}

async fn huffman_with_eos(listener: Listener) -> Outcome {
    // EOS is thirty ones.
    compression_error(listener, huffman_value(&[0xff, 0xff, 0xff, 0xff])).await
}

async fn indexed_zero(listener: Listener) -> Outcome {
    compression_error(listener, indexed(0)).await
}

async fn table_size_update_over_setting(listener: Listener) -> Outcome {
    connection_error(listener, H2_DECODE_ERROR, |h2| {
        let mut block = table_size_update(4097);
        block.extend(fixed_block(h2));
        frame(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            1,
            &block,
        )
    })
    .await
}

/// Every case, in h2spec's order.
pub const CASES: &[Case] = &[
    case!("http2/3.5/1", "Sends client connection preface", preface_valid),
    case!("http2/3.5/2", "Sends invalid connection preface", preface_invalid),
    case!("http2/4.1/1", "Sends a frame with unknown type", unknown_frame_type_is_ignored),
    case!("http2/4.1/2", "Sends a frame with undefined flag", undefined_flags_are_ignored),
    case!("http2/4.1/3", "Sends a frame with reserved field bit", reserved_bit_is_ignored),
    case!("http2/4.2/1", "Sends a DATA frame with 2^14 octets in length", data_of_max_frame_size_is_accepted),
    case!("http2/4.2/2", "Sends a large size DATA frame that exceeds the SETTINGS_MAX_FRAME_SIZE", data_over_max_frame_size),
    case!("http2/4.2/3", "Sends a large size HEADERS frame that exceeds the SETTINGS_MAX_FRAME_SIZE", headers_over_max_frame_size),
    case!("http2/4.3/1", "Sends invalid header block fragment", invalid_header_block, deviates: "GOAWAY PROTOCOL_ERROR where the RFC says COMPRESSION_ERROR"),
    case!("http2/4.3/2", "Sends a PRIORITY frame while sending the header blocks", priority_inside_header_block),
    case!("http2/4.3/3", "Sends a HEADERS frame to another stream while sending the header blocks", headers_to_another_stream_inside_header_block),
    case!("http2/5.1/1", "idle: Sends a DATA frame", idle_data),
    case!("http2/5.1/2", "idle: Sends a RST_STREAM frame", idle_rst_stream),
    case!("http2/5.1/3", "idle: Sends a WINDOW_UPDATE frame", idle_window_update),
    case!("http2/5.1/4", "idle: Sends a CONTINUATION frame", idle_continuation),
    case!("http2/5.1/5", "half closed (remote): Sends a DATA frame", half_closed_remote_data, deviates: "GOAWAY PROTOCOL_ERROR where the RFC says RST_STREAM STREAM_CLOSED"),
    case!("http2/5.1/6", "half closed (remote): Sends a HEADERS frame", half_closed_remote_headers, deviates: "GOAWAY PROTOCOL_ERROR where the RFC says RST_STREAM STREAM_CLOSED"),
    case!("http2/5.1/7", "half closed (remote): Sends a CONTINUATION frame", half_closed_remote_continuation),
    case!("http2/5.1/8", "closed: Sends a DATA frame after sending RST_STREAM frame", closed_by_reset_data),
    case!("http2/5.1/9", "closed: Sends a HEADERS frame after sending RST_STREAM frame", closed_by_reset_headers, deviates: "GOAWAY PROTOCOL_ERROR where the RFC says RST_STREAM STREAM_CLOSED"),
    case!("http2/5.1/10", "closed: Sends a CONTINUATION frame after sending RST_STREAM frame", closed_by_reset_continuation),
    case!("http2/5.1/11", "closed: Sends a DATA frame", closed_data),
    case!("http2/5.1/12", "closed: Sends a HEADERS frame", closed_headers, deviates: "GOAWAY PROTOCOL_ERROR where the RFC says GOAWAY STREAM_CLOSED"),
    case!("http2/5.1/13", "closed: Sends a CONTINUATION frame", closed_continuation),
    case!("http2/5.1.1/1", "Sends even-numbered stream identifier", even_stream_id),
    case!("http2/5.1.1/2", "Sends stream identifier that is numerically smaller than previous", smaller_stream_id),
    case!("http2/5.1.2/1", "Sends HEADERS frames that causes their advertised concurrent stream limit to be exceeded", over_max_concurrent_streams),
    case!("http2/5.3.1/1", "Sends HEADERS frame that depends on itself", headers_depending_on_itself),
    case!("http2/5.3.1/2", "Sends PRIORITY frame that depend on itself", priority_depending_on_itself),
    case!("http2/5.4.1/1", "Sends an invalid PING frame for connection close", connection_error_closes, deviates: "GOAWAY PROTOCOL_ERROR where the RFC says FRAME_SIZE_ERROR"),
    case!("http2/5.4.1/2", "Sends an invalid PING frame to receive GOAWAY frame", goaway_names_last_stream, deviates: "GOAWAY PROTOCOL_ERROR where the RFC says FRAME_SIZE_ERROR"),
    case!("http2/5.5/1", "Sends an unknown extension frame", unknown_extension_frame_is_ignored),
    case!("http2/5.5/2", "Sends an unknown extension frame in the middle of a header block", unknown_extension_frame_inside_header_block),
    case!("http2/6.1/1", "Sends a DATA frame with 0x0 stream identifier", data_on_stream_zero),
    case!("http2/6.1/2", "Sends a DATA frame on the stream that is not in \"open\" or \"half-closed (local)\" state", data_on_half_closed_stream, deviates: "GOAWAY PROTOCOL_ERROR where the RFC says RST_STREAM STREAM_CLOSED"),
    case!("http2/6.1/3", "Sends a DATA frame with invalid pad length", data_with_invalid_padding),
    case!("http2/6.2/1", "Sends a HEADERS frame without the END_HEADERS flag, and a PRIORITY frame", headers_then_priority_on_another_stream),
    case!("http2/6.2/2", "Sends a HEADERS frame to another stream while sending a HEADERS frame", headers_to_another_stream_inside_header_block),
    case!("http2/6.2/3", "Sends a HEADERS frame with 0x0 stream identifier", headers_on_stream_zero),
    case!("http2/6.2/4", "Sends a HEADERS frame with invalid pad length", headers_with_invalid_padding),
    case!("http2/6.3/1", "Sends a PRIORITY frame with 0x0 stream identifier", priority_on_stream_zero),
    case!("http2/6.3/2", "Sends a PRIORITY frame with a length other than 5 octets", priority_of_wrong_length, deviates: "GOAWAY PROTOCOL_ERROR where the RFC says RST_STREAM FRAME_SIZE_ERROR"),
    case!("http2/6.4/1", "Sends a RST_STREAM frame with 0x0 stream identifier", rst_stream_on_stream_zero),
    case!("http2/6.4/2", "Sends a RST_STREAM frame on a idle stream", rst_stream_on_idle_stream),
    case!("http2/6.4/3", "Sends a RST_STREAM frame with a length other than 4 octets", rst_stream_of_wrong_length, deviates: "GOAWAY PROTOCOL_ERROR where the RFC says FRAME_SIZE_ERROR"),
    case!("http2/6.5/1", "Sends a SETTINGS frame with ACK flag and payload", settings_ack_with_payload, deviates: "GOAWAY PROTOCOL_ERROR where the RFC says FRAME_SIZE_ERROR"),
    case!("http2/6.5/2", "Sends a SETTINGS frame with a stream identifier other than 0x0", settings_on_a_stream),
    case!("http2/6.5/3", "Sends a SETTINGS frame with a length other than a multiple of 6 octets", settings_of_wrong_length, deviates: "GOAWAY PROTOCOL_ERROR where the RFC says FRAME_SIZE_ERROR"),
    case!("http2/6.5.2/1", "SETTINGS_ENABLE_PUSH (0x2): Sends the value other than 0 or 1", enable_push_not_0_or_1),
    case!("http2/6.5.2/2", "SETTINGS_INITIAL_WINDOW_SIZE (0x4): Sends the value above the maximum flow control window size", initial_window_size_over_maximum, deviates: "GOAWAY PROTOCOL_ERROR where the RFC says FLOW_CONTROL_ERROR"),
    case!("http2/6.5.2/3", "SETTINGS_MAX_FRAME_SIZE (0x5): Sends the value below the initial value", max_frame_size_below_initial),
    case!("http2/6.5.2/4", "SETTINGS_MAX_FRAME_SIZE (0x5): Sends the value above the maximum allowed frame size", max_frame_size_over_maximum),
    case!("http2/6.5.2/5", "Sends a SETTINGS frame with unknown identifier", unknown_setting_is_ignored),
    case!("http2/6.5.3/1", "Sends multiple values of SETTINGS_INITIAL_WINDOW_SIZE", last_of_repeated_settings_wins),
    case!("http2/6.5.3/2", "Sends a SETTINGS frame without ACK flag", settings_are_acknowledged),
    case!("http2/6.7/1", "Sends a PING frame", ping_is_answered),
    case!("http2/6.7/2", "Sends a PING frame with ACK", ping_ack_is_not_answered),
    case!("http2/6.7/3", "Sends a PING frame with a stream identifier field value other than 0x0", ping_on_a_stream),
    case!("http2/6.7/4", "Sends a PING frame with a length field value other than 8", ping_of_wrong_length, deviates: "GOAWAY PROTOCOL_ERROR where the RFC says FRAME_SIZE_ERROR"),
    case!("http2/6.8/1", "Sends a GOAWAY frame with a stream identifier other than 0x0", goaway_on_a_stream),
    case!("http2/6.9/1", "Sends a WINDOW_UPDATE frame with a flow control window increment of 0", window_update_of_zero_on_connection),
    case!("http2/6.9/2", "Sends a WINDOW_UPDATE frame with a flow control window increment of 0 on a stream", window_update_of_zero_on_stream),
    case!("http2/6.9/3", "Sends a WINDOW_UPDATE frame with a length other than 4 octets", window_update_of_wrong_length, deviates: "GOAWAY PROTOCOL_ERROR where the RFC says FRAME_SIZE_ERROR"),
    case!("http2/6.9.1/1", "Sends SETTINGS frame to set the initial window size to 1 and sends HEADERS frame", window_of_one_byte),
    case!("http2/6.9.1/2", "Sends multiple WINDOW_UPDATE frames increasing the flow control window to above 2^31-1", connection_window_over_maximum),
    case!("http2/6.9.1/3", "Sends multiple WINDOW_UPDATE frames increasing the flow control window to above 2^31-1 on a stream", stream_window_over_maximum),
    case!("http2/6.9.2/1", "Changes SETTINGS_INITIAL_WINDOW_SIZE after sending HEADERS frame", window_opened_by_settings_after_headers),
    case!("http2/6.9.2/2", "Sends a SETTINGS frame for window size to be negative", negative_window),
    case!("http2/6.9.2/3", "Sends a SETTINGS_INITIAL_WINDOW_SIZE settings with an exceeded maximum window size value", initial_window_over_maximum, deviates: "GOAWAY PROTOCOL_ERROR where the RFC says FLOW_CONTROL_ERROR"),
    case!("http2/6.10/1", "Sends multiple CONTINUATION frames preceded by a HEADERS frame", continuations_complete_a_header_block),
    case!("http2/6.10/2", "Sends a CONTINUATION frame followed by any frame other than CONTINUATION", continuation_followed_by_data),
    case!("http2/6.10/3", "Sends a CONTINUATION frame with 0x0 stream identifier", continuation_on_stream_zero),
    case!("http2/6.10/4", "Sends a CONTINUATION frame preceded by a HEADERS frame with END_HEADERS flag", continuation_after_end_headers),
    case!("http2/6.10/5", "Sends a CONTINUATION frame preceded by a CONTINUATION frame with END_HEADERS flag", continuation_after_continuation_with_end_headers),
    case!("http2/6.10/6", "Sends a CONTINUATION frame preceded by a DATA frame", continuation_after_data),
    case!("http2/7/1", "Sends a GOAWAY frame with unknown error code", goaway_with_unknown_code),
    case!("http2/7/2", "Sends a RST_STREAM frame with unknown error code", rst_stream_with_unknown_code),
    case!("http2/8.1/1", "Sends a second HEADERS frame without the END_STREAM flag", second_headers_without_end_stream),
    case!("http2/8.1.2/1", "Sends a HEADERS frame that contains the header field name in uppercase letters", uppercase_header_name),
    case!("http2/8.1.2.1/1", "Sends a HEADERS frame that contains a unknown pseudo-header field", unknown_pseudo_header),
    case!("http2/8.1.2.1/2", "Sends a HEADERS frame that contains the pseudo-header field defined for response", response_pseudo_header_in_request),
    case!("http2/8.1.2.1/3", "Sends a HEADERS frame that contains a pseudo-header field as trailers", pseudo_header_in_trailers, deviates: "the trailer with a pseudo-header is accepted and the request answered, where the RFC says RST_STREAM PROTOCOL_ERROR"),
    case!("http2/8.1.2.1/4", "Sends a HEADERS frame that contains a pseudo-header field that appears in a header block after a regular header field", pseudo_header_after_regular),
    case!("http2/8.1.2.2/1", "Sends a HEADERS frame that contains the connection-specific header field", connection_specific_header),
    case!("http2/8.1.2.2/2", "Sends a HEADERS frame that contains the TE header field with any value other than \"trailers\"", te_other_than_trailers),
    case!("http2/8.1.2.3/1", "Sends a HEADERS frame with empty \":path\" pseudo-header field", empty_path),
    case!("http2/8.1.2.3/2", "Sends a HEADERS frame that omits \":method\" pseudo-header field", missing_method),
    case!("http2/8.1.2.3/3", "Sends a HEADERS frame that omits \":scheme\" pseudo-header field", missing_scheme),
    case!("http2/8.1.2.3/4", "Sends a HEADERS frame that omits \":path\" pseudo-header field", missing_path),
    case!("http2/8.1.2.3/5", "Sends a HEADERS frame with duplicated \":method\" pseudo-header field", duplicate_method),
    case!("http2/8.1.2.3/6", "Sends a HEADERS frame with duplicated \":scheme\" pseudo-header field", duplicate_scheme),
    case!("http2/8.1.2.3/7", "Sends a HEADERS frame with duplicated \":path\" pseudo-header field", duplicate_path),
    case!("http2/8.1.2.6/1", "Sends a HEADERS frame with the \"content-length\" header field which does not equal the DATA frame payload length", content_length_unlike_data),
    case!("http2/8.1.2.6/2", "Sends a HEADERS frame with the \"content-length\" header field which does not equal the sum of the multiple DATA frames payload length", content_length_unlike_sum_of_data),
    case!("http2/8.2/1", "Sends a PUSH_PROMISE frame", push_promise_from_client),
    case!("hpack/2.3.3/1", "Sends a indexed header field representation with invalid index", indexed_past_the_tables, deviates: "GOAWAY PROTOCOL_ERROR where the RFC says COMPRESSION_ERROR"),
    case!("hpack/2.3.3/2", "Sends a literal header field representation with invalid index", literal_name_past_the_tables, deviates: "GOAWAY PROTOCOL_ERROR where the RFC says COMPRESSION_ERROR"),
    case!("hpack/4.2/1", "Sends a dynamic table size update at the end of header block", table_size_update_at_end_of_block, deviates: "GOAWAY PROTOCOL_ERROR where the RFC says COMPRESSION_ERROR"),
    case!("hpack/5.2/1", "Sends a Huffman-encoded string literal representation with padding longer than 7 bits", huffman_padding_over_7_bits, deviates: "GOAWAY PROTOCOL_ERROR where the RFC says COMPRESSION_ERROR"),
    case!("hpack/5.2/2", "Sends a Huffman-encoded string literal representation padded by zero", huffman_padded_with_zeros, deviates: "GOAWAY PROTOCOL_ERROR where the RFC says COMPRESSION_ERROR"),
    case!("hpack/5.2/3", "Sends a Huffman-encoded string literal representation containing the EOS symbol", huffman_with_eos, deviates: "GOAWAY PROTOCOL_ERROR where the RFC says COMPRESSION_ERROR"),
    case!("hpack/6.1/1", "Sends a indexed header field representation with index 0", indexed_zero, deviates: "GOAWAY PROTOCOL_ERROR where the RFC says COMPRESSION_ERROR"),
    case!("hpack/6.3/1", "Sends a dynamic table size update larger than the value of SETTINGS_HEADER_TABLE_SIZE", table_size_update_over_setting, deviates: "GOAWAY PROTOCOL_ERROR where the RFC says COMPRESSION_ERROR"),
];
