//! Header rules of the proxy (SPEC 4.3), as pure functions over
//! `http::HeaderMap`: hop-by-hop removal, `X-Forwarded-*`, the request id,
//! and the host a request is routed on.
//!
//! Order matters on the way upstream: call [`strip_hop_by_hop`] first, then
//! [`set_forwarded`] and [`ensure_request_id`]. A client can name any header
//! in `Connection`, and stripping last would let it delete the headers the
//! router just set (the Apache CVE-2022-31813 pattern).

use std::net::IpAddr;

use http::header::{Entry, CONNECTION, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};

use crate::routes::host::host_of_authority;

/// The request id header, kept from the client or generated, sent upstream
/// and returned to the client.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// A client-chosen id longer than this is replaced: it is copied into logs
/// and upstream requests, and 200 bytes holds any UUID, ULID or trace id
/// format in use with room to spare.
pub const MAX_REQUEST_ID_LEN: usize = 200;

/// Removes hop-by-hop headers: `Connection` and every header it names,
/// `Keep-Alive`, `Proxy-Connection`, `TE` (unless it is exactly
/// `trailers`: the one value HTTP/2 allows, which gRPC servers require and
/// which says the client takes the trailers the router passes on),
/// `Trailer`, `Transfer-Encoding` and `Upgrade`.
///
/// With `keep_upgrade` (an upgrade being proxied, see [`upgrade_requested`]),
/// `Upgrade` is kept, and if it is present the map gets `Connection: upgrade`
/// back, since the next hop only upgrades when `Connection` says so. Use it
/// the same way on the upstream's `101` response.
///
/// `Proxy-Authenticate` and `Proxy-Authorization` are not removed unless
/// `Connection` names them: RFC 9110 7.6.1 no longer lists them as
/// hop-by-hop (RFC 2616 13.5.1 did), SPEC 4.3 does not either, and a client
/// talking to this gateway takes it for the origin, so such a header is not
/// addressed to it.
///
/// `Host` survives even when `Connection` names it: SPEC 4.3 forwards it as
/// the client sent it, and the route was chosen on it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the names, comparing without hashing, finds which of the
    // fixed hop-by-hop headers are there (usually none, or `Connection`
    // alone); only those are removed, each remove being a hash lookup.
    let mut present = [false; HOP_BY_HOP_COUNT];
    for name in headers.keys() {
        // Most names are told apart from all seven by their length alone.
        let length = name.as_str().len();
        if length >= 32 || HOP_BY_HOP_LENGTHS & (1 << length) == 0 {
            continue;
        }
        if let Some(i) = ALWAYS_HOP_BY_HOP.iter().position(|hop| hop == name) {
            present[i] = true;
        }
    }
    let has_upgrade = present[UPGRADE_AT];
    let keep_te = present[TE_AT] && only_trailers(headers);
    if present[CONNECTION_AT] && names_other_headers(headers) {
        for name in connection_options(headers) {
            if name == HOST || (keep_upgrade && name == UPGRADE) || (keep_te && name == TE) {
                continue;
            }
            headers.remove(&name);
        }
    }
    for (hop, present) in ALWAYS_HOP_BY_HOP.iter().zip(present) {
        let kept = (*hop == UPGRADE && keep_upgrade) || (*hop == TE && keep_te);
        if present && !kept {
            headers.remove(hop);
        }
    }
    if keep_upgrade && has_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Removed from every message, whatever `Connection` says (`Upgrade` is
/// kept while an upgrade is proxied).
const HOP_BY_HOP_COUNT: usize = 7;
const CONNECTION_AT: usize = 0;
const TE_AT: usize = 3;
const UPGRADE_AT: usize = 6;
static ALWAYS_HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// The lengths of the names in [`ALWAYS_HOP_BY_HOP`], one bit each.
const HOP_BY_HOP_LENGTHS: u32 = {
    let names = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    let mut bits = 0;
    let mut i = 0;
    while i < names.len() {
        bits |= 1 << names[i].len();
        i += 1;
    }
    bits
};

/// Whether the message's only `TE` is exactly `trailers` (SPEC 4.3).
fn only_trailers(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(TE).iter();
    values
        .next()
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"trailers"))
        && values.next().is_none()
}

