//! The canonical request path: the one spelling of a path that the router
//! matches on and the upstream receives (SPEC 4.6).
//!
//! This is a security boundary. reqwest sends whatever `url::Url` makes of a
//! path, and `Url` resolves dot-segments (also `%2e` spellings) and treats `\`
//! as `/`. Matching one spelling and forwarding another is the classic proxy
//! bypass (Envoy CVE-2019-9901), so [`canonical_path`] runs the request path
//! through `Url` itself and the router only ever sees its output.
//!
//! What the canonical form looks like:
//! - percent-escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are
//!   decoded, every other escape keeps its octet with uppercase hex digits
//!   (`%2f` becomes `%2F`; an encoded slash never becomes a separator);
//! - `.` and `..` segments are resolved, never above `/`;
//! - `\` is a separator, as `Url` treats it for `http`;
//! - runs of slashes are merged (`//a//b` becomes `/a/b`), as nginx does by
//!   default: the upstream receives the merged path, so an upstream that
//!   merges slashes itself cannot be reached at `//admin` past a route that
//!   guards `/admin`;
//! - a trailing slash is kept;
//! - characters `Url` must encode (space, non-ASCII, `"`, `<`...) are
//!   percent-encoded the way `Url` does it.
//!
//! The result is a fixed point: canonicalizing it again, or setting it as the
//! path of a `Url`, leaves it unchanged.

use std::fmt;

use std::sync::LazyLock;

use url::Url;

/// Why a request target cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// The target is not a path starting with `/` (asterisk-form `*`, an
    /// empty target, or anything else that is not origin-form).
    NotOriginForm,
    /// A `%` not followed by two hex digits. RFC 3986 has no meaning for it,
    /// and upstreams disagree on how to read it, so it is refused rather than
    /// guessed at.
    InvalidPercentEncoding,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::NotOriginForm => f.write_str("request target is not an origin-form path"),
            PathError::InvalidPercentEncoding => {
                f.write_str("request path has a `%` not followed by two hex digits")
            }
        }
    }
}

impl std::error::Error for PathError {}

/// Returns the path exactly as `url::Url` will send it upstream, so the router
/// matches on the same bytes the upstream receives.
///
/// `raw` is the path of the request target as received (no query), e.g.
/// `http::Uri::path()`, which hyper leaves unnormalized.
pub fn canonical_path(raw: &str) -> Result<String, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    if is_already_canonical(raw) {
        return Ok(raw.to_owned());
    }
    let decoded = decode_unreserved(raw)?;
    let mut url = BASE_URL.clone();
    url.set_path(&decoded);
    Ok(merge_slashes(url.path()))
}

/// [`canonical_path`] for a path already owned: returned as it is when it
/// is canonical, which spares a copy.
pub fn into_canonical_path(raw: String) -> Result<String, PathError> {
    if raw.starts_with('/') && is_already_canonical(&raw) {
        return Ok(raw);
    }
    canonical_path(&raw)
}

/// Merging cannot create a dot-segment or an escape, so the result is still
/// a path `Url` leaves unchanged.
fn merge_slashes(path: &str) -> String {
    let mut merged = String::with_capacity(path.len());
    for c in path.chars() {
        if c == '/' && merged.ends_with('/') {
            continue;
        }
        merged.push(c);
    }
    merged
}

/// Builds the upstream path from an upstream URL's base path and the canonical
/// request path.
///
/// `prefix` is the matched route prefix in canonical form (`/` or `/a/b`, no
/// trailing slash). The caller guarantees that `path` is `prefix`, starts with
/// `prefix` followed by `/`, or that `prefix` is `/`; should that not hold,
/// nothing is stripped rather than cutting a segment in half.
///
/// With `strip_prefix`, a path equal to the prefix becomes the base path
/// itself (SPEC 2), so `/` under prefix `/` goes to `/v2`, not `/v2/`.
/// Without it, the whole path is appended to the base. An empty base or `/`
/// means no base path.
pub fn upstream_path(base: &str, prefix: &str, path: &str, strip_prefix: bool) -> String {
    let rest = if !strip_prefix {
        path
    } else if path == prefix {
        ""
    } else if prefix == "/" {
        path
    } else {
        match path.strip_prefix(prefix) {
            Some(rest) if rest.starts_with('/') => rest,
            _ => path,
        }
    };
    // The base's own trailing slash is dropped because `rest` brings the
    // separator; keeping both would create an empty segment the operator
    // never wrote.
    let base = base.trim_end_matches('/');
    let mut out = String::with_capacity(base.len() + rest.len() + 1);
    if !base.is_empty() && !base.starts_with('/') {
        out.push('/');
    }
    out.push_str(base);
    out.push_str(rest);
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// A URL with an `http` scheme and a host, so `set_path` applies exactly the
/// rules reqwest's requests get (special scheme: `\` is a separator).
/// Parsed once: parsing runs host validation, which costs more than the
/// path work itself.
static BASE_URL: LazyLock<Url> =
    LazyLock::new(|| Url::parse("http://h/").expect("a constant, valid URL"));

/// The common case, decided without `Url`: a path made only of characters
/// that are neither escaped, decoded nor encoded by any rule above, with no
/// empty, `.` or `..` segment, is its own canonical form. Anything else takes
/// the full route; a test checks both routes agree.
fn is_already_canonical(path: &str) -> bool {
    let plain = path.bytes().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'/' | b'-'
                    | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
            )
    });
    plain
        && path[1..]
            .split('/')
            .enumerate()
            .all(|(index, segment)| match segment {
                // A trailing slash leaves one empty segment at the end.
                "" => index == path[1..].split('/').count() - 1,
                "." | ".." => false,
                _ => true,
            })
}

