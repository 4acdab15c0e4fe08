//! Routes for opaque traffic: a VirtualService's `tcp` routes (by port,
//! destination subnet, source labels and namespace) and `tls` routes (the
//! same, plus the SNI of the client's ClientHello, read without consuming
//! it). The first matching route wins; a route without `match` applies to
//! everything; with routes but no match the connection is refused, as
//! Envoy has no filter chain for it.

use std::net::IpAddr;

use api::proto;

use super::matching::Source;
use super::{Dest, split};

/// One compiled L4 condition.
#[derive(Debug, Default)]
pub struct L4Match {
    port: Option<u16>,
    subnets: Vec<(IpAddr, u8)>,
    source_labels: std::collections::BTreeMap<String, String>,
    source_namespace: Option<String>,
    /// SNI patterns (TLS routes only): exact, or `*.suffix`.
    sni: Vec<String>,
}

/// A TCP or TLS route.
#[derive(Debug)]
pub struct L4Route {
    matches: Vec<L4Match>,
    /// Weighted destinations.
    pub dests: Vec<Dest>,
}

fn subnet(s: &str, at: &str) -> Result<(IpAddr, u8), String> {
    let (ip, len) = s.split_once('/').unwrap_or((s, ""));
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("{at}: {s:?} is not an address or CIDR"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = if len.is_empty() {
        max
    } else {
        len.parse()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{at}: bad prefix length in {s:?}"))?
    };
    Ok((ip, len))
}

fn in_subnet(ip: IpAddr, (net, len): (IpAddr, u8)) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

impl L4Route {
    /// Compiles a `tcp` or `tls` route.
    pub fn compile(r: &proto::L4Route, at: &str) -> Result<Self, String> {
        let matches = r
            .matches
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let at = format!("{at}.match[{i}]");
                Ok(L4Match {
                    port: u16::try_from(m.port).ok().filter(|p| *p != 0),
                    subnets: m
                        .destination_subnets
                        .iter()
                        .map(|s| subnet(s, &format!("{at}.destinationSubnets")))
                        .collect::<Result<_, _>>()?,
                    source_labels: m.source_labels.clone(),
                    source_namespace: Some(m.source_namespace.clone()).filter(|s| !s.is_empty()),
                    sni: m.sni_hosts.clone(),
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            matches,
            dests: super::route::dests(&r.destinations, &format!("{at}.route"))?,
        })
    }

    /// Whether the route takes a connection to `dst`:`port` from `src`
    /// (with `sni` for TLS routes).
    pub fn matches(&self, dst: IpAddr, port: u16, src: &Source, sni: Option<&str>) -> bool {
        self.matches.is_empty()
            || self.matches.iter().any(|m| {
                m.port.is_none_or(|p| p == port)
                    && (m.subnets.is_empty() || m.subnets.iter().any(|n| in_subnet(dst, *n)))
                    && api::cluster::labels_match(&m.source_labels, &src.labels)
                    && m.source_namespace
                        .as_ref()
                        .is_none_or(|ns| *ns == src.namespace)
                    && (m.sni.is_empty()
                        || sni.is_some_and(|s| {
                            m.sni.iter().any(|p| api::traffic::host_matches(p, s))
                        }))
            })
    }

    /// A destination by weight.
    pub fn pick(&self, rng: &mut fastrand::Rng) -> Option<&Dest> {
        split::pick(&self.dests, |d| d.weight, rng)
    }
}

/// The SNI of a TLS ClientHello at the start of `bytes`, if it is one and
/// complete.
pub fn sni(bytes: &[u8]) -> Option<String> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rd = bytes;
    acceptor.read_tls(&mut rd).ok()?;
    let accepted = acceptor.accept().ok()??;
    accepted.client_hello().server_name().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(route: &str) -> Result<L4Route, String> {
        let wire = super::super::tests::wire(&format!("tcp: [{route}]"));
        L4Route::compile(&wire.tcp[0], "tcp[0]")
    }

    #[test]
    fn tcp_routes_match_port_subnet_and_source() {
        let r = tcp(
            "{match: [{port: 5432, destinationSubnets: [10.96.0.0/16], sourceLabels: {app: api}}], route: [{destination: {host: db}}]}",
        )
        .unwrap();
        let api = Source {
            labels: [("app".to_string(), "api".to_string())].into(),
            namespace: "shop".into(),
        };
        let vip: IpAddr = "10.96.3.4".parse().unwrap();
        assert!(r.matches(vip, 5432, &api, None));
        assert!(!r.matches(vip, 5433, &api, None));
        assert!(!r.matches("10.97.0.1".parse().unwrap(), 5432, &api, None));
        assert!(!r.matches(vip, 5432, &Source::default(), None));
        assert_eq!(r.dests[0].weight, 100);
        let err = tcp(
            "{match: [{destinationSubnets: [10.0.0.0/40]}], route: [{destination: {host: db}}]}",
        )
        .unwrap_err();
        assert!(
            err.starts_with("tcp[0].match[0].destinationSubnets"),
            "{err}"
        );
    }

    #[test]
    fn tls_routes_match_sni_from_a_real_client_hello() {
        let wire = super::super::tests::wire(
            "tls: [{match: [{port: 443, sniHosts: ['*.example.com']}], route: [{destination: {host: a}}]}]",
        );
        let r = L4Route::compile(&wire.tls[0], "tls[0]").unwrap();
        let hello = client_hello("api.example.com");
        let name = sni(&hello).unwrap();
        assert_eq!(name, "api.example.com");
        let any: IpAddr = "10.96.0.9".parse().unwrap();
        assert!(r.matches(any, 443, &Source::default(), Some(&name)));
        assert!(!r.matches(any, 443, &Source::default(), Some("example.org")));
        assert!(!r.matches(any, 443, &Source::default(), None));
        assert_eq!(sni(b"GET / HTTP/1.1\r\n"), None);
        assert_eq!(sni(&hello[..20]), None, "incomplete");
    }

    /// The first flight of a rustls client for `name`.
    fn client_hello(name: &str) -> Vec<u8> {
        let roots = rustls::RootCertStore::empty();
        let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut c = rustls::ClientConnection::new(
            std::sync::Arc::new(cfg),
            name.to_string().try_into().unwrap(),
        )
        .unwrap();
        let mut out = Vec::new();
        c.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn weights_pick_destinations() {
        let r = tcp(
            "{route: [{destination: {host: a}, weight: 80}, {destination: {host: b}, weight: 20}]}",
        )
        .unwrap();
        let mut rng = fastrand::Rng::with_seed(2);
        let b = (0..10_000)
            .filter(|_| r.pick(&mut rng).unwrap().host == "b")
            .count();
        assert!((1850..2150).contains(&b), "{b}");
        assert!(r.matches("1.2.3.4".parse().unwrap(), 1, &Source::default(), None));
    }
}
