//! Any header map through hop-by-hop removal and `X-Forwarded-*` edits:
//! nothing hop-by-hop survives, nothing else is lost, and the client is
//! appended to `X-Forwarded-For`.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use switchyard::proxy::headers::{set_forwarded, strip_hop_by_hop, ClientAddress};

fuzz_target!(|data: (Vec<(Vec<u8>, Vec<u8>)>, bool)| {
    let (pairs, keep_upgrade) = data;
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&name),
            HeaderValue::from_bytes(&value),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let named: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|n| n.trim().to_ascii_lowercase()))
        .filter(|n| !n.is_empty())
        .collect();
    let before = headers.clone();
    strip_hop_by_hop(&mut headers, keep_upgrade);
    // An upgrade being proxied keeps `Upgrade` and gets `Connection:
    // upgrade` back; `Host` survives being named.
    let upgrading = keep_upgrade && before.contains_key(http::header::UPGRADE);
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
    ] {
        if upgrading && name == "connection" {
            assert_eq!(headers.get_all(name).iter().count(), 1);
            continue;
        }
        assert!(!headers.contains_key(name), "{name} passed");
    }
    for name in &named {
        if (keep_upgrade && name == "upgrade")
            || name == "host"
            || (upgrading && name == "connection")
        {
            continue;
        }
        assert!(
            !headers.contains_key(name.as_str()),
            "{name}, named by Connection, passed"
        );
    }
    for name in before.keys() {
        let hop = matches!(
            name.as_str(),
            "connection"
                | "keep-alive"
                | "proxy-connection"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "upgrade"
        ) || named.iter().any(|n| n == name.as_str());
        if !hop {
            assert!(headers.contains_key(name), "{name} was dropped");
        }
    }
    let client = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
    set_forwarded(&mut headers, &ClientAddress::new(client), "http", None);
    let last = headers
        .get_all("x-forwarded-for")
        .iter()
        .last()
        .and_then(|v| v.to_str().ok().map(str::to_owned));
    assert!(last.is_some_and(|v| v.ends_with("192.0.2.7")));
});
