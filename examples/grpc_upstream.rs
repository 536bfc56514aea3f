//! The gRPC upstream of `benches/grpc.sh`: the tests' Echo service
//! (tests/grpc-fixture, tonic) in cleartext HTTP/2 on the address given
//! (default `127.0.0.1:18181`), on one thread, until it is stopped.
//!
//! ```sh
//! cargo run --release --example grpc_upstream -- 127.0.0.1:18181
//! ```

use std::net::SocketAddr;

fn main() {
    let addr: SocketAddr = match std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:18181")
        .parse()
    {
        Ok(addr) => addr,
        Err(error) => {
            eprintln!("usage: grpc_upstream [ADDR]: {error}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start a runtime: {error}");
            std::process::exit(1);
        }
    };
    runtime.block_on(async {
        let server = switchyard_grpc_fixture::serve_h2c_on(addr).await;
        eprintln!("grpc_upstream listening on {}", server.addr);
        std::future::pending::<()>().await;
    });
}
