//! Abuse against the real binary, one attack per test, each beside a
//! well-behaved client: the HTTP/2 attacks of the 2019 and 2023-2024
//! advisories (rapid reset, CONTINUATION flood, HPACK bomb, SETTINGS and
//! PING floods, streams that never read, slowloris) and an HTTP/1.1 slow
//! read of a 100 MiB response.
//!
//! Each test prints what the router did, its resident memory (VmRSS of
//! the router's process) before and after, and the p99 latency of the
//! well-behaved client's requests during the attack. The bounds asserted
//! are loose on purpose (a loaded two-core VM must never fail them); what
//! they catch is the unbounded case: memory that grows with the attack,
//! a client that stops being served, work that reaches the upstream
//! without limit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf};

use crate::h2wire::*;
use crate::target::{Target, LARGE_BODY};

/// The well-behaved client makes at least this many requests, so its p99
/// means something, and goes on while the attack lasts...
const MIN_SAMPLES: usize = 200;
/// ...up to this many, or [`BESIDE_DEADLINE`], whichever comes first.
const MAX_SAMPLES: usize = 20_000;
const BESIDE_DEADLINE: Duration = Duration::from_secs(60);

/// Growth of the router's resident memory over an attack that the
/// router bounds: a few MiB are expected (buffers, allocator arenas); an
/// attack the router did not bound grows it by hundreds.
const RSS_GROWTH_BOUND_KIB: u64 = 64 * 1024;

/// The well-behaved client's p99 must stay under this: seconds, where a
/// healthy loopback request takes a millisecond or less, so only a router
/// that stopped serving fails it.
const P99_BOUND: Duration = Duration::from_secs(5);

/// How long an attack may go on writing before the test stops it.
const ATTACK_DEADLINE: Duration = Duration::from_secs(20);

/// What one attack showed.
struct Figures {
    attack: &'static str,
    /// What the router did, in words.
    outcome: String,
    rss_before_kib: u64,
    rss_peak_kib: u64,
    rss_after_kib: u64,
    p99: Duration,
    beside_ok: usize,
    beside_failed: usize,
}

impl Figures {
    fn print(&self) {
        println!(
            "abuse: {}: {}; RSS {} KiB before, {} KiB peak, {} KiB after; \
             well-behaved client: {} requests ok, {} failed, p99 {:.1} ms",
            self.attack,
            self.outcome,
            self.rss_before_kib,
            self.rss_peak_kib,
            self.rss_after_kib,
            self.beside_ok,
            self.beside_failed,
            self.p99.as_secs_f64() * 1000.0
        );
    }

    /// The bounds every attack must stay within.
    fn assert_bounded(&self) {
        self.print();
        let growth = self.rss_peak_kib.saturating_sub(self.rss_before_kib);
        assert!(
            growth < RSS_GROWTH_BOUND_KIB,
            "{}: the router grew by {growth} KiB",
            self.attack
        );
        assert_eq!(
            self.beside_failed, 0,
            "{}: the well-behaved client was refused",
            self.attack
        );
        assert!(
            self.p99 < P99_BOUND,
            "{}: the well-behaved client's p99 was {:?}",
            self.attack,
            self.p99
        );
    }
}

