//! Upgrades through the router (SPEC 4.7): a real WebSocket client talks to
//! a real WebSocket server behind the router, over real sockets.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use support::{eventually, TestRouter, Upstream};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// An upgraded exchange that takes longer than this on loopback is stuck.
const FRAME_DEADLINE: Duration = Duration::from_secs(5);

/// What the WebSocket upstream reports about each connection.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// The handshake completed (the upstream answered 101).
    Opened,
    /// The client's side went away: the read side ended or broke.
    ClientGone,
}

/// A WebSocket server that greets each connection unprompted (server to
/// client), answers `ping N` with `pong N` (client to server and back),
/// drops the connection without a closing handshake on `hang up`, and
/// reports what it saw on `seen`.
fn websocket_upstream(seen: mpsc::UnboundedSender<Seen>) -> support::UpstreamSpec {
    Upstream::tcp(move |stream| {
        let seen = seen.clone();
        async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            let _ = seen.send(Seen::Opened);
            if ws.send(Message::text("hello from upstream")).await.is_err() {
                return;
            }
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(text))) if text.as_str() == "hang up" => return,
                    Some(Ok(Message::Text(text))) => {
                        let answer = text.as_str().replacen("ping", "pong", 1);
                        if ws.send(Message::text(answer)).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(_)) => {}
                    None | Some(Err(_)) => break,
                }
            }
            let _ = seen.send(Seen::ClientGone);
        }
    })
}

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A router whose only route sends `/ws` to a WebSocket upstream.
async fn websocket_behind_router() -> (Upstream, TestRouter, mpsc::UnboundedReceiver<Seen>) {
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let upstream = websocket_upstream(seen_tx).start().await;
    let router = TestRouter::with_yaml(routes_to(&upstream.url()))
        .start()
        .await;
    (upstream, router, seen)
}

fn routes_to(upstream: &str) -> String {
    format!(
        "routes:
  ws:
    prefix: /ws
    upstream: {upstream}
"
    )
}

/// Opens a WebSocket through the router; asserts the 101 came back.
async fn connect(router: &TestRouter) -> Client {
    let url = format!("ws://{}/ws/chat", router.proxy_addr());
    let (ws, response) =
        tokio::time::timeout(FRAME_DEADLINE, tokio_tungstenite::connect_async(url))
            .await
            .expect("the handshake finishes in time")
            .expect("the router passes the upgrade through");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws
}

