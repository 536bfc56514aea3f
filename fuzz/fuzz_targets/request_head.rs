//! Any bytes as a client's request, through the real server and handler to
//! a stub upstream on 127.0.0.1. The router must answer with a well-formed
//! status line or close, never with a 500, and keep serving.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use libfuzzer_sys::fuzz_target;
use switchyard::proxy::handler;
use switchyard::proxy::server;
use switchyard::proxy::state::ProxyState;
use switchyard::proxy::tunnel::Tunnels;
use switchyard::reload::reloader::build;
use switchyard::routes::config::Source;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

struct Rig {
    runtime: Runtime,
    proxy: SocketAddr,
}

/// Answers every request head with a small 200 and closes, whatever came.
async fn stub_upstream(listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .await;
        });
    }
}

fn rig() -> &'static Rig {
    static RIG: OnceLock<Rig> = OnceLock::new();
    RIG.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let proxy = runtime.block_on(async {
            let upstream = TcpListener::bind("127.0.0.1:0").await.expect("bind the stub");
            let upstream_addr = upstream.local_addr().expect("an address");
            tokio::spawn(stub_upstream(upstream));
            let yaml = format!(
                "routes:\n  all:\n    upstream: http://{upstream_addr}\n    timeout: 1s\n  api:\n    prefix: /api\n    host: \"*.example.com\"\n    strip_prefix: true\n    upstream: http://{upstream_addr}/v2\n  hello:\n    prefix: /hello\n    respond: {{ body: hi }}\n"
            );
            let table = build(&Source::new(yaml), 1).expect("a valid table");
            let live = Arc::new(ArcSwap::from_pointee(table));
            let state = ProxyState::new(live, Tunnels::new(Arc::default())).expect("a client");
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
            let proxy = listener.local_addr().expect("an address");
            tokio::spawn(server::serve(
                listener,
                server::Transport::Plain,
                handler::app(state),
                std::future::pending::<()>(),
                Duration::from_secs(1),
                Arc::default(),
            ));
            proxy
        });
        Rig { runtime, proxy }
    })
}

fuzz_target!(|data: &[u8]| {
    let rig = rig();
    rig.runtime.block_on(async {
        let mut stream = TcpStream::connect(rig.proxy)
            .await
            .expect("the router still accepts");
        let _ = stream.write_all(data).await;
        // The end of the input is the end of the request: the server sees
        // EOF instead of waiting out its header timeout.
        let _ = stream.shutdown().await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut answer)).await;
        if answer.is_empty() {
            return;
        }
        assert!(
            answer.starts_with(b"HTTP/1.1 ")
                || answer.starts_with(b"HTTP/1.0 ")
                || answer.starts_with(b"\x00\x00"),
            "not a status line: {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(64)])
        );
        assert!(
            !answer.starts_with(b"HTTP/1.1 500"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    });
});