/// Whether the message asks for a protocol upgrade: an `Upgrade` header and
/// `upgrade` among the `Connection` options. Without the latter, RFC 9110
/// 7.8 makes `Upgrade` meaningless, and it must not turn into a real upgrade
/// on the next hop.
pub fn upgrade_requested(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE) && connection_options(headers).contains(&UPGRADE)
}

/// Whether `Connection` lists anything but `keep-alive` and `close`, which
/// is all it says on nearly every message: `close` names no header, and
/// `Keep-Alive` is removed anyway. Only then are its options parsed into
/// names, which costs an allocation and a parse per token.
fn names_other_headers(headers: &HeaderMap) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .any(|token| {
            !token.is_empty()
                && !token.eq_ignore_ascii_case(b"keep-alive")
                && !token.eq_ignore_ascii_case(b"close")
        })
}

/// The header names listed in every `Connection` header, lower-cased.
/// Tokens that are not valid header names cannot name a header and are
/// skipped.
fn connection_options(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .filter_map(|token| HeaderName::from_bytes(token.trim_ascii()).ok())
        .collect()
}

/// Appends the client address to `X-Forwarded-For`, sets `X-Forwarded-Proto`
/// to `proto`, and `X-Forwarded-Host` to `host`, the host as the client sent
/// it (see [`request_authority`]).
///
/// What the client sent in `X-Forwarded-For` is kept and the address is
/// appended to its last value, so the last entry is always the one this
/// router saw. `X-Forwarded-Proto` and `X-Forwarded-Host` are replaced, and
/// removed when there is nothing to set, so a client cannot supply them.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client: &ClientAddress,
    proto: &'static str,
    host: Option<&HeaderValue>,
) {
    append_forwarded_for(headers, client);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));

    match host {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST, host.clone());
        }
        None => {
            headers.remove(X_FORWARDED_HOST);
        }
    }
}

/// A client's address as `X-Forwarded-For` writes it, formatted once per
/// connection: formatting an address per request was a tenth of what the
/// header edits cost.
#[derive(Debug, Clone)]
pub struct ClientAddress(HeaderValue);

impl ClientAddress {
    /// The address as a header value, as `X-Forwarded-For` writes it.
    pub fn as_header_value(&self) -> &HeaderValue {
        &self.0
    }

    pub fn new(client: IpAddr) -> Self {
        // A dual-stack listener reports IPv4 clients as `::ffff:a.b.c.d`;
        // upstreams and log readers expect the plain IPv4 form.
        let text = client.to_canonical().to_string();
        // An address prints as digits, dots, colons and hex only.
        let value = HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("unknown"));
        ClientAddress(value)
    }
}

fn append_forwarded_for(headers: &mut HeaderMap, client: &ClientAddress) {
    // The entry is both the lookup and the insert: one hash of the name.
    let mut entry = match headers.entry(X_FORWARDED_FOR) {
        Entry::Occupied(entry) => entry,
        Entry::Vacant(entry) => {
            entry.insert(client.0.clone());
            return;
        }
    };
    let Some(last) = entry.iter_mut().last() else {
        return;
    };
    let existing = last.as_bytes().trim_ascii();
    if existing.is_empty() {
        *last = client.0.clone();
        return;
    }
    let client = client.0.as_bytes();
    let mut bytes = Vec::with_capacity(existing.len() + 2 + client.len());
    bytes.extend_from_slice(existing);
    bytes.extend_from_slice(b", ");
    bytes.extend_from_slice(client);
    if let Ok(value) = HeaderValue::from_bytes(&bytes) {
        *last = value;
    }
}

