//! Protecting upstreams, through a real router and real upstreams on
//! loopback (SPEC 7.4 to 7.6): rate limits, in-flight caps, retries on
//! answers and their budget, least-request and hash balancing, mirroring,
//! and the `recovering` state of an upstream that failed (SPEC 4.10).

mod support;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Request;
use http::StatusCode;
use http_body_util::BodyExt;
use support::{closed_port_url, eventually, Echoed, TestRouter, Upstream, UPSTREAM_HEADER};

/// How long the rate-limit runs send for.
const RUN: Duration = Duration::from_secs(2);

/// Requests sent one after another for `run`, each to `path` with `key` as
/// `x-key` if given; returns (accepted, refused with 429, time taken).
async fn hammer(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    run: Duration,
) -> (usize, usize, Duration) {
    let started = Instant::now();
    let (mut accepted, mut refused) = (0, 0);
    while started.elapsed() < run {
        let mut request = client.get(url);
        if let Some(key) = key {
            request = request.header("x-key", key);
        }
        let answer = request.send().await.expect("an answer");
        match answer.status() {
            StatusCode::OK => accepted += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                let wait: u64 = answer.headers()["retry-after"]
                    .to_str()
                    .expect("ASCII")
                    .parse()
                    .expect("whole seconds");
                assert!(wait >= 1, "Retry-After is at least 1");
                let body = support::json_of(answer).await;
                assert_eq!(body["error"], "rate_limited");
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    (accepted, refused, started.elapsed())
}

/// A token bucket of `rate` per second and `burst` lets `burst` through at
/// once and then `rate` a second: within a tenth of that over `took`.
#[track_caller]
fn assert_near_rate(accepted: usize, rate: f64, burst: f64, took: Duration) {
    let expected = burst + rate * took.as_secs_f64();
    assert!(
        (accepted as f64 - expected).abs() <= expected * 0.1 + 1.0,
        "{accepted} accepted in {took:?}, expected about {expected:.0}"
    );
}

fn client_from(ip: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(IpAddr::V4(ip))
        .build()
        .expect("a client")
}

#[tokio::test]
async fn a_rate_limit_lets_its_burst_and_rate_through_per_client() {
    let upstream = Upstream::echo("svc").start().await;
    let router = TestRouter::with_yaml(format!(
        "routes:\n  limited:\n    upstream: {}\n    rate_limit: {{ rate: 50/s, burst: 10, key: client_ip }}\n",
        upstream.url()
    ))
    .start()
    .await;
    let url = router.proxy_url("/x");
    let one = client_from(Ipv4Addr::new(127, 0, 0, 1));
    let two = client_from(Ipv4Addr::new(127, 0, 0, 2));
    let (first, second) =
        tokio::join!(hammer(&one, &url, None, RUN), hammer(&two, &url, None, RUN));
    for (accepted, refused, took) in [first, second] {
        assert!(refused > 0, "the limit refused nothing");
        assert_near_rate(accepted, 50.0, 10.0, took);
    }
    let metrics = router.metrics().await;
    let limited = metrics.value("switchyard_rate_limited_total{route=\"limited\"}");
    assert_eq!(limited as usize, first.1 + second.1);
}

#[tokio::test]
async fn a_rate_limit_holds_across_four_workers() {
    let upstream = Upstream::echo("svc").start().await;
    let router = TestRouter::with_yaml(format!(
        "routes:\n  limited:\n    upstream: {}\n    rate_limit: {{ rate: 50/s, burst: 10 }}\n",
        upstream.url()
    ))
    .workers(4)
    .start()
    .await;
    let url = router.proxy_url("/x");
    // Eight clients on eight connections, spread over the workers.
    let clients: Vec<reqwest::Client> = (0..8).map(|_| support::client()).collect();
    let runs = clients.iter().map(|client| hammer(client, &url, None, RUN));
    let results = futures_util::future::join_all(runs).await;
    let accepted: usize = results.iter().map(|r| r.0).sum();
    let took = results.iter().map(|r| r.2).max().expect("eight runs");
    assert_near_rate(accepted, 50.0, 10.0, took);
}

#[tokio::test]
async fn a_reload_keeps_an_unchanged_limit_and_refills_a_changed_one() {
    let upstream = Upstream::echo("svc").start().await;
    let routes = |burst: u32, marker: &str| {
        format!(
            "routes:\n  limited:\n    upstream: {}\n    rate_limit: {{ rate: 1/m, burst: {burst} }}\n  marker:\n    prefix: /marker\n    respond: {{ body: {marker} }}\n",
            upstream.url()
        )
    };
    let router = TestRouter::with_yaml(routes(3, "a")).start().await;
    for _ in 0..3 {
        assert_eq!(
            router.get("/x").send().await.expect("an answer").status(),
            200
        );
    }
    assert_eq!(
        router.get("/x").send().await.expect("an answer").status(),
        429
    );

    router.write_config(&routes(3, "b"));
    let (status, body) = router.reload().await;
    assert!(status.is_success(), "{body}");
    assert_eq!(
        router.get("/x").send().await.expect("an answer").status(),
        429,
        "an unchanged limit keeps its spent bucket"
    );

    router.write_config(&routes(4, "b"));
    let (status, body) = router.reload().await;
    assert!(status.is_success(), "{body}");
    assert_eq!(
        router.get("/x").send().await.expect("an answer").status(),
        200,
        "a changed limit starts afresh"
    );
}

#[tokio::test]
async fn past_max_keys_new_keys_share_the_overflow_bucket_and_no_key_exceeds_its_rate() {
    let upstream = Upstream::echo("svc").start().await;
    let router = TestRouter::with_yaml(format!(
        "routes:\n  limited:\n    upstream: {}\n    rate_limit: {{ rate: 1/m, burst: 1, key: \"header:x-key\", max_keys: 100 }}\n",
        upstream.url()
    ))
    .start()
    .await;
    let client = support::client();
    let url = router.proxy_url("/x");
    let mut accepted: HashMap<String, usize> = HashMap::new();
    for round in 0..2 {
        for key in 0..1_000 {
            let key = format!("k{key}");
            let status = client
                .get(&url)
                .header("x-key", &key)
                .send()
                .await
                .expect("an answer")
                .status();
            if status == StatusCode::OK {
                *accepted.entry(key).or_default() += 1;
            }
        }
        let _ = round;
    }
    // One token a minute: no key may get a second request through.
    let most = accepted.values().copied().max().unwrap_or(0);
    assert_eq!(most, 1, "a key went over its rate");
    // The first hundred keys have buckets of their own; the other 900
    // share one, which let one of them through.
    assert_eq!(accepted.len(), 101, "{accepted:?}");
    let metrics = router.metrics().await;
    let overflow = metrics.value("switchyard_rate_limit_overflow_total{route=\"limited\"}");
    assert_eq!(overflow as usize, 1_800);
}

/// An upstream that holds each request until the test lets that one go:
/// `waiting` gets one sender per request that has arrived.
fn holding(waiting: &Arc<Mutex<Vec<tokio::sync::oneshot::Sender<()>>>>) -> support::UpstreamSpec {
    let waiting = Arc::clone(waiting);
    Upstream::handler(axum::Router::new().fallback(move || {
        let (go, wait) = tokio::sync::oneshot::channel();
        waiting.lock().expect("not poisoned").push(go);
        async move {
            let _ = wait.await;
            "done"
        }
    }))
}

#[tokio::test]
async fn max_in_flight_refuses_at_once_and_admits_again_when_one_ends() {
    let waiting = Arc::new(Mutex::new(Vec::new()));
    let upstream = holding(&waiting).start().await;
    let router = TestRouter::with_yaml(format!(
        "routes:\n  capped:\n    upstream: {}\n    max_in_flight: 8\n",
        upstream.url()
    ))
    .start()
    .await;
    let held_now = || waiting.lock().expect("not poisoned").len();
    let mut held = tokio::task::JoinSet::new();
    for _ in 0..8 {
        held.spawn(router.get("/slow").send());
    }
    eventually(Duration::from_secs(5), || async { held_now() == 8 }).await;
    let started = Instant::now();
    let refused = router.get("/slow").send().await.expect("an answer");
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused at once"
    );
    let body = support::json_of(refused).await;
    assert_eq!(body["error"], "overloaded");

    // One finishes: the next is admitted while the other seven still wait.
    let first = waiting.lock().expect("not poisoned").remove(0);
    let _ = first.send(());
    let done = held.join_next().await.expect("a task").expect("no panic");
    let _ = done.expect("an answer").bytes().await;
    eventually(Duration::from_secs(5), || async {
        let next = tokio::spawn(router.get("/slow").send());
        let admitted = eventually(Duration::from_secs(2), || async {
            if next.is_finished() {
                return Some(false);
            }
            (held_now() == 8).then_some(true)
        })
        .await;
        if admitted {
            let last = waiting.lock().expect("not poisoned").pop();
            if let Some(last) = last {
                let _ = last.send(());
            }
        }
        let answer = next.await.expect("no panic").expect("an answer");
        admitted && answer.status() == StatusCode::OK
    })
    .await;
    for go in waiting.lock().expect("not poisoned").drain(..) {
        let _ = go.send(());
    }
    while held.join_next().await.is_some() {}
    let metrics = router.metrics().await;
    assert_eq!(
        metrics.value("switchyard_overloaded_total{route=\"capped\"}"),
        1.0
    );
}

/// An upstream that answers 503 to every other request, counting them.
fn flaky(seen: &Arc<AtomicUsize>) -> support::UpstreamSpec {
    let seen = Arc::clone(seen);
    Upstream::handler(axum::Router::new().fallback(move || {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        async move {
            if n % 2 == 0 {
                (StatusCode::SERVICE_UNAVAILABLE, "busy")
            } else {
                (StatusCode::OK, "ok")
            }
        }
    }))
}

#[tokio::test]
async fn retries_on_503_give_the_client_no_error_and_never_retry_a_post() {
    let seen = Arc::new(AtomicUsize::new(0));
    let upstream = flaky(&seen).start().await;
    let router = TestRouter::with_yaml(format!(
        "routes:\n  retried:\n    upstream: {}\n    retry: {{ on: [503], attempts: 3 }}\n",
        upstream.url()
    ))
    .start()
    .await;
    for _ in 0..100 {
        let answer = router.get("/x").send().await.expect("an answer");
        assert_eq!(answer.status(), StatusCode::OK);
    }
    let metrics = router.metrics().await;
    assert_eq!(
        metrics.value("switchyard_upstream_retries_total{route=\"retried\",reason=\"status\"}"),
        100.0
    );
    // A POST is never sent twice: its 503 goes to the client.
    seen.store(0, Ordering::SeqCst);
    let posted = router
        .request(reqwest::Method::POST, "/x")
        .body("payload")
        .send()
        .await
        .expect("an answer");
    assert_eq!(posted.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_per_try_timeout_moves_a_request_from_a_stalled_upstream_to_a_fast_one() {
    let stalled = Upstream::silent().start().await;
    let fast = Upstream::echo("fast").start().await;
    let router = TestRouter::with_yaml(format!(
        "routes:\n  two:\n    upstreams: [{}, {}]\n    retry: {{ on: [timeout], attempts: 2, per_try_timeout: 100ms }}\n",
        stalled.url(),
        fast.url()
    ))
    .start()
    .await;
    for _ in 0..10 {
        let started = Instant::now();
        let answer = router.get("/x").send().await.expect("an answer");
        let took = started.elapsed();
        assert_eq!(answer.headers()[UPSTREAM_HEADER], "fast");
        assert!(took < Duration::from_secs(2), "answered after {took:?}");
    }
}

#[tokio::test]
async fn the_retry_budget_caps_what_a_failing_route_sends_upstream() {
    let (seen_a, seen_b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let failing = |seen: &Arc<AtomicUsize>| {
        let seen = Arc::clone(seen);
        Upstream::handler(axum::Router::new().fallback(move || {
            seen.fetch_add(1, Ordering::SeqCst);
            async { StatusCode::SERVICE_UNAVAILABLE }
        }))
    };
    let (a, b) = (
        failing(&seen_a).start().await,
        failing(&seen_b).start().await,
    );
    let router = TestRouter::with_yaml(format!(
        "routes:\n  failing:\n    upstreams: [{}, {}]\n    retry: {{ on: [503], attempts: 3, budget: 20% }}\n",
        a.url(),
        b.url()
    ))
    .start()
    .await;
    // 200 requests a second for 5 s, each answered 503.
    let sent = 1_000usize;
    let mut ticks = tokio::time::interval(Duration::from_millis(5));
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..sent {
        ticks.tick().await;
        let request = router.get("/x").send();
        requests.spawn(async move { request.await.map(|r| r.status()) });
    }
    while let Some(answer) = requests.join_next().await {
        assert_eq!(answer.expect("the task").expect("an answer"), 503);
    }
    let upstream_saw = seen_a.load(Ordering::SeqCst) + seen_b.load(Ordering::SeqCst);
    // 20% of the first tries, plus ten a second over the ten-second window.
    let bound = sent + sent / 5 + 100;
    assert!(
        upstream_saw <= bound,
        "upstreams saw {upstream_saw}, over {bound}"
    );
    let metrics = router.metrics().await;
    let exhausted = metrics.value("switchyard_retry_budget_exhausted_total{route=\"failing\"}");
    assert!(exhausted > 0.0);
    assert_eq!(upstream_saw - sent, {
        let retried =
            metrics.value("switchyard_upstream_retries_total{route=\"failing\",reason=\"status\"}");
        retried as usize
    });
}

/// An upstream that answers after `delay`, naming itself.
fn slow(name: &'static str, delay: Duration) -> support::UpstreamSpec {
    Upstream::handler(axum::Router::new().fallback(move || async move {
        tokio::time::sleep(delay).await;
        ([(UPSTREAM_HEADER, name)], name)
    }))
}

#[tokio::test]
async fn least_request_sends_most_requests_to_the_faster_upstream() {
    let slow_one = slow("slow", Duration::from_millis(50)).start().await;
    let fast_one = slow("fast", Duration::from_millis(1)).start().await;
    let router = TestRouter::with_yaml(format!(
        "routes:\n  balanced:\n    upstreams: [{}, {}]\n    balance: least_request\n",
        slow_one.url(),
        fast_one.url()
    ))
    .start()
    .await;
    let counts = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let url = router.proxy_url("/x");
        let counts = Arc::clone(&counts);
        clients.spawn(async move {
            let client = support::client();
            for _ in 0..20 {
                let answer = client.get(&url).send().await.expect("an answer");
                let name = answer.headers()[UPSTREAM_HEADER]
                    .to_str()
                    .expect("ASCII")
                    .to_owned();
                *counts
                    .lock()
                    .expect("not poisoned")
                    .entry(name)
                    .or_default() += 1;
            }
        });
    }
    while clients.join_next().await.is_some() {}
    let counts = counts.lock().expect("not poisoned").clone();
    let fast = counts.get("fast").copied().unwrap_or(0);
    assert!(
        fast * 100 >= 640 * 80,
        "the fast upstream served {fast} of 640: {counts:?}"
    );
}

#[tokio::test]
async fn hash_balancing_keeps_keys_and_removing_one_upstream_moves_only_its_keys() {
    let upstreams = [
        Upstream::echo("a").start().await,
        Upstream::echo("b").start().await,
        Upstream::echo("c").start().await,
        Upstream::echo("d").start().await,
    ];
    let routes = |count: usize| {
        let urls: Vec<String> = upstreams[..count].iter().map(Upstream::url).collect();
        format!(
            "routes:\n  hashed:\n    upstreams: [{}]\n    balance: hash\n    hash_on: \"header:x-user\"\n",
            urls.join(", ")
        )
    };
    let router = TestRouter::with_yaml(routes(4)).start().await;
    let client = support::client();
    let placed = |_: usize| async {
        let mut placed = HashMap::new();
        for user in 0..1_000 {
            let answer = client
                .get(router.proxy_url("/x"))
                .header("x-user", format!("user-{user}"))
                .send()
                .await
                .expect("an answer");
            placed.insert(user, Echoed::from_response(answer).await.upstream);
        }
        placed
    };
    let first = placed(0).await;
    assert_eq!(placed(1).await, first, "every key stays on its upstream");
    router.write_config(&routes(3));
    let (status, body) = router.reload().await;
    assert!(status.is_success(), "{body}");
    let after = placed(2).await;
    let moved: Vec<_> = first
        .iter()
        .filter(|(user, was)| *was != "d" && after[user] != **was)
        .collect();
    assert!(
        moved.is_empty(),
        "keys moved though their upstream stayed: {moved:?}"
    );
    let on_d = first.values().filter(|u| *u == "d").count();
    assert!(
        (150..=350).contains(&on_d),
        "{on_d} of 1,000 keys were on one of four"
    );
}

/// A mirror that records the body of every copy it receives.
fn recording(bodies: &Arc<Mutex<Vec<(String, String)>>>) -> support::UpstreamSpec {
    let bodies = Arc::clone(bodies);
    Upstream::handler(axum::Router::new().fallback(move |request: Request| {
        let bodies = Arc::clone(&bodies);
        async move {
            let marker = request
                .headers()
                .get("x-switchyard-mirror")
                .map(|v| v.to_str().unwrap_or("").to_owned())
                .unwrap_or_default();
            let body = request.into_body().collect().await.map(|b| b.to_bytes());
            let body = String::from_utf8_lossy(&body.unwrap_or_default()).into_owned();
            bodies.lock().expect("not poisoned").push((marker, body));
            "mirrored"
        }
    }))
}

#[tokio::test]
async fn a_mirror_gets_its_share_of_copies_with_bodies_intact() {
    let upstream = Upstream::echo("svc").start().await;
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let mirror = recording(&bodies).start().await;
    let router = TestRouter::with_yaml(format!(
        "routes:\n  mirrored:\n    upstream: {}\n    mirror: {{ to: {}, percent: 50 }}\n",
        upstream.url(),
        mirror.url()
    ))
    .start()
    .await;
    for n in 0..1_000 {
        let answer = router
            .request(reqwest::Method::POST, "/orders")
            .body(format!("order {n}"))
            .send()
            .await
            .expect("an answer");
        assert_eq!(answer.status(), 200);
    }
    let copies = eventually(Duration::from_secs(10), || async {
        let metrics = router.metrics().await;
        let sent =
            metrics.value("switchyard_mirror_requests_total{route=\"mirrored\",result=\"sent\"}");
        let made = bodies.lock().expect("not poisoned").len();
        (sent as usize == made && made > 0).then_some(made)
    })
    .await;
    assert!(
        (440..=560).contains(&copies),
        "{copies} copies of 1,000 at 50%"
    );
    for (marker, body) in bodies.lock().expect("not poisoned").iter() {
        assert_eq!(marker, "1");
        assert!(body.starts_with("order "), "a copy's body: {body:?}");
    }
}

#[tokio::test]
async fn a_mirror_that_never_answers_costs_the_originals_nothing() {
    let upstream = Upstream::echo("svc").start().await;
    let silent = Upstream::silent().start().await;
    let router = TestRouter::with_yaml(format!(
        "routes:\n  mirrored:\n    prefix: /m\n    upstream: {url}\n    mirror: {{ to: {} }}\n  plain:\n    upstream: {url}\n",
        silent.url(),
        url = upstream.url()
    ))
    .start()
    .await;
    let p99 = |path: &'static str| {
        let router = &router;
        async move {
            let mut took = Vec::new();
            for _ in 0..200 {
                let started = Instant::now();
                let answer = router
                    .request(reqwest::Method::POST, path)
                    .body("payload")
                    .send()
                    .await
                    .expect("an answer");
                assert_eq!(answer.status(), 200);
                took.push(started.elapsed());
            }
            took.sort();
            took[197]
        }
    };
    let plain = p99("/p").await;
    let mirrored = p99("/m").await;
    println!("p99: {plain:?} without a mirror, {mirrored:?} with one that never answers");
    assert!(
        mirrored < plain * 5 + Duration::from_millis(50),
        "the mirror slowed the originals: {mirrored:?} against {plain:?}"
    );
    let metrics = router.metrics().await;
    let dropped =
        metrics.value("switchyard_mirror_requests_total{route=\"mirrored\",result=\"dropped\"}");
    assert!(
        dropped > 0.0,
        "copies past the per-worker bound are dropped"
    );
}

#[tokio::test]
async fn an_upstream_that_failed_is_recovering_until_a_request_succeeds() {
    let dead = closed_port_url().await;
    let port: u16 = dead
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port");
    let router = TestRouter::with_yaml(format!("routes:\n  one:\n    upstream: {dead}\n"))
        .start()
        .await;
    for _ in 0..3 {
        assert_eq!(
            router.get("/x").send().await.expect("an answer").status(),
            502
        );
    }
    let state = || async {
        let (_, body) = router.admin_json("/upstreams").await;
        body["routes"][0]["upstreams"][0]["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(state().await, "ejected");
    // The ejection (5 s) runs out with no request: recovering, not healthy.
    eventually(Duration::from_secs(10), || async {
        state().await == "recovering"
    })
    .await;
    let metrics = router.metrics().await;
    let label =
        format!("switchyard_upstream_healthy{{route=\"one\",upstream=\"127.0.0.1:{port}\"}}");
    assert_eq!(metrics.value(&label), 0.0);

    let _back = Upstream::echo("back")
        .start_on(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .await;
    assert_eq!(
        router.get("/x").send().await.expect("an answer").status(),
        200
    );
    assert_eq!(state().await, "healthy");
    assert_eq!(router.metrics().await.value(&label), 1.0);
}