/// Decodes escapes of unreserved characters and uppercases the hex digits of
/// every other escape (RFC 3986 6.2.2.1 and 6.2.2.2).
///
/// One pass only: `%252e` stays `%252e` (an escaped `%` and two letters),
/// never `.`. Decoding cannot create a new escape, because `%` itself is
/// reserved and stays encoded, so the output is already a fixed point of
/// this function.
fn decode_unreserved(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            i += 1;
            continue;
        }
        let (hi, lo) = match (bytes.get(i + 1), bytes.get(i + 2)) {
            (Some(&hi), Some(&lo)) => (hi, lo),
            _ => return Err(PathError::InvalidPercentEncoding),
        };
        let (Some(h), Some(l)) = (hex_value(hi), hex_value(lo)) else {
            return Err(PathError::InvalidPercentEncoding);
        };
        // `start..i` ends just before a `%`, an ASCII byte, so it is a char
        // boundary.
        out.push_str(&raw[start..i]);
        let octet = (h << 4) | l;
        if is_unreserved(octet) {
            out.push(char::from(octet));
        } else {
            out.push('%');
            out.push(char::from(hi.to_ascii_uppercase()));
            out.push(char::from(lo.to_ascii_uppercase()));
        }
        i += 3;
        start = i;
    }
    out.push_str(&raw[start..]);
    Ok(out)
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// RFC 3986 2.3.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(raw: &str) -> String {
        canonical_path(raw).expect("a valid origin-form path")
    }

    /// Every canonical path must survive both another canonicalization and
    /// being sent through `Url`, or matching and forwarding could diverge.
    fn assert_fixed_point(raw: &str) {
        let once = canon(raw);
        assert_eq!(
            canon(&once),
            once,
            "canonical_path is not idempotent for {raw:?}"
        );
        let mut url = BASE_URL.clone();
        url.set_path(&once);
        assert_eq!(
            url.path(),
            once,
            "Url rewrites the canonical path of {raw:?}"
        );
    }

    #[test]
    fn dot_dot_segment_is_resolved() {
        assert_eq!(canon("/public/../admin"), "/admin");
    }

    #[test]
    fn encoded_dot_dot_is_resolved_in_any_case() {
        assert_eq!(canon("/public/%2e%2e/admin"), "/admin");
        assert_eq!(canon("/public/%2E%2e/admin"), "/admin");
        assert_eq!(canon("/public/%2E%2E/admin"), "/admin");
        assert_eq!(canon("/public/%2e./admin"), "/admin");
        assert_eq!(canon("/public/.%2E/admin"), "/admin");
    }

    #[test]
    fn single_dot_segments_are_removed() {
        assert_eq!(canon("/./a/./b"), "/a/b");
        assert_eq!(canon("/a/%2e/b"), "/a/b");
    }

    #[test]
    fn dot_segments_cannot_climb_above_root() {
        assert_eq!(canon("/../../etc"), "/etc");
        assert_eq!(canon("/a/../../../../etc/passwd"), "/etc/passwd");
        assert_eq!(canon("/%2e%2e/%2e%2e/%2e%2e/etc"), "/etc");
        assert_eq!(canon("/.."), "/");
    }

    #[test]
    fn trailing_dot_segment_leaves_a_trailing_slash() {
        assert_eq!(canon("/a/b/.."), "/a/");
        assert_eq!(canon("/a/b/."), "/a/b/");
    }

    #[test]
    fn backslash_is_a_separator() {
        assert_eq!(canon("/public\\..\\admin"), "/admin");
        assert_eq!(canon("/a\\b/"), "/a/b/");
        assert_eq!(canon("/\\admin"), "/admin");
        // Origin-form starts with `/`; a leading `\` is not one, even though
        // Url would read it as a separator.
        assert_eq!(canonical_path("\\admin"), Err(PathError::NotOriginForm));
    }

    #[test]
    fn unreserved_escapes_are_decoded() {
        assert_eq!(canon("/%61dmin"), "/admin");
        assert_eq!(canon("/%7Euser/%2D%5F"), "/~user/-_");
    }

    #[test]
    fn runs_of_slashes_are_merged() {
        assert_eq!(canon("//double//slashes"), "/double/slashes");
        assert_eq!(canon("//"), "/");
        assert_eq!(canon("/./admin"), "/admin");
        assert_eq!(canon("/api///users/"), "/api/users/");
    }

    #[test]
    fn dot_segments_cannot_expose_an_empty_segment() {
        assert_eq!(canon("/.//x"), "/x");
        assert_eq!(canon("/a/..//admin"), "/admin");
    }

    #[test]
    fn trailing_slash_is_kept() {
        assert_eq!(canon("/api/users/"), "/api/users/");
        assert_eq!(canon("/"), "/");
    }

    #[test]
    fn double_encoding_is_decoded_only_once() {
        assert_eq!(
            canon("/public/%252e%252e/admin"),
            "/public/%252e%252e/admin"
        );
        assert_eq!(canon("/%2561dmin"), "/%2561dmin");
    }

    #[test]
    fn encoded_slash_stays_encoded_with_uppercase_hex() {
        assert_eq!(canon("/a%2fb"), "/a%2Fb");
        assert_eq!(canon("/a%2F..%2Fadmin"), "/a%2F..%2Fadmin");
    }

    #[test]
    fn reserved_escapes_are_not_decoded() {
        assert_eq!(canon("/%3f%23%25%3b"), "/%3F%23%25%3B");
    }

    #[test]
    fn query_and_fragment_characters_are_encoded_as_path_data() {
        // The query never reaches this function; a literal `?` or `#` left in
        // a path must not turn into one upstream.
        assert_eq!(canon("/x?y#z"), "/x%3Fy%23z");
    }

    #[test]
    fn spaces_and_non_ascii_are_percent_encoded_like_url() {
        assert_eq!(canon("/a b"), "/a%20b");
        assert_eq!(canon("/caf\u{e9}"), "/caf%C3%A9");
        assert_eq!(canon("/caf%c3%a9"), "/caf%C3%A9");
        assert_eq!(canon("/\u{65e5}\u{672c}"), "/%E6%97%A5%E6%9C%AC");
        assert_eq!(canon("/a\"<>`{}"), "/a%22%3C%3E%60%7B%7D");
    }

    #[test]
    fn encoded_nul_stays_encoded() {
        assert_eq!(canon("/a%00b"), "/a%00b");
    }

    #[test]
    fn empty_target_is_not_origin_form() {
        assert_eq!(canonical_path(""), Err(PathError::NotOriginForm));
    }

    #[test]
    fn asterisk_is_not_origin_form() {
        assert_eq!(canonical_path("*"), Err(PathError::NotOriginForm));
    }

    #[test]
    fn relative_or_absolute_targets_are_not_origin_form() {
        assert_eq!(canonical_path("admin"), Err(PathError::NotOriginForm));
        assert_eq!(canonical_path("http://h/a"), Err(PathError::NotOriginForm));
        assert_eq!(canonical_path("%2Fadmin"), Err(PathError::NotOriginForm));
    }

    #[test]
    fn malformed_escapes_are_refused() {
        for raw in ["/%", "/a%2", "/%zz", "/%%32e", "/%2g", "/\u{e9}%"] {
            assert_eq!(
                canonical_path(raw),
                Err(PathError::InvalidPercentEncoding),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn canonical_paths_are_fixed_points() {
        for raw in [
            "/",
            "//",
            "/public/../admin",
            "/public/%2e%2e/admin",
            "/./a/./b",
            "/.//x",
            "/public\\..\\admin",
            "//double//slashes",
            "/api/users/",
            "/%252e%252e",
            "/a%2fb",
            "/a b/caf\u{e9}",
            "/x?y#z",
            "/a|b^c",
            "/a\"<>`{}",
            "/a/b/../..//c",
            "/%7e%41%2D",
        ] {
            assert_fixed_point(raw);
        }
    }

    #[test]
    fn strip_with_base_replaces_the_prefix() {
        assert_eq!(
            upstream_path("/v2", "/api/users", "/api/users/7", true),
            "/v2/7"
        );
    }

    #[test]
    fn strip_of_exact_prefix_gives_the_base() {
        assert_eq!(
            upstream_path("/v2", "/api/users", "/api/users", true),
            "/v2"
        );
    }

    #[test]
    fn strip_keeps_the_trailing_slash() {
        assert_eq!(
            upstream_path("/v2", "/api/users", "/api/users/", true),
            "/v2/"
        );
        assert_eq!(upstream_path("", "/api/users", "/api/users/", true), "/");
    }

    #[test]
    fn strip_without_base_of_exact_prefix_gives_root() {
        assert_eq!(upstream_path("", "/api/users", "/api/users", true), "/");
        assert_eq!(upstream_path("/", "/api/users", "/api/users", true), "/");
    }

    #[test]
    fn strip_without_base_keeps_the_rest() {
        assert_eq!(upstream_path("", "/api/users", "/api/users/7", true), "/7");
        assert_eq!(upstream_path("/", "/api/users", "/api/users/7", true), "/7");
    }

    #[test]
    fn no_strip_appends_the_whole_path_to_the_base() {
        assert_eq!(
            upstream_path("/v2", "/api/users", "/api/users/7", false),
            "/v2/api/users/7"
        );
        assert_eq!(
            upstream_path("/v2", "/api/users", "/api/users", false),
            "/v2/api/users"
        );
    }

    #[test]
    fn no_base_no_strip_leaves_the_path_unchanged() {
        assert_eq!(
            upstream_path("", "/api/users", "/api/users/7", false),
            "/api/users/7"
        );
        assert_eq!(
            upstream_path("/", "/api/users", "/api/users/", false),
            "/api/users/"
        );
        assert_eq!(upstream_path("", "/", "//a//b", false), "//a//b");
    }

    #[test]
    fn root_prefix_with_strip_joins_the_whole_path_on_the_base() {
        assert_eq!(
            upstream_path("/v2", "/", "/api/users/7", true),
            "/v2/api/users/7"
        );
        assert_eq!(upstream_path("", "/", "/api/users/7", true), "/api/users/7");
        assert_eq!(upstream_path("/v2", "/", "/x/", true), "/v2/x/");
    }

    #[test]
    fn root_path_under_root_prefix_with_strip_gives_the_base() {
        assert_eq!(upstream_path("/v2", "/", "/", true), "/v2");
        assert_eq!(upstream_path("", "/", "/", true), "/");
    }

    #[test]
    fn base_trailing_slash_does_not_double_the_separator() {
        assert_eq!(
            upstream_path("/v2/", "/api/users", "/api/users/7", true),
            "/v2/7"
        );
        assert_eq!(
            upstream_path("/v2/", "/api/users", "/api/users", true),
            "/v2"
        );
        assert_eq!(
            upstream_path("/v2/", "/api/users", "/api/users/7", false),
            "/v2/api/users/7"
        );
    }

    #[test]
    fn path_outside_the_prefix_is_not_cut_mid_segment() {
        // Callers should never do this; if one does, the path is forwarded
        // whole instead of as a fragment like `X/7`.
        assert_eq!(
            upstream_path("/v2", "/api/users", "/api/usersX/7", true),
            "/v2/api/usersX/7"
        );
    }

    #[test]
    fn upstream_path_of_canonical_parts_is_canonical() {
        for (base, prefix, path, strip) in [
            ("/v2", "/api/users", "/api/users/7", true),
            ("/v2/", "/api", "/api/", true),
            ("", "/", "/a/", true),
            ("/v2", "/", "/", true),
        ] {
            let joined = upstream_path(base, prefix, path, strip);
            assert_eq!(canon(&joined), joined);
        }
    }

    #[test]
    fn fast_path_agrees_with_the_full_route() {
        let corpus = [
            "/",
            "/a",
            "/a/",
            "/a/b/c",
            "/api/users/7",
            "/a.b/c-d_e~f",
            "/a/./b",
            "/a/../b",
            "/.",
            "/..",
            "/a//b",
            "//",
            "/a/b/.",
            "/.well-known/x",
            "/a/.hidden",
            "/a/..b",
            "/a/b..",
            "/x;y=1/z",
            "/@user:pass",
            "/a'b",
            "/(x)*+,",
            "/a%2Fb",
            "/%41",
            "/a b",
            "/a\\b",
            "/é",
            "/a|b",
            "/a^b",
            "/a?b",
            "/a#b",
            "/a{b}",
            "/a`b",
        ];
        for raw in corpus {
            let full = {
                let decoded = decode_unreserved(raw);
                decoded.map(|d| {
                    let mut url = BASE_URL.clone();
                    url.set_path(&d);
                    merge_slashes(url.path())
                })
            };
            if is_already_canonical(raw) {
                assert_eq!(full.as_deref(), Ok(raw), "fast path wrong for {raw:?}");
            }
            assert_eq!(canonical_path(raw), full, "results differ for {raw:?}");
        }
    }
}
