//! h2spec's cases for RFC 9113 sections 3 to 5: the connection preface,
//! frame format and size, header compression, stream states, identifiers,
//! concurrency, dependencies, connection errors and extensions.

use super::*;

// 3.5 HTTP/2 Connection Preface

pub(super) async fn preface_valid(listener: Listener) -> Outcome {
    H2::open(&listener).await.map(|_| ())
}

/// RFC 9113 3.4: an invalid preface MUST be treated as a connection error
/// of type PROTOCOL_ERROR; a GOAWAY MAY be omitted (the client may not
/// speak HTTP/2 at all). On the cleartext port these bytes are not the
/// preface, so the connection is HTTP/1.1 and is answered 400 and closed;
/// over TLS, h2 closes the connection without a GOAWAY. Both close, which
/// is what h2spec checks.
pub(super) async fn preface_invalid(listener: Listener) -> Outcome {
    let mut h2 = H2::connect(&listener).await?;
    h2.send(b"INVALID CONNECTION PREFACE\r\n\r\n").await?;
    match h2.expect_closed().await? {
        None | Some(Code::PROTOCOL_ERROR) => Ok(()),
        Some(other) => Err(format!("GOAWAY {other:?}")),
    }
}

// 4.1 Frame Format

pub(super) async fn unknown_frame_type_is_ignored(listener: Listener) -> Outcome {
    let mut h2 = H2::open(&listener).await?;
    h2.send_frame(0x16, 0, 0, b"unknown").await?;
    h2.expect_alive().await
}

pub(super) async fn undefined_flags_are_ignored(listener: Listener) -> Outcome {
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

pub(super) async fn reserved_bit_is_ignored(listener: Listener) -> Outcome {
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

pub(super) async fn data_of_max_frame_size_is_accepted(listener: Listener) -> Outcome {
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

pub(super) async fn data_over_max_frame_size(listener: Listener) -> Outcome {
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

pub(super) async fn headers_over_max_frame_size(listener: Listener) -> Outcome {
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

pub(super) async fn invalid_header_block(listener: Listener) -> Outcome {
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

pub(super) async fn priority_inside_header_block(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |h2| {
        let mut bytes = frame(kind::HEADERS, flag::END_STREAM, 1, &fixed_block(h2));
        bytes.extend(frame(kind::PRIORITY, 0, 1, &[0, 0, 0, 0, 15]));
        bytes
    })
    .await
}

pub(super) async fn headers_to_another_stream_inside_header_block(listener: Listener) -> Outcome {
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

pub(super) async fn idle_data(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |_| {
        frame(kind::DATA, flag::END_STREAM, 1, b"test")
    })
    .await
}

pub(super) async fn idle_rst_stream(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |_| {
        frame(kind::RST_STREAM, 0, 1, &Code::CANCEL.0.to_be_bytes())
    })
    .await
}

pub(super) async fn idle_window_update(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |_| {
        frame(kind::WINDOW_UPDATE, 0, 1, &100u32.to_be_bytes())
    })
    .await
}

pub(super) async fn idle_continuation(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |h2| {
        frame(kind::CONTINUATION, flag::END_HEADERS, 1, &fixed_block(h2))
    })
    .await
}

/// A request to the echo upstream with END_STREAM: the stream is
/// half-closed (remote) on the router until the answer comes back.
pub(super) fn half_closed_remote(h2: &H2) -> Vec<u8> {
    let block = request_block("GET", h2.scheme, "/", &[]);
    frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        1,
        &block,
    )
}

pub(super) async fn half_closed_remote_data(listener: Listener) -> Outcome {
    connection_error(listener, H2_STATE_ERROR, |h2| {
        let mut bytes = half_closed_remote(h2);
        bytes.extend(frame(kind::DATA, flag::END_STREAM, 1, b"test"));
        bytes
    })
    .await
}

pub(super) async fn half_closed_remote_headers(listener: Listener) -> Outcome {
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
pub(super) async fn expect_stream_closed_or_protocol_error(h2: &mut H2, stream: u32) -> Outcome {
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

pub(super) async fn half_closed_remote_continuation(listener: Listener) -> Outcome {
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
pub(super) fn reset_by_client(h2: &H2) -> Vec<u8> {
    let mut bytes = frame(kind::HEADERS, flag::END_HEADERS, 1, &post_block(h2, &[]));
    bytes.extend(frame(kind::RST_STREAM, 0, 1, &Code::CANCEL.0.to_be_bytes()));
    bytes
}

pub(super) async fn closed_by_reset_data(listener: Listener) -> Outcome {
    stream_error(listener, 1, Code::STREAM_CLOSED, |h2| {
        let mut bytes = reset_by_client(h2);
        bytes.extend(frame(kind::DATA, flag::END_STREAM, 1, b"test"));
        bytes
    })
    .await
}

pub(super) async fn closed_by_reset_headers(listener: Listener) -> Outcome {
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

pub(super) async fn closed_by_reset_continuation(listener: Listener) -> Outcome {
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
pub(super) async fn closed_stream(listener: &Listener) -> Result<H2, String> {
    let mut h2 = H2::open(listener).await?;
    h2.get(1, "/fixed").await?;
    read_to_end_of_stream(&mut h2, 1).await?;
    Ok(h2)
}

pub(super) async fn closed_data(listener: Listener) -> Outcome {
    let mut h2 = closed_stream(&listener).await?;
    h2.send_frame(kind::DATA, flag::END_STREAM, 1, b"test")
        .await?;
    h2.expect_reset(1, Code::STREAM_CLOSED).await.map(|_| ())
}

pub(super) async fn closed_headers(listener: Listener) -> Outcome {
    let mut h2 = closed_stream(&listener).await?;
    h2.get(1, "/fixed").await?;
    h2.expect_goaway(H2_STATE_ERROR).await
}

pub(super) async fn closed_continuation(listener: Listener) -> Outcome {
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

pub(super) async fn even_stream_id(listener: Listener) -> Outcome {
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

pub(super) async fn smaller_stream_id(listener: Listener) -> Outcome {
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
pub(super) async fn over_max_concurrent_streams(listener: Listener) -> Outcome {
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

pub(super) async fn headers_depending_on_itself(listener: Listener) -> Outcome {
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

pub(super) async fn priority_depending_on_itself(listener: Listener) -> Outcome {
    stream_error(listener, 1, Code::PROTOCOL_ERROR, |_| {
        frame(kind::PRIORITY, 0, 1, &[0, 0, 0, 1, 15])
    })
    .await
}

// 5.4.1 Connection Error Handling

pub(super) async fn connection_error_closes(listener: Listener) -> Outcome {
    let mut h2 = H2::open(&listener).await?;
    h2.send_frame(kind::PING, 0, 0, b"short!").await?;
    h2.expect_goaway(H2_DECODE_ERROR).await?;
    h2.expect_closed().await.map(|_| ())
}

pub(super) async fn goaway_names_last_stream(listener: Listener) -> Outcome {
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

pub(super) async fn unknown_extension_frame_is_ignored(listener: Listener) -> Outcome {
    let mut h2 = H2::open(&listener).await?;
    h2.send_frame(0xff, 0, 0, b"extension").await?;
    h2.expect_alive().await
}

pub(super) async fn unknown_extension_frame_inside_header_block(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |h2| {
        let mut bytes = frame(kind::HEADERS, flag::END_STREAM, 1, &fixed_block(h2));
        bytes.extend(frame(0xff, 0, 0, b"extension"));
        bytes
    })
    .await
}
