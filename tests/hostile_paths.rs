//! Path normalization as a security boundary (SPEC 4.6): `/admin` is a deny
//! route answered by the router itself, everything else goes upstream, and
//! no spelling of a path may reach the upstream as `/admin`. Requests go out
//! over raw sockets, because HTTP clients normalize the targets these tests
//! are about before sending them.

mod support;

use support::{send_raw, Echoed, RawResponse, TestRouter, Upstream};

/// The deny route's body, to tell its answer from anything else.
const DENIED: &str = "denied by switchyard";

async fn deny_admin_router() -> (Upstream, TestRouter) {
    let upstream = Upstream::echo("app").start().await;
    let router = TestRouter::with_yaml(format!(
        "routes:
  deny-admin:
    prefix: /admin
    respond: {{ status: 403, body: \"{DENIED}\" }}
  app:
    prefix: /
    upstream: {}
",
        upstream.url()
    ))
    .start()
    .await;
    (upstream, router)
}

async fn get_raw(router: &TestRouter, target: &str) -> RawResponse {
    send_raw(
        router.proxy_addr(),
        &format!("GET {target} HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// Whether a path the upstream received is `/admin` or below it.
fn is_admin(path: &str) -> bool {
    path == "/admin" || path.starts_with("/admin/")
}

#[tokio::test]
async fn every_spelling_of_admin_hits_the_deny_route() {
    let (upstream, router) = deny_admin_router().await;

    for target in [
        "/admin",
        "/admin/",
        "/admin/users",
        // Dot-segments, plain and percent-encoded in every case mix.
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "/public/%2e%2E/admin",
        "/public/.%2E/admin",
        "/public/%2e./admin",
        "/public/%2e%2e/admin/users",
        // Single-dot segments.
        "/./admin",
        "/public/./../admin",
        "/admin/./users",
        "/%2e/admin",
        // Climbing above the root stays at the root.
        "/../admin",
        "/../../../../admin",
        "/a/b/c/../../../../../../../admin",
        "/public/%2e%2e/%2e%2e/%2e%2e/admin",
        // Backslashes are separators, as `Url` (and so reqwest) treats them.
        "/public\\..\\admin",
        "/public\\%2e%2e\\admin",
        "/\\admin",
        // Runs of slashes are merged.
        "//admin",
        "///admin//users",
        "/public/..//admin",
        // Escaped unreserved characters are the characters themselves.
        "/%61dmin",
        "/%61%64%6D%69%6E/users",
        // Absolute-form targets take the same path rules.
        "http://site.test/public/../admin",
    ] {
        let answer = get_raw(&router, target).await;
        assert_eq!(
            (
                answer.status,
                String::from_utf8_lossy(&answer.body).as_ref()
            ),
            (403, DENIED),
            "{target} was not denied"
        );
    }

    assert_eq!(upstream.requests(), 0, "a bypass reached the upstream");
}

#[tokio::test]
async fn paths_that_are_not_admin_arrive_normalized_and_never_as_admin() {
    let (upstream, router) = deny_admin_router().await;

    for (target, received) in [
        // An encoded slash is data, not a separator: it stays encoded, and
        // the segment is `admin%2Fsecret`, not `admin`.
        ("/admin%2Fsecret", "/admin%2Fsecret"),
        ("/admin%2fsecret", "/admin%2Fsecret"),
        ("/public/%2e%2e%2Fadmin", "/public/..%2Fadmin"),
        ("/public/..%2fadmin", "/public/..%2Fadmin"),
        // A double-encoded dot is decoded once only: `%252e` is `%2e` text.
        ("/public/%252e%252e/admin", "/public/%252e%252e/admin"),
        // Whole segments: `/administrator` is not under `/admin`.
        ("/administrator", "/administrator"),
        ("/admin.html", "/admin.html"),
        // Dot-segments elsewhere resolve the same way they are matched.
        ("/public/x/../y", "/public/y"),
        ("/public/./y/.", "/public/y/"),
        ("/../etc/passwd", "/etc/passwd"),
        ("/public\\y", "/public/y"),
        ("//public//y", "/public/y"),
    ] {
        let answer = get_raw(&router, target).await;
        assert_eq!(answer.status, 200, "{target}");
        let echoed = Echoed::from_body(&answer.body);
        assert_eq!(echoed.path, received, "{target}");
        assert!(!is_admin(&echoed.path), "{target} reached {}", echoed.path);
    }

    assert_eq!(upstream.requests(), 12);
}

#[tokio::test]
async fn unroutable_targets_get_400_and_reach_nothing() {
    let (upstream, router) = deny_admin_router().await;

    for target in [
        // A `%` that is not an escape: upstreams disagree on its meaning.
        "/admin%zz",
        "/public/%2",
        "/%",
    ] {
        let answer = get_raw(&router, target).await;
        assert_eq!(answer.status, 400, "{target}");
    }

    assert_eq!(upstream.requests(), 0);
}
