//! The server cases of h2spec (its `http2` and `hpack` groups: RFC 9113
//! and RFC 7541), one function each (in `http2_streams.rs`,
//! `http2_frames.rs` and `http2_messages.rs`), named in the table at the
//! bottom by h2spec's id. Each case opens its own connection to one listener and
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

#[path = "http2_frames.rs"]
mod frames;
#[path = "http2_messages.rs"]
mod messages;
#[path = "http2_streams.rs"]
mod streams;

use self::frames::*;
use self::messages::*;
use self::streams::*;

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
