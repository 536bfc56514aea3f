//! h2spec's cases for RFC 9113 sections 7 and 8 (error codes, the
//! request/response exchange, header fields, server push) and for RFC
//! 7541 (HPACK).

use super::*;

// 7 Error Codes

/// RFC 9113 7: unknown error codes MUST NOT trigger special behaviour.
/// After a client's GOAWAY the server may finish and close (6.8), so what
/// is checked is that it does not answer with an error of its own: either
/// the PING is answered or the connection ends with GOAWAY NO_ERROR or no
/// GOAWAY at all.
pub(super) async fn goaway_with_unknown_code(listener: Listener) -> Outcome {
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

pub(super) async fn rst_stream_with_unknown_code(listener: Listener) -> Outcome {
    let mut h2 = H2::open(&listener).await?;
    let block = post_block(&h2, &[]);
    h2.send_frame(kind::HEADERS, flag::END_HEADERS, 1, &block)
        .await?;
    h2.send_frame(kind::RST_STREAM, 0, 1, &0xffu32.to_be_bytes())
        .await?;
    h2.expect_alive().await
}

// 8.1 HTTP Request/Response Exchange

pub(super) async fn second_headers_without_end_stream(listener: Listener) -> Outcome {
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

pub(super) async fn uppercase_header_name(listener: Listener) -> Outcome {
    malformed_request(listener, |h2| {
        request_block("GET", h2.scheme, "/fixed", &[("X-TEST", "ok")])
    })
    .await
}

pub(super) async fn unknown_pseudo_header(listener: Listener) -> Outcome {
    malformed_request(listener, |h2| {
        let mut block = fixed_block(h2);
        block.extend(literal(":test", "ok"));
        block
    })
    .await
}

pub(super) async fn response_pseudo_header_in_request(listener: Listener) -> Outcome {
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
pub(super) async fn pseudo_header_in_trailers(listener: Listener) -> Outcome {
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

pub(super) async fn pseudo_header_after_regular(listener: Listener) -> Outcome {
    malformed_request(listener, |h2| {
        let mut block = literal("x-first", "1");
        block.extend(fixed_block(h2));
        block
    })
    .await
}

pub(super) async fn connection_specific_header(listener: Listener) -> Outcome {
    malformed_request(listener, |h2| {
        request_block("GET", h2.scheme, "/fixed", &[("connection", "keep-alive")])
    })
    .await
}

pub(super) async fn te_other_than_trailers(listener: Listener) -> Outcome {
    malformed_request(listener, |h2| {
        request_block("GET", h2.scheme, "/fixed", &[("te", "trailers, deflate")])
    })
    .await
}

/// A request's header block from `(name, value)` pairs as given, so a
/// pseudo-header can be left out, doubled or emptied.
pub(super) fn block_of(fields: &[(&str, &str)]) -> Vec<u8> {
    fields
        .iter()
        .flat_map(|(name, value)| literal(name, value))
        .collect()
}

pub(super) async fn empty_path(listener: Listener) -> Outcome {
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

pub(super) async fn missing_method(listener: Listener) -> Outcome {
    malformed_request(listener, |h2| {
        block_of(&[
            (":scheme", h2.scheme),
            (":path", "/fixed"),
            (":authority", "conformance.test"),
        ])
    })
    .await
}

pub(super) async fn missing_scheme(listener: Listener) -> Outcome {
    malformed_request(listener, |_| {
        block_of(&[
            (":method", "GET"),
            (":path", "/fixed"),
            (":authority", "conformance.test"),
        ])
    })
    .await
}

pub(super) async fn missing_path(listener: Listener) -> Outcome {
    malformed_request(listener, |h2| {
        block_of(&[
            (":method", "GET"),
            (":scheme", h2.scheme),
            (":authority", "conformance.test"),
        ])
    })
    .await
}

pub(super) async fn duplicate_method(listener: Listener) -> Outcome {
    malformed_request(listener, |h2| {
        let mut block = fixed_block(h2);
        block.extend(literal(":method", "GET"));
        block
    })
    .await
}

pub(super) async fn duplicate_scheme(listener: Listener) -> Outcome {
    malformed_request(listener, |h2| {
        let mut block = fixed_block(h2);
        block.extend(literal(":scheme", h2.scheme));
        block
    })
    .await
}

pub(super) async fn duplicate_path(listener: Listener) -> Outcome {
    malformed_request(listener, |h2| {
        let mut block = fixed_block(h2);
        block.extend(literal(":path", "/fixed"));
        block
    })
    .await
}

pub(super) async fn content_length_unlike_data(listener: Listener) -> Outcome {
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

pub(super) async fn content_length_unlike_sum_of_data(listener: Listener) -> Outcome {
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

pub(super) async fn push_promise_from_client(listener: Listener) -> Outcome {
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
pub(super) async fn compression_error(listener: Listener, tail: Vec<u8>) -> Outcome {
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
pub(super) async fn indexed_past_the_tables(listener: Listener) -> Outcome {
    compression_error(listener, indexed(70)).await
}

pub(super) async fn literal_name_past_the_tables(listener: Listener) -> Outcome {
    let mut tail = hpack_int(0x00, 4, 70);
    tail.extend(hpack_string(b"value"));
    compression_error(listener, tail).await
}

pub(super) async fn table_size_update_at_end_of_block(listener: Listener) -> Outcome {
    compression_error(listener, table_size_update(0)).await
}

/// `x-test: <value>` with the value Huffman-coded as `huffman`.
pub(super) fn huffman_value(huffman: &[u8]) -> Vec<u8> {
    let mut tail = vec![0x00];
    tail.extend(hpack_string(b"x-test"));
    tail.extend(hpack_int(0x80, 7, huffman.len()));
    tail.extend_from_slice(huffman);
    tail
}

pub(super) async fn huffman_padding_over_7_bits(listener: Listener) -> Outcome {
    // `a` is 00011; then 11 bits of padding.
    compression_error(listener, huffman_value(&[0x1f, 0xff])).await
}

pub(super) async fn huffman_padded_with_zeros(listener: Listener) -> Outcome {
    // `a` is 00011; padding must be the EOS prefix (ones), here zeros.
    compression_error(listener, huffman_value(&[0x18])).await
}

pub(super) async fn huffman_with_eos(listener: Listener) -> Outcome {
    // EOS is thirty ones.
    compression_error(listener, huffman_value(&[0xff, 0xff, 0xff, 0xff])).await
}

pub(super) async fn indexed_zero(listener: Listener) -> Outcome {
    compression_error(listener, indexed(0)).await
}

pub(super) async fn table_size_update_over_setting(listener: Listener) -> Outcome {
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