/// The next frame's text; panics on anything else or on a stall.
async fn next_text(ws: &mut Client) -> String {
    match tokio::time::timeout(FRAME_DEADLINE, ws.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => text.as_str().to_owned(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

async fn ping(ws: &mut Client, n: u32) {
    ws.send(Message::text(format!("ping {n}")))
        .await
        .expect("send through the router");
    assert_eq!(next_text(ws).await, format!("pong {n}"));
}

async fn next_seen(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(FRAME_DEADLINE, seen.recv())
        .await
        .expect("the upstream reports in time")
        .expect("the upstream is still running")
}

#[tokio::test]
async fn websocket_frames_pass_both_ways_after_101() {
    let (_upstream, router, mut seen) = websocket_behind_router().await;

    let mut ws = connect(&router).await;

    assert_eq!(next_seen(&mut seen).await, Seen::Opened);
    assert_eq!(next_text(&mut ws).await, "hello from upstream");
    for n in 0..3 {
        ping(&mut ws, n).await;
    }
    // A frame larger than any single read buffer, so the copy loops.
    let big = "x".repeat(256 * 1024);
    ws.send(Message::text(format!("ping {big}"))).await.unwrap();
    assert_eq!(next_text(&mut ws).await, format!("pong {big}"));
}

#[tokio::test]
async fn reload_during_an_open_websocket_does_not_close_it() {
    let (upstream, router, mut seen) = websocket_behind_router().await;
    let mut ws = connect(&router).await;
    assert_eq!(next_text(&mut ws).await, "hello from upstream");
    ping(&mut ws, 1).await;

    // The new table no longer has the route the socket was opened on.
    router.write_config(
        "routes:
  gone:
    prefix: /elsewhere
    respond: { status: 410 }
",
    );
    eventually(Duration::from_secs(2), || async {
        router.version().await == 2
    })
    .await;
    let fresh = router.get("/ws/chat").send().await.unwrap();
    assert_eq!(
        fresh.status(),
        StatusCode::NOT_FOUND,
        "the new table is live"
    );

    ping(&mut ws, 2).await;
    ping(&mut ws, 3).await;
    assert_eq!(upstream.connections(), 1);
    assert_eq!(next_seen(&mut seen).await, Seen::Opened);
    assert!(
        seen.try_recv().is_err(),
        "the upstream saw the socket close"
    );
}

#[tokio::test]
async fn client_closing_the_socket_closes_the_upstream_side() {
    let (_upstream, router, mut seen) = websocket_behind_router().await;
    let mut ws = connect(&router).await;
    assert_eq!(next_text(&mut ws).await, "hello from upstream");
    ping(&mut ws, 1).await;
    assert_eq!(next_seen(&mut seen).await, Seen::Opened);

    // Gone without a closing handshake: only the TCP close tells.
    drop(ws);

    assert_eq!(next_seen(&mut seen).await, Seen::ClientGone);
}

#[tokio::test]
async fn upstream_closing_the_socket_closes_the_client_side() {
    let (_upstream, router, _seen) = websocket_behind_router().await;
    let mut ws = connect(&router).await;
    assert_eq!(next_text(&mut ws).await, "hello from upstream");

    ws.send(Message::text("hang up")).await.unwrap();

    // The upstream dropped its socket without a closing frame: the client
    // must see the end of the stream, not wait forever.
    match tokio::time::timeout(FRAME_DEADLINE, ws.next()).await {
        Ok(None | Some(Err(_))) => {}
        other => panic!("the client side stayed open: {other:?}"),
    }
}

#[tokio::test]
async fn closing_handshake_passes_through() {
    let (_upstream, router, mut seen) = websocket_behind_router().await;
    let mut ws = connect(&router).await;
    assert_eq!(next_text(&mut ws).await, "hello from upstream");
    assert_eq!(next_seen(&mut seen).await, Seen::Opened);

    ws.close(None).await.unwrap();

    // The upstream's tungstenite answers the Close frame; the client then
    // sees its stream end cleanly.
    loop {
        match tokio::time::timeout(FRAME_DEADLINE, ws.next()).await {
            Ok(None) => break,
            Ok(Some(Ok(Message::Close(_)))) => continue,
            other => panic!("expected the close handshake to finish, got {other:?}"),
        }
    }
    assert_eq!(next_seen(&mut seen).await, Seen::ClientGone);
}

#[tokio::test]
async fn tunnel_and_connection_gauges_come_back_to_idle() {
    let (_upstream, router, mut seen) = websocket_behind_router().await;
    let metrics = router.metrics().await;
    assert_eq!(metrics.value("switchyard_tunnels_open"), 0.0);
    assert_eq!(
        metrics.value("switchyard_connections_open{listener=\"proxy\"}"),
        0.0
    );

    let mut ws = connect(&router).await;
    assert_eq!(next_seen(&mut seen).await, Seen::Opened);
    assert_eq!(next_text(&mut ws).await, "hello from upstream");
    // Once upgraded, the connection is no longer HTTP: it counts as a
    // tunnel instead.
    let metrics = router.metrics().await;
    assert_eq!(metrics.value("switchyard_tunnels_open"), 1.0);
    assert_eq!(
        metrics.value("switchyard_connections_open{listener=\"proxy\"}"),
        0.0
    );

    ws.close(None).await.expect("close the client side");
    drop(ws);
    assert_eq!(next_seen(&mut seen).await, Seen::ClientGone);
    eventually(FRAME_DEADLINE, || async {
        let metrics = router.metrics().await;
        metrics.value("switchyard_tunnels_open") == 0.0
            && metrics.value("switchyard_connections_open{listener=\"proxy\"}") == 0.0
    })
    .await;
}

#[tokio::test]
async fn a_tunnel_open_at_shutdown_is_kept_until_the_drain_deadline_then_closed() {
    const DRAIN: Duration = Duration::from_secs(1);
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let upstream = websocket_upstream(seen_tx).start().await;
    let mut router = TestRouter::with_yaml(routes_to(&upstream.url()))
        .drain_timeout(DRAIN)
        .start()
        .await;
    let mut ws = connect(&router).await;
    assert_eq!(next_seen(&mut seen).await, Seen::Opened);
    assert_eq!(next_text(&mut ws).await, "hello from upstream");

    router.begin_shutdown();
    // Draining: the tunnel still relays.
    ping(&mut ws, 1).await;
    // At the deadline it is closed, and the router finishes stopping.
    tokio::time::timeout(DRAIN + FRAME_DEADLINE, router.stop())
        .await
        .expect("the router stops once the drain deadline has passed");
    let ended = tokio::time::timeout(FRAME_DEADLINE, async {
        loop {
            match ws.next().await {
                Some(Ok(_)) => continue,
                None | Some(Err(_)) => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the client side of the tunnel was closed");
    assert_eq!(next_seen(&mut seen).await, Seen::ClientGone);
}
