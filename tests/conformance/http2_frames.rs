//! h2spec's cases for RFC 9113 section 6: each frame type (DATA, HEADERS,
//! PRIORITY, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE and flow
//! control, CONTINUATION).

use super::*;

// 6.1 DATA

pub(super) async fn data_on_stream_zero(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |_| {
        frame(kind::DATA, flag::END_STREAM, 0, b"test")
    })
    .await
}

pub(super) async fn data_on_half_closed_stream(listener: Listener) -> Outcome {
    half_closed_remote_data(listener).await
}

pub(super) async fn data_with_invalid_padding(listener: Listener) -> Outcome {
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

pub(super) async fn headers_then_priority_on_another_stream(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |h2| {
        let mut bytes = frame(kind::HEADERS, flag::END_STREAM, 1, &fixed_block(h2));
        bytes.extend(frame(kind::PRIORITY, 0, 3, &[0, 0, 0, 0, 15]));
        bytes
    })
    .await
}

pub(super) async fn headers_on_stream_zero(listener: Listener) -> Outcome {
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

pub(super) async fn headers_with_invalid_padding(listener: Listener) -> Outcome {
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

pub(super) async fn priority_on_stream_zero(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |_| {
        frame(kind::PRIORITY, 0, 0, &[0, 0, 0, 0, 15])
    })
    .await
}

pub(super) async fn priority_of_wrong_length(listener: Listener) -> Outcome {
    connection_error(listener, H2_DECODE_ERROR, |_| {
        frame(kind::PRIORITY, 0, 1, &[0, 0, 0, 0])
    })
    .await
}

// 6.4 RST_STREAM

pub(super) async fn rst_stream_on_stream_zero(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |_| {
        frame(kind::RST_STREAM, 0, 0, &Code::CANCEL.0.to_be_bytes())
    })
    .await
}

pub(super) async fn rst_stream_on_idle_stream(listener: Listener) -> Outcome {
    idle_rst_stream(listener).await
}

pub(super) async fn rst_stream_of_wrong_length(listener: Listener) -> Outcome {
    connection_error(listener, H2_DECODE_ERROR, |h2| {
        let mut bytes = frame(kind::HEADERS, flag::END_HEADERS, 1, &post_block(h2, &[]));
        bytes.extend(frame(kind::RST_STREAM, 0, 1, &[0, 0, 8]));
        bytes
    })
    .await
}

// 6.5 SETTINGS

