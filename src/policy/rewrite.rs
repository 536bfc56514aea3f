//! The path an upstream receives (SPEC 2, 7.2): the canonical request path,
//! rewritten as the route says (`strip_prefix`, `rewrite: { prefix }` or
//! `rewrite: { regex, to }`), normalized again so that nothing a capture
//! brings can climb above `/`, and joined to the upstream URL's base path.

use std::borrow::Cow;

use crate::routes::config::RewriteSpec;
use crate::routes::path::{canonical_path, into_canonical_path, upstream_path};

/// The path to send for the canonical `path` that matched `prefix`, on an
/// upstream whose URL has the base path `base`.
pub fn path_for_upstream(
    base: &str,
    prefix: &str,
    path: &str,
    strip_prefix: bool,
    rewrite: Option<&RewriteSpec>,
) -> String {
    match rewrite {
        None => upstream_path(base, prefix, path, strip_prefix),
        Some(rewrite) => upstream_path(base, "/", &rewritten(rewrite, prefix, path), false),
    }
}

/// `path` as `rewrite` makes it, in canonical form.
pub fn rewritten(rewrite: &RewriteSpec, prefix: &str, path: &str) -> String {
    let replaced: String = match rewrite {
        RewriteSpec::Prefix(to) => {
            let rest = if prefix == "/" {
                path
            } else {
                match path.strip_prefix(prefix) {
                    Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
                    // Not under the prefix (never, for a matched route):
                    // nothing is replaced rather than a segment cut in half.
                    _ => return path.to_owned(),
                }
            };
            let to = to.trim_end_matches('/');
            format!("{to}{rest}")
        }
        RewriteSpec::Regex { pattern, to } => match pattern.regex().replace(path, to.as_str()) {
            // No match: the path goes as it is, already canonical.
            Cow::Borrowed(_) => return path.to_owned(),
            Cow::Owned(replaced) => replaced,
        },
    };
    normalized(replaced)
}

/// The canonical form of a rewritten path: dot-segments resolved (never
/// above `/`), escapes in one spelling. A result that is not a path (a
/// replacement that dropped the leading `/`) is made one.
fn normalized(path: String) -> String {
    let rooted = if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    if !rooted.contains('%') {
        // Rooted and without escapes, it cannot fail to canonicalize.
        return into_canonical_path(rooted).unwrap_or_else(|_| "/".to_owned());
    }
    canonical_path(&rooted).unwrap_or_else(|_| {
        // A lone `%` a replacement put there: encode it, as a path must.
        let escaped = rooted.replace('%', "%25");
        canonical_path(&escaped).unwrap_or_else(|_| "/".to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::config::Pattern;

    fn regex(re: &str, to: &str) -> RewriteSpec {
        RewriteSpec::Regex {
            pattern: Pattern::search(re).expect("a valid regex"),
            to: to.to_owned(),
        }
    }

    #[test]
    fn a_prefix_rewrite_replaces_whole_segments() {
        let to_v2 = RewriteSpec::Prefix("/v2/users".to_owned());
        assert_eq!(
            rewritten(&to_v2, "/api/users", "/api/users/7"),
            "/v2/users/7"
        );
        assert_eq!(rewritten(&to_v2, "/api/users", "/api/users"), "/v2/users");
        assert_eq!(rewritten(&to_v2, "/api/users", "/api/users/"), "/v2/users/");
        let to_root = RewriteSpec::Prefix("/".to_owned());
        assert_eq!(rewritten(&to_root, "/api", "/api/x"), "/x");
        assert_eq!(rewritten(&to_root, "/api", "/api"), "/");
        let under_root = RewriteSpec::Prefix("/app".to_owned());
        assert_eq!(rewritten(&under_root, "/", "/x/y"), "/app/x/y");
    }

    #[test]
    fn a_regex_rewrite_replaces_the_first_match_with_captures() {
        let users = regex("^/api/users/([0-9]+)", "/v2/users/$1");
        assert_eq!(
            rewritten(&users, "/api", "/api/users/7/orders"),
            "/v2/users/7/orders"
        );
        assert_eq!(rewritten(&users, "/api", "/api/users/me"), "/api/users/me");
        let named = regex("/(?P<id>[0-9]+)$", "/item-${id}");
        assert_eq!(rewritten(&named, "/", "/shop/42"), "/shop/item-42");
    }

    #[test]
    fn a_rewrite_can_never_climb_above_the_root() {
        let climb = regex("^/go/(.*)", "/../../$1");
        assert_eq!(rewritten(&climb, "/", "/go/etc"), "/etc");
        let dots = RewriteSpec::Prefix("/a".to_owned());
        assert_eq!(rewritten(&dots, "/x", "/x/%2e%2e/%2e%2e/etc"), "/etc");
        assert_eq!(
            path_for_upstream("/base", "/go", "/go/etc", false, Some(&climb)),
            "/base/etc"
        );
    }

    #[test]
    fn rewritten_paths_join_the_base_path() {
        let users = regex("^/api/users/([0-9]+)", "/v2/users/$1");
        assert_eq!(
            path_for_upstream("/svc", "/api/users", "/api/users/7", false, Some(&users)),
            "/svc/v2/users/7"
        );
        assert_eq!(
            path_for_upstream("", "/api/users", "/api/users/7", false, Some(&users)),
            "/v2/users/7"
        );
        assert_eq!(
            path_for_upstream("/v2", "/api/users", "/api/users/7", true, None),
            "/v2/7"
        );
    }

    #[test]
    fn a_replacement_without_a_leading_slash_is_rooted() {
        let bare = regex("^/(.*)", "$1");
        assert_eq!(rewritten(&bare, "/", "/a/b"), "/a/b");
        let percent = regex("^/(.*)", "/100%/$1");
        assert_eq!(rewritten(&percent, "/", "/x"), "/100%25/x");
    }
}
