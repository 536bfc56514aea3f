//! Any request target through path canonicalization and upstream joining:
//! a canonical path is a fixed point, never climbs above `/`, keeps no
//! dot-segment, and the upstream path built from it is canonical too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::routes::path::{canonical_path, upstream_path};

fuzz_target!(|data: (&str, bool)| {
    let (raw, strip) = data;
    let Ok(path) = canonical_path(raw) else {
        return;
    };
    assert!(path.starts_with('/'), "{path}");
    assert_eq!(
        canonical_path(&path).ok().as_deref(),
        Some(path.as_str()),
        "{raw:?}"
    );
    assert!(path.split('/').all(|s| s != "." && s != ".."), "{path}");
    for (base, prefix) in [("", "/"), ("/v2", "/a"), ("/b/c", "/a/b")] {
        let sent = upstream_path(base, prefix, &path, strip);
        assert!(sent.starts_with('/'), "{sent}");
        assert!(sent.split('/').all(|s| s != "." && s != ".."), "{sent}");
    }
});