/// Returns the request id and leaves exactly that one `x-request-id` in the
/// map: the client's (its first one) if it is 1 to [`MAX_REQUEST_ID_LEN`]
/// bytes of visible ASCII, otherwise a fresh UUID v4 in hyphenated form.
///
/// The id is marked sensitive, which tells HTTP/2's header compression
/// (HPACK) never to index it: a value that differs on every request would
/// otherwise be written into the connection's compression table each time,
/// evicting the entries worth keeping, and cost more than it saves.
pub fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    // The entry is the lookup and the insert both: one hash of the name.
    let mut sent = match headers.entry(REQUEST_ID) {
        Entry::Vacant(entry) => return entry.insert(new_request_id()).clone(),
        Entry::Occupied(entry) => entry,
    };
    let mut ids = sent.iter();
    let first = ids.next().filter(|id| is_valid_request_id(id)).cloned();
    let alone = ids.next().is_none();
    match first {
        // Already the only one: nothing to replace.
        Some(mut id) if alone => {
            id.set_sensitive(true);
            sent.get_mut().set_sensitive(true);
            id
        }
        first => {
            let mut id = first.unwrap_or_else(new_request_id);
            id.set_sensitive(true);
            sent.insert(id.clone());
            id
        }
    }
}

fn is_valid_request_id(id: &HeaderValue) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID_LEN
        && bytes.iter().all(|b| b.is_ascii_graphic())
}

fn new_request_id() -> HeaderValue {
    let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Uuid::new_v4().hyphenated().encode_lower(&mut id);
    // One allocation that the request, the response and the access log
    // share: a value copied from a slice is allocated again on its first
    // clone, to hold the count the clones share.
    let mut id = HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(id))
        .expect("a hyphenated UUID is ASCII hex digits and hyphens");
    id.set_sensitive(true);
    id
}

/// The host of the request as the client sent it: the authority of the
/// request target when it has one (HTTP/2 `:authority`, or an HTTP/1.1
/// absolute-form target), otherwise the `Host` header.
///
/// The authority wins because RFC 9112 3.2.2 says a server must ignore
/// `Host` for an absolute-form target, and RFC 9113 8.3.1 says an
/// intermediary turning HTTP/2 into HTTP/1.1 builds `Host` from
/// `:authority`. The proxy should send this value upstream as `Host` and as
/// `X-Forwarded-Host`, so that the host routed on is the host forwarded.
pub fn request_authority(headers: &HeaderMap, uri: &Uri) -> Option<HeaderValue> {
    match uri.authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => headers.get(HOST).cloned(),
    }
}

