//! A gRPC client for trying the router: calls the Echo service of
//! `examples/grpc_upstream.rs` through whatever listens at ADDR (the
//! router's proxy port) in cleartext HTTP/2, once per shape, and prints
//! what came back.
//!
//! ```sh
//! cargo run --example grpc_call -- 127.0.0.1:8080 hello
//! ```

use std::net::SocketAddr;

use switchyard_grpc_fixture::{connect_h2c, Message, StreamRequest};
use tokio_stream::StreamExt;

fn main() {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = match args.next().as_deref().unwrap_or("127.0.0.1:8080").parse() {
        Ok(addr) => addr,
        Err(error) => {
            eprintln!("usage: grpc_call [ADDR] [TEXT]: {error}");
            std::process::exit(2);
        }
    };
    let text = args.next().unwrap_or_else(|| "hello".to_owned());
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
    let ok = runtime.block_on(async move {
        let mut client = connect_h2c(addr, &addr.to_string()).await;
        let message = Message {
            seq: 1,
            payload: Vec::new(),
            text,
        };
        match client.unary(message).await {
            Ok(answer) => println!("unary: {:?}", answer.into_inner().text),
            Err(status) => {
                println!("unary: {:?} {:?}", status.code(), status.message());
                return false;
            }
        }
        let request = StreamRequest { count: 3, size: 4 };
        match client.server_stream(request).await {
            Ok(answer) => {
                let mut stream = answer.into_inner();
                while let Some(message) = stream.next().await {
                    match message {
                        Ok(message) => println!("server stream: message {}", message.seq),
                        Err(status) => println!("server stream: {:?}", status.code()),
                    }
                }
            }
            Err(status) => println!("server stream: {:?} {:?}", status.code(), status.message()),
        }
        true
    });
    std::process::exit(if ok { 0 } else { 1 });
}