/// Runs `attack` while a well-behaved HTTP/1.1 client GETs `/fixed` on
/// its own connection, one request after another, and measures the
/// router's memory before, during (after each of the client's requests)
/// and after.
async fn beside<F>(target: &Target, attack: &'static str, run: F) -> Figures
where
    F: std::future::Future<Output = String>,
{
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    let url = format!("http://{}/fixed", target.plain_addr());
    // Warm up: the allocator's arenas and the connection pool, so the
    // figure before is not the process's first.
    for _ in 0..20 {
        let _ = client.get(&url).send().await;
    }
    let rss_before_kib = target.router.rss_kib();
    let done = Arc::new(AtomicBool::new(false));
    let measuring = {
        let done = Arc::clone(&done);
        let pid_rss = RssReader::of(target);
        async move {
            let started = Instant::now();
            let mut latencies = Vec::new();
            let mut failed = 0;
            let mut peak = 0;
            while latencies.len() + failed < MAX_SAMPLES
                && started.elapsed() < BESIDE_DEADLINE
                && (latencies.len() + failed < MIN_SAMPLES || !done.load(Ordering::Acquire))
            {
                let sent = Instant::now();
                let served = match client.get(&url).send().await {
                    Ok(answer) => answer.status() == 200 && answer.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if served {
                    latencies.push(sent.elapsed());
                } else {
                    failed += 1;
                }
                peak = peak.max(pid_rss.read());
            }
            (latencies, failed, peak)
        }
    };
    let attacking = async {
        let outcome = run.await;
        done.store(true, Ordering::Release);
        outcome
    };
    let (outcome, (mut latencies, beside_failed, peak)) = tokio::join!(attacking, measuring);
    let rss_after_kib = target.router.rss_kib();
    latencies.sort();
    let p99 = latencies
        .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
        .copied()
        .unwrap_or(Duration::MAX);
    Figures {
        attack,
        outcome,
        rss_before_kib,
        rss_peak_kib: peak.max(rss_after_kib),
        rss_after_kib,
        p99,
        beside_ok: latencies.len(),
        beside_failed,
    }
}

/// Reads the router's VmRSS from /proc without holding the process.
struct RssReader(String);

impl RssReader {
    fn of(target: &Target) -> RssReader {
        RssReader(format!("/proc/{}/status", target.router.pid()))
    }

    fn read(&self) -> u64 {
        std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }
}

/// What the server said before it closed the connection (or the reading
/// deadline passed): its first GOAWAY's code, and how many frames came.
#[derive(Debug, Default)]
struct Heard {
    goaway: Option<Code>,
    /// The GOAWAY's debug data, where hyper says which limit it hit.
    debug: String,
    frames: usize,
    closed: bool,
}

/// Reads frames off `reader` until the server closes the connection or
/// nothing has come for [`FRAME_WAIT`].
async fn listen(mut reader: ReadHalf<Box<dyn Io>>) -> Heard {
    let mut heard = Heard::default();
    loop {
        match read_frame(&mut reader, FRAME_WAIT).await {
            Ok(frame) => {
                heard.frames += 1;
                // The first GOAWAY says why; a server may send another
                // for what the client wrote after it.
                if frame.kind == kind::GOAWAY && heard.goaway.is_none() {
                    heard.goaway = frame.error_code();
                    heard.debug =
                        String::from_utf8_lossy(frame.payload.get(8..).unwrap_or_default())
                            .into_owned();
                }
            }
            Err(Ended::Closed) => {
                heard.closed = true;
                return heard;
            }
            Err(Ended::Silent) => return heard,
        }
    }
}

/// Opens an h2c connection and writes `attack` (all of it, or until the
/// server stops reading or closes, or [`ATTACK_DEADLINE`]) while reading
/// what the server sends; returns how many bytes went out and what came
/// back.
async fn attack_with(target: &Target, settings: &[(u16, u32)], attack: Vec<u8>) -> (usize, Heard) {
    let h2 = H2::open_with(&target.plain(), settings)
        .await
        .expect("an HTTP/2 connection");
    let (reader, mut writer) = tokio::io::split(h2.into_io());
    let listening = tokio::spawn(listen(reader));
    let mut written = 0;
    let writing = async {
        for piece in attack.chunks(64 * 1024) {
            if writer.write_all(piece).await.is_err() {
                break;
            }
            written += piece.len();
        }
        let _ = writer.flush().await;
    };
    let _ = tokio::time::timeout(ATTACK_DEADLINE, writing).await;
    let heard = listening.await.expect("the reader did not panic");
    drop(writer);
    (written, heard)
}

fn get_block(path: &str) -> Vec<u8> {
    request_block("GET", "http", path, &[])
}

/// CVE-2023-44487: 10,000 streams opened and reset at once. hyper's h2
/// counts streams reset before the server accepted them
/// (`MAX_PENDING_ACCEPT_RESET_STREAMS`) and answers GOAWAY
/// ENHANCE_YOUR_CALM; the few accepted before that reach the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_is_cut_off_with_bounded_upstream_work() {
    const STREAMS: u32 = 10_000;
    let target = Target::start().await;
    let block = get_block("/");
    let mut attack = Vec::new();
    for i in 0..STREAMS {
        let stream = 1 + 2 * i;
        attack.extend(frame(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            stream,
            &block,
        ));
        attack.extend(frame(
            kind::RST_STREAM,
            0,
            stream,
            &Code::CANCEL.0.to_be_bytes(),
        ));
    }
    let figures = beside(&target, "rapid reset (10,000 streams)", async {
        let (written, heard) = attack_with(&target, &[], attack).await;
        format!(
            "{} of {} bytes written, GOAWAY {:?} {:?}, closed {}, {} requests reached the upstream",
            written,
            STREAMS as usize * (9 + block.len() + 13),
            heard.goaway,
            heard.debug,
            heard.closed,
            target.upstream.requests()
        )
    })
    .await;
    figures.assert_bounded();
    assert!(
        figures
            .outcome
            .contains(&format!("GOAWAY {:?}", Some(Code::ENHANCE_YOUR_CALM))),
        "{}",
        figures.outcome
    );
    assert!(
        target.upstream.requests() < 1_000,
        "{} of {STREAMS} reset streams reached the upstream",
        target.upstream.requests()
    );
}

/// The "MadeYouReset" variant: streams the server itself must reset
/// because each breaks a rule that costs only its stream (a HEADERS that
/// depends on itself, RFC 9113 5.3.1: RST_STREAM PROTOCOL_ERROR). hyper
/// counts them (`MAX_LOCAL_ERROR_RESET_STREAMS`) and ends
/// the connection with ENHANCE_YOUR_CALM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provoked_resets_are_cut_off() {
    const STREAMS: u32 = 10_000;
    let target = Target::start().await;
    let block = get_block("/");
    let mut attack = Vec::new();
    for i in 0..STREAMS {
        let stream = 1 + 2 * i;
        let mut payload = stream.to_be_bytes().to_vec();
        payload.push(15);
        payload.extend_from_slice(&block);
        attack.extend(frame(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM | flag::PRIORITY,
            stream,
            &payload,
        ));
    }
    let figures = beside(&target, "provoked resets (10,000 streams)", async {
        let (written, heard) = attack_with(&target, &[], attack).await;
        format!(
            "{written} bytes written, GOAWAY {:?} {:?}, closed {}, {} requests reached the upstream",
            heard.goaway,
            heard.debug,
            heard.closed,
            target.upstream.requests()
        )
    })
    .await;
    figures.assert_bounded();
    assert!(
        figures
            .outcome
            .contains(&format!("GOAWAY {:?}", Some(Code::ENHANCE_YOUR_CALM))),
        "{}",
        figures.outcome
    );
}

