//! Who the client is when regate sits behind a load balancer: the
//! `server.trusted_proxies` setting and the reading of `Forwarded`,
//! `X-Forwarded-For` and `X-Forwarded-Proto`.
//!
//! Owns [`TrustedProxies`] (addresses and CIDRs, parsed with `ipnet`) and
//! [`TrustedProxies::resolve`]: only when the connection's peer is trusted,
//! the hops its headers list are walked from the right (the nearest proxy)
//! and the first address that is not a trusted proxy is the client; the
//! scheme the client used comes from that hop's `proto` in `Forwarded`, or
//! else from the last `X-Forwarded-Proto` value (the one the nearest proxy
//! set). Headers from any other peer are ignored (and replaced before
//! anything goes upstream, see [`crate::proxy`]). Pure: no I/O, no state.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

/// The peers whose forwarding headers regate believes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

/// What a trusted proxy says about the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardedClient {
    /// The client's address (port 0 when the proxy did not say).
    pub addr: SocketAddr,
    /// `Some(true)` when the client spoke HTTPS to the proxy, `Some(false)`
    /// for plain HTTP, `None` when the proxy did not say.
    pub https: Option<bool>,
}

/// One hop a proxy reported: its address (if it parses) and `proto`.
struct Hop {
    addr: Option<SocketAddr>,
    proto: Option<bool>,
}

