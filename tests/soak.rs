//! The soak (not part of `cargo test`; `benches/soak.sh` runs it): the real
//! binary under mixed traffic for `SOAK_SECS` (default 600) while the route
//! file is rewritten every 100 ms, alternating valid and invalid, and one
//! upstream flaps. It prints requests and errors by kind, RSS every 10 s,
//! and the gauges at the end, and fails if RSS grew (last minute more than
//! 10% above the second) or the gauges do not come back to idle.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use support::{eventually, Metrics, SwitchyardProcess, Upstream};
use tokio_tungstenite::tungstenite::Message;

type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

fn count(counts: &Counts, key: &str) {
    *counts
        .lock()
        .expect("not poisoned")
        .entry(key.to_owned())
        .or_default() += 1;
}

fn routes(echo: &str, big: &str, ws: &str, flap: &str, generation: u64) -> String {
    format!(
        "# generation {generation}
routes:
  small:
    prefix: /small
    upstream: {echo}
  big:
    prefix: /big
    upstream: {big}
  upload:
    prefix: /upload
    upstream: {echo}
  ws:
    prefix: /ws
    upstream: {ws}
  flap:
    prefix: /flap
    upstreams: [{echo}, {flap}]
"
    )
}

/// A WebSocket server that echoes every text frame.
fn websocket_echo() -> support::UpstreamSpec {
    Upstream::tcp(|stream| async move {
        let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
            return;
        };
        while let Some(Ok(message)) = ws.next().await {
            if message.is_text() && ws.send(message).await.is_err() {
                return;
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a 10-minute soak; run benches/soak.sh"]
async fn soak() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let duration = Duration::from_secs(secs);
    let echo = Upstream::echo("echo").start().await;
    let big = Upstream::streaming(1024 * 1024, 64 * 1024).start().await;
    let ws = websocket_echo().start().await;
    let flapping = Upstream::echo("flap").start().await;
    let flap_addr = flapping.addr();
    let (echo_url, big_url, ws_url, flap_url) = (echo.url(), big.url(), ws.url(), flapping.url());
    let yaml = |generation| routes(&echo_url, &big_url, &ws_url, &flap_url, generation);
    let router = SwitchyardProcess::run_with_yaml_and_env(
        &yaml(0),
        &[],
        &[(
            "SWITCHYARD_LOG",
            "warn,switchyard=info,switchyard::access=off",
        )],
    )
    .await;
    let proxy = router.proxy_url("");
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Counts = Arc::default();
    let started = Instant::now();
    let mut tasks = Vec::new();

    // HTTP loads: (path, body), two tasks each.
    for (path, body) in [
        ("/small", None),
        ("/big", None),
        ("/upload", Some(64 * 1024)),
        ("/flap", None),
    ] {
        for _ in 0..2 {
            let (stop, counts, url) = (
                Arc::clone(&stop),
                Arc::clone(&counts),
                format!("{proxy}{path}"),
            );
            tasks.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < duration {
                    let request = match body {
                        Some(len) => client.post(&url).body(vec![b'p'; len]),
                        None => client.get(&url),
                    };
                    let outcome = match request.send().await {
                        Ok(response) => {
                            let status = response.status();
                            match response.bytes().await {
                                Ok(_) if status.is_success() => "ok".to_owned(),
                                Ok(_) => format!("status {}", status.as_u16()),
                                Err(_) => "body error".to_owned(),
                            }
                        }
                        Err(_) => "request error".to_owned(),
                    };
                    count(&counts, &format!("{path} {outcome}"));
                }
            }));
        }
    }
    // WebSocket echoes: connect, 20 round trips, close, again.
    {
        let (stop, counts) = (Arc::clone(&stop), Arc::clone(&counts));
        let url = format!("{}/ws/soak", proxy.replace("http://", "ws://"));
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) && started.elapsed() < duration {
                let Ok((mut socket, _)) = tokio_tungstenite::connect_async(&url).await else {
                    count(&counts, "/ws connect error");
                    continue;
                };
                let mut ok = true;
                for i in 0..20 {
                    let text = format!("echo {i}");
                    if socket.send(Message::text(text.clone())).await.is_err() {
                        ok = false;
                        break;
                    }
                    match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
                        Ok(Some(Ok(Message::Text(back)))) if back.as_str() == text => {}
                        _ => {
                            ok = false;
                            break;
                        }
                    }
                }
                let _ = socket.close(None).await;
                count(&counts, if ok { "/ws ok" } else { "/ws echo error" });
            }
        }));
    }
    // Reloads every 100 ms, valid and invalid in turn.
    {
        let (stop, counts) = (Arc::clone(&stop), Arc::clone(&counts));
        let path = router.route_file().path().to_path_buf();
        let staged = path.with_extension("staged");
        let valid: Vec<String> = (1..=2).map(yaml).collect();
        tasks.push(tokio::spawn(async move {
            let mut generation = 0u64;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < duration {
                generation += 1;
                let text = if generation % 2 == 0 {
                    valid[(generation / 2 % 2) as usize].clone()
                } else {
                    "routes:\n  broken:\n    prefx: /nope\n    upstream: http://127.0.0.1:1\n"
                        .to_owned()
                };
                if std::fs::write(&staged, text)
                    .and_then(|()| std::fs::rename(&staged, &path))
                    .is_err()
                {
                    count(&counts, "reload write error");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    // The flapping upstream: 2 s up, 2 s down, on the same port.
    {
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut up = Some(flapping);
            while !stop.load(Ordering::Relaxed) && started.elapsed() < duration {
                tokio::time::sleep(Duration::from_secs(2)).await;
                up = match up.take() {
                    Some(running) => {
                        drop(running);
                        None
                    }
                    None => Some(Upstream::echo("flap").start_on(flap_addr).await),
                };
            }
        }));
    }

    // RSS every 10 s.
    let mut rss = Vec::new();
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_secs(10).min(duration)).await;
        let kib = router.rss_kib();
        rss.push(kib);
        let total: u64 = counts.lock().expect("not poisoned").values().sum();
        println!(
            "t={:>4}s rss={:>7} KiB requests={total}",
            started.elapsed().as_secs(),
            kib
        );
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a load task");
    }

    println!("outcomes:");
    for (key, n) in counts.lock().expect("not poisoned").iter() {
        println!("  {key}: {n}");
    }
    let client = reqwest::Client::new();
    let scrape = || async {
        let text = client
            .get(router.admin_url("/metrics"))
            .send()
            .await
            .expect("the admin API answers")
            .text()
            .await
            .expect("a body");
        Metrics(text)
    };
    eventually(Duration::from_secs(10), || async {
        let metrics = scrape().await;
        metrics.value("switchyard_connections_open{listener=\"proxy\"}") == 0.0
            && metrics.value("switchyard_tunnels_open") == 0.0
            && metrics.value("switchyard_config_generations_live") == 1.0
    })
    .await;
    let metrics = scrape().await;
    for series in [
        "switchyard_connections_open{listener=\"proxy\"}",
        "switchyard_tunnels_open",
        "switchyard_config_generations_live",
        "switchyard_config_reloads_total{result=\"ok\"}",
        "switchyard_config_reloads_total{result=\"error\"}",
        "switchyard_config_version",
    ] {
        println!("{series} {}", metrics.value(series));
    }
    if rss.len() >= 12 {
        // The second 10 s sample against the mean of the last minute.
        let second = rss[1] as f64;
        let last_minute = &rss[rss.len() - 6..];
        let last = last_minute.iter().sum::<u64>() as f64 / last_minute.len() as f64;
        println!(
            "rss second sample {second} KiB, last minute mean {last:.0} KiB ({:+.1}%)",
            (last / second - 1.0) * 100.0
        );
        assert!(
            last <= second * 1.10,
            "RSS grew: {second} KiB to {last:.0} KiB"
        );
    }
}