/// CVE-2024-27316 and kin: a HEADERS without END_HEADERS, then
/// CONTINUATION frames without end. The header list limit
/// (`MAX_HEADER_BYTES`) stops the decoder; hyper's h2 ends the connection
/// instead of buffering the block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_is_cut_off() {
    /// What the flood would send if never stopped.
    const FLOOD_BYTES: usize = 64 * 1024 * 1024;
    let target = Target::start().await;
    let mut attack = frame(kind::HEADERS, 0, 1, &get_block("/fixed"));
    let mut fragment = Vec::new();
    let mut n = 0;
    while fragment.len() < DEFAULT_MAX_FRAME_SIZE - 64 {
        fragment.extend(literal(&format!("x-flood-{n}"), &"v".repeat(100)));
        n += 1;
    }
    while attack.len() < FLOOD_BYTES {
        attack.extend(frame(kind::CONTINUATION, 0, 1, &fragment));
    }
    let figures = beside(&target, "CONTINUATION flood", async {
        let (written, heard) = attack_with(&target, &[], attack).await;
        format!(
            "cut off after {} KiB of the {} KiB flood, GOAWAY {:?}, closed {}",
            written / 1024,
            FLOOD_BYTES / 1024,
            heard.goaway,
            heard.closed
        )
    })
    .await;
    figures.assert_bounded();
    assert!(
        figures.outcome.contains("closed true"),
        "{}",
        figures.outcome
    );
}