/// The request's host for routing, from [`request_authority`]: lower-cased,
/// port dropped, one trailing dot dropped (`example.com.` is
/// `example.com`), an IPv6 literal kept in brackets and in its canonical
/// form (`[0:0::1]:8080` is `[::1]`). `None` when absent or not a valid
/// host: userinfo, bad characters, empty labels, a bad port.
pub fn routing_host(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    host_of_authority(&request_authority(headers, uri)?).map(|host| host.into_owned())
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::routes::host::MAX_HOST_LEN;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("test header name"),
                HeaderValue::from_str(value).expect("test header value"),
            );
        }
        headers
    }

    #[test]
    fn the_length_filter_lets_every_hop_by_hop_name_through() {
        for name in &ALWAYS_HOP_BY_HOP {
            assert_ne!(HOP_BY_HOP_LENGTHS & (1 << name.as_str().len()), 0, "{name}");
        }
    }

    fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    fn origin_form() -> Uri {
        Uri::from_static("/path")
    }

    #[test]
    fn te_trailers_alone_is_kept_even_when_connection_names_it() {
        let mut headers = map(&[("te", "trailers"), ("connection", "TE")]);
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(values(&headers, "te"), ["trailers"]);

        for other in [
            vec![("te", "gzip")],
            vec![("te", "trailers, deflate")],
            vec![("te", "trailers"), ("te", "gzip")],
        ] {
            let mut headers = map(&other);
            strip_hop_by_hop(&mut headers, false);
            assert!(!headers.contains_key("te"), "{other:?}");
        }
    }

    #[test]
    fn fixed_hop_by_hop_headers_are_removed() {
        let mut headers = map(&[
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "gzip"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("content-type", "text/plain"),
        ]);
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("content-type"));
    }

    #[test]
    fn connection_removes_the_headers_it_names() {
        let mut headers = map(&[
            ("connection", "close, x-foo"),
            ("x-foo", "1"),
            ("x-bar", "2"),
        ]);
        strip_hop_by_hop(&mut headers, false);
        assert!(!headers.contains_key("connection"));
        assert!(!headers.contains_key("x-foo"));
        assert_eq!(values(&headers, "x-bar"), ["2"]);
    }

    #[test]
    fn every_connection_header_is_honoured() {
        let mut headers = map(&[
            ("connection", "x-one"),
            ("connection", "x-two,x-three"),
            ("x-one", "1"),
            ("x-two", "2"),
            ("x-three", "3"),
            ("x-four", "4"),
        ]);
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(headers.len(), 1);
        assert_eq!(values(&headers, "x-four"), ["4"]);
    }

    #[test]
    fn connection_options_are_case_insensitive() {
        let mut headers = map(&[("Connection", "Close,  X-Foo ,KEEP-ALIVE"), ("x-foo", "1")]);
        strip_hop_by_hop(&mut headers, false);
        assert!(headers.is_empty());
    }

    #[test]
    fn connection_removes_every_value_of_a_named_header() {
        let mut headers = map(&[("connection", "x-foo"), ("x-foo", "1"), ("x-foo", "2")]);
        strip_hop_by_hop(&mut headers, false);
        assert!(headers.is_empty());
    }

    #[test]
    fn invalid_connection_tokens_are_ignored() {
        let mut headers = map(&[("connection", "x foo, , \"q\", x-bar"), ("x-bar", "1")]);
        strip_hop_by_hop(&mut headers, false);
        assert!(headers.is_empty());
    }

    #[test]
    fn connection_cannot_remove_host() {
        let mut headers = map(&[("host", "example.com"), ("connection", "host")]);
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(values(&headers, "host"), ["example.com"]);
    }

    #[test]
    fn proxy_auth_headers_pass_unless_named() {
        let mut headers = map(&[
            ("proxy-authorization", "Basic eA=="),
            ("proxy-authenticate", "Basic"),
        ]);
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(headers.len(), 2);

        let mut headers = map(&[
            ("connection", "proxy-authorization"),
            ("proxy-authorization", "Basic eA=="),
        ]);
        strip_hop_by_hop(&mut headers, false);
        assert!(headers.is_empty());
    }

    #[test]
    fn kept_upgrade_carries_connection_upgrade_only() {
        let mut headers = map(&[
            ("connection", "Upgrade, x-foo"),
            ("upgrade", "websocket"),
            ("x-foo", "1"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]);
        strip_hop_by_hop(&mut headers, true);
        assert_eq!(values(&headers, "connection"), ["upgrade"]);
        assert_eq!(values(&headers, "upgrade"), ["websocket"]);
        assert!(!headers.contains_key("x-foo"));
        assert!(headers.contains_key("sec-websocket-key"));
    }

    #[test]
    fn keep_upgrade_without_upgrade_header_adds_no_connection() {
        let mut headers = map(&[("connection", "close")]);
        strip_hop_by_hop(&mut headers, true);
        assert!(headers.is_empty());
    }

    #[test]
    fn upgrade_needs_both_upgrade_and_connection_upgrade() {
        assert!(upgrade_requested(&map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ])));
        assert!(!upgrade_requested(&map(&[("upgrade", "websocket")])));
        assert!(!upgrade_requested(&map(&[("connection", "upgrade")])));
        assert!(!upgrade_requested(&HeaderMap::new()));
    }

    #[test]
    fn forwarded_for_is_created_when_absent() {
        let mut headers = HeaderMap::new();
        set_forwarded(
            &mut headers,
            &ClientAddress::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7))),
            "http",
            None,
        );
        assert_eq!(values(&headers, "x-forwarded-for"), ["10.0.0.7"]);
        assert_eq!(values(&headers, "x-forwarded-proto"), ["http"]);
    }

    #[test]
    fn forwarded_for_appends_to_the_clients_value() {
        let mut headers = map(&[("x-forwarded-for", "203.0.113.9, 198.51.100.2")]);
        set_forwarded(
            &mut headers,
            &ClientAddress::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7))),
            "http",
            None,
        );
        assert_eq!(
            values(&headers, "x-forwarded-for"),
            ["203.0.113.9, 198.51.100.2, 10.0.0.7"]
        );
    }

    #[test]
    fn forwarded_for_appends_to_the_last_of_several_values() {
        let mut headers = map(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-for", "198.51.100.2"),
        ]);
        set_forwarded(
            &mut headers,
            &ClientAddress::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7))),
            "http",
            None,
        );
        assert_eq!(
            values(&headers, "x-forwarded-for"),
            ["203.0.113.9", "198.51.100.2, 10.0.0.7"]
        );
    }

    #[test]
    fn forwarded_for_replaces_a_blank_value() {
        let mut headers = map(&[("x-forwarded-for", "  ")]);
        set_forwarded(
            &mut headers,
            &ClientAddress::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7))),
            "http",
            None,
        );
        assert_eq!(values(&headers, "x-forwarded-for"), ["10.0.0.7"]);
    }

    #[test]
    fn forwarded_for_writes_ipv6_without_brackets() {
        let mut headers = map(&[("x-forwarded-for", "203.0.113.9")]);
        let client = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        set_forwarded(&mut headers, &ClientAddress::new(client), "http", None);
        assert_eq!(
            values(&headers, "x-forwarded-for"),
            ["203.0.113.9, 2001:db8::1"]
        );
    }

    #[test]
    fn forwarded_for_unmaps_ipv4_mapped_ipv6() {
        let mut headers = HeaderMap::new();
        let client = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        set_forwarded(&mut headers, &ClientAddress::new(client), "http", None);
        assert_eq!(values(&headers, "x-forwarded-for"), ["192.0.2.1"]);
    }

    #[test]
    fn forwarded_proto_and_host_replace_client_values() {
        let mut headers = map(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
        ]);
        let host = HeaderValue::from_static("Api.Example.com:8080");
        set_forwarded(
            &mut headers,
            &ClientAddress::new(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "http",
            Some(&host),
        );
        assert_eq!(values(&headers, "x-forwarded-proto"), ["http"]);
        assert_eq!(
            values(&headers, "x-forwarded-host"),
            ["Api.Example.com:8080"]
        );
    }

    #[test]
    fn forwarded_host_from_client_is_dropped_without_a_host() {
        let mut headers = map(&[("x-forwarded-host", "evil.example")]);
        let client = ClientAddress::new(IpAddr::V4(Ipv4Addr::LOCALHOST));
        set_forwarded(&mut headers, &client, "http", None);
        assert!(!headers.contains_key("x-forwarded-host"));
    }

    #[test]
    fn client_request_id_is_kept() {
        let mut headers = map(&[("x-request-id", "abc-123")]);
        assert_eq!(ensure_request_id(&mut headers), "abc-123");
        assert_eq!(values(&headers, "x-request-id"), ["abc-123"]);
    }

    #[test]
    fn a_repeated_request_id_leaves_only_the_first() {
        let mut headers = map(&[("x-request-id", "first"), ("x-request-id", "second")]);
        assert_eq!(ensure_request_id(&mut headers), "first");
        assert_eq!(values(&headers, "x-request-id"), ["first"]);
    }

    #[test]
    fn missing_request_id_is_generated_as_uuid_v4() {
        let mut headers = HeaderMap::new();
        let id = ensure_request_id(&mut headers);
        let parsed = uuid::Uuid::parse_str(id.to_str().expect("ascii id")).expect("a uuid");
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(id.len(), 36);
        assert_eq!(headers.get(REQUEST_ID), Some(&id));
    }

    #[test]
    fn generated_request_ids_differ() {
        let a = ensure_request_id(&mut HeaderMap::new());
        let b = ensure_request_id(&mut HeaderMap::new());
        assert_ne!(a, b);
    }

    #[test]
    fn invalid_request_ids_are_replaced() {
        let too_long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        for bad in ["", "has space", "tab\there", too_long.as_str()] {
            let mut headers = map(&[("x-request-id", bad)]);
            let id = ensure_request_id(&mut headers);
            assert_ne!(id, bad);
            assert_eq!(id.len(), 36, "{bad:?} was not replaced by a uuid");
            assert_eq!(
                values(&headers, "x-request-id"),
                [id.to_str().expect("ascii id")]
            );
        }

        let mut headers = HeaderMap::new();
        headers.insert(
            REQUEST_ID,
            HeaderValue::from_bytes(b"caf\xc3\xa9").expect("obs-text"),
        );
        assert_eq!(ensure_request_id(&mut headers).len(), 36);
    }

    #[test]
    fn request_id_at_the_length_limit_is_kept() {
        let longest = "a".repeat(MAX_REQUEST_ID_LEN);
        let mut headers = map(&[("x-request-id", longest.as_str())]);
        assert_eq!(ensure_request_id(&mut headers), longest.as_str());
    }

    #[test]
    fn duplicate_request_ids_collapse_to_the_first() {
        let mut headers = map(&[("x-request-id", "first"), ("x-request-id", "second")]);
        assert_eq!(ensure_request_id(&mut headers), "first");
        assert_eq!(values(&headers, "x-request-id"), ["first"]);
    }

    fn host_of(host: &str) -> Option<String> {
        routing_host(&map(&[("host", host)]), &origin_form())
    }

    #[test]
    fn host_without_port_is_kept() {
        assert_eq!(
            host_of("api.example.com").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(host_of("localhost").as_deref(), Some("localhost"));
        assert_eq!(host_of("127.0.0.1").as_deref(), Some("127.0.0.1"));
    }

    #[test]
    fn host_port_is_dropped() {
        assert_eq!(
            host_of("api.example.com:8080").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(host_of("127.0.0.1:80").as_deref(), Some("127.0.0.1"));
        assert_eq!(host_of("example.com:").as_deref(), Some("example.com"));
    }

    #[test]
    fn host_is_lower_cased() {
        assert_eq!(
            host_of("API.Example.COM:443").as_deref(),
            Some("api.example.com")
        );
    }

    #[test]
    fn host_trailing_dot_is_dropped() {
        assert_eq!(host_of("example.com.").as_deref(), Some("example.com"));
        assert_eq!(host_of("Example.com.:8080").as_deref(), Some("example.com"));
    }

    #[test]
    fn ipv6_host_keeps_brackets_and_is_canonical() {
        assert_eq!(host_of("[::1]:8080").as_deref(), Some("[::1]"));
        assert_eq!(host_of("[::1]").as_deref(), Some("[::1]"));
        assert_eq!(
            host_of("[2001:DB8:0:0::1]").as_deref(),
            Some("[2001:db8::1]")
        );
    }

    #[test]
    fn invalid_hosts_are_none() {
        for bad in [
            "",
            ".",
            ":8080",
            "a..b",
            "example.com..",
            "user@example.com",
            "exa mple.com",
            "example.com:http",
            "example.com:65536",
            "example.com:80:80",
            "::1",
            "[::1",
            "[::1]x",
            "[fe80::1%25eth0]",
            "[v1.fe]",
            "example.com/x",
        ] {
            assert_eq!(host_of(bad), None, "{bad:?}");
        }
        assert_eq!(host_of(&"a".repeat(MAX_HOST_LEN + 1)), None);
    }

    #[test]
    fn missing_host_is_none() {
        assert_eq!(routing_host(&HeaderMap::new(), &origin_form()), None);
    }

    #[test]
    fn http2_authority_is_used_without_host_header() {
        let uri = Uri::from_static("http://Api.Example.com:8443/path");
        assert_eq!(
            routing_host(&HeaderMap::new(), &uri).as_deref(),
            Some("api.example.com")
        );
        assert_eq!(
            request_authority(&HeaderMap::new(), &uri),
            Some(HeaderValue::from_static("Api.Example.com:8443"))
        );
    }

    #[test]
    fn authority_wins_over_host_header() {
        let headers = map(&[("host", "other.example")]);
        let uri = Uri::from_static("http://api.example.com/path");
        assert_eq!(
            routing_host(&headers, &uri).as_deref(),
            Some("api.example.com")
        );
    }

    #[test]
    fn authority_with_userinfo_is_none() {
        let uri = Uri::from_static("http://user@api.example.com/path");
        assert_eq!(routing_host(&HeaderMap::new(), &uri), None);
    }

    #[test]
    fn request_authority_falls_back_to_host_header() {
        let headers = map(&[("host", "Api.Example.com:8080")]);
        assert_eq!(
            request_authority(&headers, &origin_form()),
            Some(HeaderValue::from_static("Api.Example.com:8080"))
        );
    }
}