impl TrustedProxies {
    /// Parses addresses (`10.0.0.5`, `::1`) and CIDRs (`10.0.0.0/8`,
    /// `fd00::/8`); every entry that is neither is reported.
    pub fn parse(items: &[String]) -> Result<TrustedProxies, Vec<String>> {
        let mut nets = Vec::new();
        let mut bad = Vec::new();
        for item in items {
            let t = item.trim();
            match (t.parse::<IpNet>(), t.parse::<IpAddr>()) {
                (Ok(n), _) => nets.push(n.trunc()),
                (_, Ok(ip)) => nets.push(IpNet::from(ip)),
                _ => bad.push(format!(
                    "{item:?} is not an address or CIDR; write e.g. \"10.0.0.5\", \"10.0.0.0/8\" or \"fd00::/8\""
                )),
            }
        }
        if bad.is_empty() {
            Ok(TrustedProxies { nets })
        } else {
            Err(bad)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// The configured entries, as written back (for notes and logs).
    pub fn describe(&self) -> String {
        self.nets
            .iter()
            .map(|n| match n.prefix_len() == n.max_prefix_len() {
                true => n.addr().to_string(),
                false => n.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether `ip` is a trusted proxy (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client behind `peer`, when `peer` is a trusted proxy and its
    /// headers name one; `None` otherwise (the peer is the client).
    pub fn resolve(&self, headers: &HeaderMap, peer: SocketAddr) -> Option<ForwardedClient> {
        if !self.trusts(peer.ip()) {
            return None;
        }
        let hops = forwarded_hops(headers).unwrap_or_else(|| x_forwarded_for_hops(headers));
        // From the nearest proxy outwards: the first hop that is not a
        // trusted proxy is the client; one that does not parse ends the walk
        // (nothing to its left can be believed), and so does running out.
        let mut client: Option<&Hop> = None;
        for hop in hops.iter().rev() {
            let Some(addr) = hop.addr else { break };
            client = Some(hop);
            if !self.trusts(addr.ip()) {
                break;
            }
        }
        let from_xfp = x_forwarded_proto(headers);
        match client {
            Some(hop) => Some(ForwardedClient {
                addr: hop.addr.expect("only hops with an address are kept"),
                https: hop.proto.or(from_xfp),
            }),
            None => from_xfp.map(|https| ForwardedClient {
                addr: peer,
                https: Some(https),
            }),
        }
    }
}

fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:80`, `::1`,
/// `[::1]`, `[::1]:80` (quotes already removed).
fn parse_node(s: &str) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    let ip = s
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(s);
    ip.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0))
}

fn proto(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "https" => Some(true),
        "http" => Some(false),
        _ => None,
    }
}

/// RFC 7239 `Forwarded`: one hop per element that has `for=`; `None` when
/// the header is absent or names no hop.
fn forwarded_hops(headers: &HeaderMap) -> Option<Vec<Hop>> {
    let mut hops = Vec::new();
    for element in header_values(headers, "forwarded") {
        let mut hop = Hop {
            addr: None,
            proto: None,
        };
        let mut has_for = false;
        for pair in element.split(';') {
            let Some((k, v)) = pair.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"');
            match k.trim().to_ascii_lowercase().as_str() {
                "for" => {
                    has_for = true;
                    hop.addr = parse_node(v);
                }
                "proto" => hop.proto = proto(v),
                _ => {}
            }
        }
        if has_for {
            hops.push(hop);
        }
    }
    (!hops.is_empty()).then_some(hops)
}

fn x_forwarded_for_hops(headers: &HeaderMap) -> Vec<Hop> {
    header_values(headers, "x-forwarded-for")
        .map(|v| Hop {
            addr: parse_node(v.trim_matches('"')),
            proto: None,
        })
        .collect()
}

/// The last `X-Forwarded-Proto` value: the one the nearest proxy set.
fn x_forwarded_proto(headers: &HeaderMap) -> Option<bool> {
    header_values(headers, "x-forwarded-proto")
        .last()
        .and_then(proto)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn proxies(items: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn client(
        p: &TrustedProxies,
        peer: &str,
        h: &[(&'static str, &'static str)],
    ) -> Option<String> {
        p.resolve(&headers(h), peer.parse().unwrap())
            .map(|c| c.addr.ip().to_string())
    }

    #[test]
    fn entries_are_addresses_or_cidrs_and_bad_ones_are_named() {
        let p = proxies(&["10.0.0.0/8", "192.168.1.7", "fd00::/8", "::1"]);
        assert!(p.trusts("10.200.1.1".parse().unwrap()));
        assert!(p.trusts("::ffff:10.1.1.1".parse().unwrap()));
        assert!(p.trusts("192.168.1.7".parse().unwrap()));
        assert!(!p.trusts("192.168.1.8".parse().unwrap()));
        assert!(p.trusts("fd12::1".parse().unwrap()));
        assert_eq!(p.describe(), "10.0.0.0/8, 192.168.1.7, fd00::/8, ::1");
        let err =
            TrustedProxies::parse(&["10.0.0.0/33".into(), "lb.example".into(), "10.0.0.1".into()])
                .unwrap_err();
        assert_eq!(err.len(), 2);
        assert!(err[0].contains("\"10.0.0.0/33\""), "{err:?}");
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let p = proxies(&["10.0.0.0/8"]);
        let xff = |v: &'static str| [("x-forwarded-for", v)];
        // A client's own X-Forwarded-For is kept left of what the proxy appends.
        assert_eq!(
            client(&p, "10.0.0.1:5", &xff("6.6.6.6, 1.2.3.4")).as_deref(),
            Some("1.2.3.4")
        );
        assert_eq!(
            client(&p, "10.0.0.1:5", &xff("1.2.3.4, 10.0.0.9")).as_deref(),
            Some("1.2.3.4")
        );
        // Every hop a trusted proxy: the leftmost is as far as anyone can tell.
        assert_eq!(
            client(&p, "10.0.0.1:5", &xff("10.0.0.3, 10.0.0.9")).as_deref(),
            Some("10.0.0.3")
        );
        // Garbage ends the walk: the last believable hop stands.
        assert_eq!(
            client(&p, "10.0.0.1:5", &xff("1.2.3.4, unknown, 10.0.0.9")).as_deref(),
            Some("10.0.0.9")
        );
        assert_eq!(
            client(&p, "10.0.0.1:5", &xff("[2001:db8::1]:4711")).as_deref(),
            Some("2001:db8::1")
        );
        // Several header lines are one list, in order.
        let two = [
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "1.2.3.4"),
        ];
        assert_eq!(client(&p, "10.0.0.1:5", &two).as_deref(), Some("1.2.3.4"));
        // An untrusted peer's headers are ignored.
        assert_eq!(client(&p, "1.2.3.4:5", &xff("9.9.9.9")), None);
        // A trusted peer that says nothing: the peer is the client.
        assert_eq!(client(&p, "10.0.0.1:5", &[]), None);
    }

    #[test]
    fn forwarded_wins_and_carries_the_clients_proto() {
        let p = proxies(&["127.0.0.1"]);
        let h = headers(&[
            (
                "forwarded",
                "for=\"[2001:db8::1]:4711\";proto=https, for=127.0.0.1;proto=http",
            ),
            ("x-forwarded-for", "9.9.9.9"),
            ("x-forwarded-proto", "http"),
        ]);
        let c = p.resolve(&h, "127.0.0.1:9".parse().unwrap()).unwrap();
        assert_eq!(c.addr, "[2001:db8::1]:4711".parse().unwrap());
        assert_eq!(c.https, Some(true));
        // X-Forwarded-Proto: the value the nearest proxy set (the last one).
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "http, https"),
        ]);
        assert_eq!(
            p.resolve(&h, "127.0.0.1:9".parse().unwrap()).unwrap().https,
            Some(true)
        );
        let h = headers(&[("x-forwarded-proto", "https")]);
        let c = p.resolve(&h, "127.0.0.1:9".parse().unwrap()).unwrap();
        assert_eq!(
            (c.addr.to_string().as_str(), c.https),
            ("127.0.0.1:9", Some(true))
        );
        let h = headers(&[("x-forwarded-proto", "gopher")]);
        assert_eq!(p.resolve(&h, "127.0.0.1:9".parse().unwrap()), None);
    }
}