/// An HPACK bomb: a 4 KiB header put in the dynamic table once, then
/// named by its index (one byte) thousands of times in header blocks of
/// many streams, each block decoding to megabytes. The decoded size is
/// checked against the header list limit as it grows, so no block is ever
/// held whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpack_bomb_is_refused() {
    const STREAMS: u32 = 200;
    let target = Target::start().await;
    let mut attack = Vec::new();
    for i in 0..STREAMS {
        let mut block = Vec::new();
        if i == 0 {
            // The largest table the router's SETTINGS allow, then an entry
            // that fills most of it.
            block.extend(table_size_update(4096));
            block.extend(literal_indexed("x-bomb", &"b".repeat(4000)));
        }
        block.extend(get_block("/fixed"));
        block.extend(std::iter::repeat_n(indexed(62), DEFAULT_MAX_FRAME_SIZE - 4_200).flatten());
        attack.extend(frame(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            1 + 2 * i,
            &block,
        ));
    }
    let figures = beside(&target, "HPACK bomb", async {
        let (written, heard) = attack_with(&target, &[], attack).await;
        format!(
            "{} KiB written (each block decodes to ~48 MiB), GOAWAY {:?}, closed {}, {} frames back",
            written / 1024,
            heard.goaway,
            heard.closed,
            heard.frames
        )
    })
    .await;
    figures.assert_bounded();
}

/// CVE-2019-9515: SETTINGS frames, each owed an ACK, from a client that
/// never reads. h2 owes one ACK at a time and stops reading the
/// connection until it is written, so the flood backs up in the client's
/// socket instead of the router's memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_flood_is_bounded() {
    flood_is_bounded(
        "SETTINGS flood",
        frame(
            kind::SETTINGS,
            0,
            0,
            &settings_payload(&[(setting::INITIAL_WINDOW_SIZE, 65_535)]),
        ),
    )
    .await;
}

/// CVE-2019-9512: PINGs, each owed a PING ACK, from a client that never
/// reads; bounded as the SETTINGS flood is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_flood_is_bounded() {
    flood_is_bounded("PING flood", frame(kind::PING, 0, 0, b"floodpin")).await;
}

/// Writes `one` a million times on a connection whose reads are never
/// taken (the reading side is not read at all).
async fn flood_is_bounded(attack: &'static str, one: Vec<u8>) {
    const FRAMES: usize = 1_000_000;
    let target = Target::start().await;
    let figures = beside(&target, attack, async {
        let h2 = H2::open(&target.plain())
            .await
            .expect("an HTTP/2 connection");
        let mut io = h2.into_io();
        let batch = one.repeat(1_000);
        let mut written = 0;
        let writing = async {
            for _ in 0..FRAMES / 1_000 {
                if io.write_all(&batch).await.is_err() {
                    return "the router closed the connection";
                }
                written += batch.len();
            }
            "the router read all of it"
        };
        let how = tokio::time::timeout(Duration::from_secs(5), writing)
            .await
            .unwrap_or("the router stopped reading (backpressure)");
        format!("{how} after {} of {} frames", written / one.len(), FRAMES)
    })
    .await;
    figures.assert_bounded();
}