pub(super) async fn settings_ack_with_payload(listener: Listener) -> Outcome {
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

pub(super) async fn settings_on_a_stream(listener: Listener) -> Outcome {
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

pub(super) async fn settings_of_wrong_length(listener: Listener) -> Outcome {
    connection_error(listener, H2_DECODE_ERROR, |_| {
        frame(kind::SETTINGS, 0, 0, &[0, 2, 0])
    })
    .await
}

/// SETTINGS with one (identifier, value) pair the RFC forbids.
pub(super) async fn bad_setting(listener: Listener, id: u16, value: u32, code: Code) -> Outcome {
    connection_error(listener, code, |_| {
        frame(kind::SETTINGS, 0, 0, &settings_payload(&[(id, value)]))
    })
    .await
}

pub(super) async fn enable_push_not_0_or_1(listener: Listener) -> Outcome {
    bad_setting(listener, setting::ENABLE_PUSH, 2, Code::PROTOCOL_ERROR).await
}

pub(super) async fn initial_window_size_over_maximum(listener: Listener) -> Outcome {
    bad_setting(
        listener,
        setting::INITIAL_WINDOW_SIZE,
        1 << 31,
        H2_DECODE_ERROR,
    )
    .await
}

pub(super) async fn max_frame_size_below_initial(listener: Listener) -> Outcome {
    bad_setting(
        listener,
        setting::MAX_FRAME_SIZE,
        16_383,
        Code::PROTOCOL_ERROR,
    )
    .await
}

pub(super) async fn max_frame_size_over_maximum(listener: Listener) -> Outcome {
    bad_setting(
        listener,
        setting::MAX_FRAME_SIZE,
        1 << 24,
        Code::PROTOCOL_ERROR,
    )
    .await
}

pub(super) async fn unknown_setting_is_ignored(listener: Listener) -> Outcome {
    let mut h2 = H2::open(&listener).await?;
    h2.send_frame(kind::SETTINGS, 0, 0, &settings_payload(&[(0xff, 1)]))
        .await?;
    expect_settings_ack(&mut h2).await
}

pub(super) async fn expect_settings_ack(h2: &mut H2) -> Outcome {
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

pub(super) async fn last_of_repeated_settings_wins(listener: Listener) -> Outcome {
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

pub(super) async fn settings_are_acknowledged(listener: Listener) -> Outcome {
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

pub(super) async fn ping_is_answered(listener: Listener) -> Outcome {
    H2::open(&listener).await?.expect_alive().await
}

pub(super) async fn ping_ack_is_not_answered(listener: Listener) -> Outcome {
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

pub(super) async fn ping_on_a_stream(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |_| {
        frame(kind::PING, 0, 1, b"onstream")
    })
    .await
}

pub(super) async fn ping_of_wrong_length(listener: Listener) -> Outcome {
    connection_error(listener, H2_DECODE_ERROR, |_| {
        frame(kind::PING, 0, 0, b"short!")
    })
    .await
}

// 6.8 GOAWAY

pub(super) async fn goaway_on_a_stream(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |_| {
        let mut payload = 0u32.to_be_bytes().to_vec();
        payload.extend(Code::NO_ERROR.0.to_be_bytes());
        frame(kind::GOAWAY, 0, 1, &payload)
    })
    .await
}

// 6.9 WINDOW_UPDATE

pub(super) async fn window_update_of_zero_on_connection(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |_| {
        frame(kind::WINDOW_UPDATE, 0, 0, &0u32.to_be_bytes())
    })
    .await
}

pub(super) async fn window_update_of_zero_on_stream(listener: Listener) -> Outcome {
    stream_error(listener, 1, Code::PROTOCOL_ERROR, |h2| {
        let mut bytes = frame(kind::HEADERS, flag::END_HEADERS, 1, &post_block(h2, &[]));
        bytes.extend(frame(kind::WINDOW_UPDATE, 0, 1, &0u32.to_be_bytes()));
        bytes
    })
    .await
}

pub(super) async fn window_update_of_wrong_length(listener: Listener) -> Outcome {
    connection_error(listener, H2_DECODE_ERROR, |_| {
        frame(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 1])
    })
    .await
}

// 6.9.1 The Flow-Control Window

pub(super) async fn window_of_one_byte(listener: Listener) -> Outcome {
    let mut h2 = H2::open_with(&listener, &[(setting::INITIAL_WINDOW_SIZE, 1)]).await?;
    h2.get(1, "/fixed").await?;
    match first_data_length(&mut h2, 1).await? {
        1 => Ok(()),
        other => Err(format!("DATA of {other} bytes, expected 1")),
    }
}

const MAX_WINDOW: u32 = (1 << 31) - 1;

pub(super) async fn connection_window_over_maximum(listener: Listener) -> Outcome {
    connection_error(listener, Code::FLOW_CONTROL_ERROR, |_| {
        let mut bytes = frame(kind::WINDOW_UPDATE, 0, 0, &MAX_WINDOW.to_be_bytes());
        bytes.extend(frame(kind::WINDOW_UPDATE, 0, 0, &MAX_WINDOW.to_be_bytes()));
        bytes
    })
    .await
}

pub(super) async fn stream_window_over_maximum(listener: Listener) -> Outcome {
    stream_error(listener, 1, Code::FLOW_CONTROL_ERROR, |h2| {
        let mut bytes = frame(kind::HEADERS, flag::END_HEADERS, 1, &post_block(h2, &[]));
        bytes.extend(frame(kind::WINDOW_UPDATE, 0, 1, &MAX_WINDOW.to_be_bytes()));
        bytes.extend(frame(kind::WINDOW_UPDATE, 0, 1, &MAX_WINDOW.to_be_bytes()));
        bytes
    })
    .await
}

// 6.9.2 Initial Flow-Control Window Size

pub(super) async fn window_opened_by_settings_after_headers(listener: Listener) -> Outcome {
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

pub(super) async fn negative_window(listener: Listener) -> Outcome {
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

pub(super) async fn initial_window_over_maximum(listener: Listener) -> Outcome {
    initial_window_size_over_maximum(listener).await
}

// 6.10 CONTINUATION

pub(super) async fn continuations_complete_a_header_block(listener: Listener) -> Outcome {
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

pub(super) async fn continuation_followed_by_data(listener: Listener) -> Outcome {
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

pub(super) async fn continuation_on_stream_zero(listener: Listener) -> Outcome {
    connection_error(listener, Code::PROTOCOL_ERROR, |h2| {
        let block = fixed_block(h2);
        let (first, second) = block.split_at(block.len() / 2);
        let mut bytes = frame(kind::HEADERS, flag::END_STREAM, 1, first);
        bytes.extend(frame(kind::CONTINUATION, flag::END_HEADERS, 0, second));
        bytes
    })
    .await
}

pub(super) async fn continuation_after_end_headers(listener: Listener) -> Outcome {
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

pub(super) async fn continuation_after_continuation_with_end_headers(
    listener: Listener,
) -> Outcome {
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

pub(super) async fn continuation_after_data(listener: Listener) -> Outcome {
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
