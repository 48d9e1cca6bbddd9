//! Header rules of the forwarding path: which headers are hop-by-hop, what
//! regate adds (`Host` kept, `X-Forwarded-*`, `Forwarded`), and how absolute
//! `Location` headers that point at the upstream are rewritten to the public
//! origin with the rest of the URL (including `_state`) kept byte for byte.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, never forwarded (RFC 9110 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Removes hop-by-hop headers, including any named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// The origin clients use to reach regate for this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicOrigin {
    pub scheme: String,
    pub authority: String,
}

impl PublicOrigin {
    pub fn as_url(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }
}

/// Sets the forwarding headers. Whatever a client sent in `Forwarded` or
/// `X-Forwarded-*` is replaced: the registry builds upload URLs from them, and
/// a client must not be able to point those elsewhere.
pub fn set_forwarding(headers: &mut HeaderMap, peer: SocketAddr, public: &PublicOrigin) {
    headers.remove(header::FORWARDED);
    for name in [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-real-ip",
    ] {
        headers.remove(name);
    }
    let ip = peer.ip().to_string();
    let for_value = if peer.is_ipv6() {
        format!("\"[{ip}]\"")
    } else {
        ip.clone()
    };
    let forwarded = format!(
        "for={for_value};proto={};host={}",
        public.scheme,
        quoted_string(&public.authority)
    );
    let pairs = [
        ("x-forwarded-for", ip),
        ("x-forwarded-proto", public.scheme.clone()),
        ("x-forwarded-host", public.authority.clone()),
        ("forwarded", forwarded),
    ];
    for (name, value) in pairs {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
}

/// `s` as an RFC 7239 (RFC 9110 5.6.4) quoted-string: `"` and `\` escaped,
/// so a client's `Host` cannot end the value and add parameters of its own.
fn quoted_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Rewrites an absolute `Location` that starts with `upstream_origin` to
/// `public`; anything else is left untouched. Only the origin is replaced,
/// the path and query stay exactly as sent.
pub fn rewrite_location(headers: &mut HeaderMap, upstream_origin: &str, public: &PublicOrigin) {
    let Some(loc) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) else {
        return;
    };
    let Some(rest) = loc.strip_prefix(upstream_origin) else {
        return;
    };
    if !(rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')) {
        return; // a longer host name that merely starts the same way
    }
    let new = format!("{}{}", public.as_url(), rest);
    if let Ok(v) = HeaderValue::from_str(&new) {
        headers.insert(header::LOCATION, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public() -> PublicOrigin {
        PublicOrigin {
            scheme: "https".into(),
            authority: "reg.example:5443".into(),
        }
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert(
            "accept",
            HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json"),
        );
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn client_forwarding_headers_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert(
            "forwarded",
            HeaderValue::from_static("host=evil.example;proto=http"),
        );
        h.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
        set_forwarding(&mut h, "10.1.2.3:999".parse().unwrap(), &public());
        assert_eq!(h["x-forwarded-host"], "reg.example:5443");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(
            h["forwarded"],
            "for=10.1.2.3;proto=https;host=\"reg.example:5443\""
        );
    }

    #[test]
    fn a_host_with_quotes_stays_inside_the_forwarded_host_value() {
        let mut h = HeaderMap::new();
        let sneaky = PublicOrigin {
            scheme: "https".into(),
            authority: r#"a.example";proto=http;host="evil.example\"#.into(),
        };
        set_forwarding(&mut h, "10.1.2.3:999".parse().unwrap(), &sneaky);
        assert_eq!(
            h["forwarded"],
            r#"for=10.1.2.3;proto=https;host="a.example\";proto=http;host=\"evil.example\\""#
        );
    }

    #[test]
    fn location_keeps_state_byte_for_byte() {
        let mut h = HeaderMap::new();
        let tail = "/v2/a/blobs/uploads/5e1c?_state=Ab%2Bc%3D%3D&digest=x";
        h.insert(
            "location",
            HeaderValue::from_str(&format!("http://127.0.0.1:5000{tail}")).unwrap(),
        );
        rewrite_location(&mut h, "http://127.0.0.1:5000", &public());
        assert_eq!(
            h["location"],
            format!("https://reg.example:5443{tail}").as_str()
        );
    }

    #[test]
    fn other_locations_stay() {
        for loc in [
            "/v2/a/blobs/uploads/x",
            "http://127.0.0.1:50001/v2/",
            "https://cdn.example/blob",
        ] {
            let mut h = HeaderMap::new();
            h.insert("location", HeaderValue::from_str(loc).unwrap());
            rewrite_location(&mut h, "http://127.0.0.1:5000", &public());
            assert_eq!(h["location"], loc);
        }
    }
}