/// 1,000 streams to a 100 MiB response from a client that opens every
/// flow-control window as wide as it goes (RFC 9113 6.9.1) and then never
/// reads its socket. Flow control no longer holds the router back; what
/// hyper buffers per stream is capped (`MAX_SEND_BUF_SIZE`), as is the
/// number of streams (`MAX_CONCURRENT_STREAMS`; the rest are refused), and
/// each upstream waits under backpressure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_that_never_read_are_bounded() {
    const STREAMS: u32 = 1_000;
    /// How long the connection is held once its streams are under way:
    /// holding it is the attack; the router's buffers fill meanwhile.
    const HOLD: Duration = Duration::from_secs(4);
    const MAX_WINDOW: u32 = (1 << 31) - 1;
    let target = Target::start().await;
    let block = get_block("/large");
    let mut attack = frame(
        kind::WINDOW_UPDATE,
        0,
        0,
        &(MAX_WINDOW - 65_535).to_be_bytes(),
    );
    for i in 0..STREAMS {
        attack.extend(frame(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            1 + 2 * i,
            &block,
        ));
    }
    let figures = beside(&target, "1,000 streams that never read", async {
        let h2 = H2::open_with(
            &target.plain(),
            &[(setting::INITIAL_WINDOW_SIZE, MAX_WINDOW)],
        )
        .await
        .expect("an HTTP/2 connection");
        let concurrent = h2.server_setting(setting::MAX_CONCURRENT_STREAMS);
        let mut io = h2.into_io();
        io.write_all(&attack).await.expect("write the streams");
        let started = Instant::now();
        while target.large.requests() < concurrent.unwrap_or(STREAMS) as usize
            && started.elapsed() < ATTACK_DEADLINE
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let streaming = target.large.requests();
        tokio::time::sleep(HOLD).await;
        drop(io);
        format!(
            "{streaming} streams under way (SETTINGS_MAX_CONCURRENT_STREAMS {concurrent:?}), \
             the rest refused, each to {} MiB, none read",
            LARGE_BODY / (1024 * 1024)
        )
    })
    .await;
    figures.assert_bounded();
}

/// Slowloris on HTTP/2: 200 connections that send the preface and their
/// SETTINGS, then never a HEADERS. A connection that has not sent a
/// request within the header timeout is closed, as HTTP/1.1 ones are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_slowloris_connections_are_closed() {
    const CONNECTIONS: usize = 200;
    /// The header timeout (10 s) and slack for a loaded machine.
    const CLOSED_WITHIN: Duration = Duration::from_secs(20);
    let target = Target::start().await;
    let figures = beside(&target, "HTTP/2 slowloris (200 connections)", async {
        let mut idle = Vec::new();
        for _ in 0..CONNECTIONS {
            idle.push(
                H2::open(&target.plain())
                    .await
                    .expect("an HTTP/2 connection"),
            );
        }
        let started = Instant::now();
        let closes = idle.into_iter().map(|h2| async move {
            let mut io = h2.into_io();
            let mut buf = [0u8; 256];
            loop {
                match tokio::time::timeout(CLOSED_WITHIN, io.read(&mut buf)).await {
                    Ok(Ok(0) | Err(_)) => return true,
                    Ok(Ok(_)) => continue,
                    Err(_) => return false,
                }
            }
        });
        let closed = futures_util::future::join_all(closes).await;
        let closed = closed.into_iter().filter(|c| *c).count();
        format!(
            "{closed} of {CONNECTIONS} closed by the router within {:.1} s",
            started.elapsed().as_secs_f64()
        )
    })
    .await;
    figures.assert_bounded();
    assert!(
        figures.outcome.starts_with(&format!("{CONNECTIONS} of")),
        "{}",
        figures.outcome
    );
}

/// An HTTP/1.1 client that asks for 100 MiB and reads it a few bytes at
/// a time through a tiny receive window. The body streams under
/// backpressure: the router holds a few buffers, not the response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_slow_read_of_100_mib_is_bounded() {
    /// How long the client trickles.
    const READING: Duration = Duration::from_secs(8);
    let target = Target::start().await;
    let figures = beside(&target, "HTTP/1.1 slow read of 100 MiB", async {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket
            .set_recv_buffer_size(4096)
            .expect("a small receive buffer");
        let mut stream = socket.connect(target.plain_addr()).await.expect("connect");
        stream
            .write_all(b"GET /large HTTP/1.1\r\nHost: slow.test\r\n\r\n")
            .await
            .expect("write the request");
        let started = Instant::now();
        let mut read = 0;
        let mut buf = [0u8; 64];
        while started.elapsed() < READING {
            match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(n)) => read += n,
                Err(_) => {}
            }
            // A few bytes at a time, as the attack does: the pause is the
            // attack itself, not a wait for something to happen.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        format!(
            "{read} bytes read in {:.0} s; the rest of the {} MiB waits upstream",
            started.elapsed().as_secs_f64(),
            LARGE_BODY / (1024 * 1024)
        )
    })
    .await;
    figures.assert_bounded();
}
