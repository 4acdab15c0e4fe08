//! The hosts file of a pod: how Service names resolve without a DNS
//! server. A Service answers to `name.ns.svc.cluster.local`, `name.ns.svc`,
//! `name.ns`, and to `name` alone inside its own namespace.

use std::fmt::Write;
use std::net::IpAddr;

/// A Service as the hosts file needs it.
pub struct HostEntry<'a> {
    /// Service name.
    pub name: &'a str,
    /// Its namespace.
    pub namespace: &'a str,
    /// Its cluster IP.
    pub ip: IpAddr,
}

/// The file for a pod `pod` at `pod_ip` in namespace `ns`.
pub fn render(pod: &str, pod_ip: IpAddr, ns: &str, services: &[HostEntry<'_>]) -> String {
    let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let _ = writeln!(out, "{pod_ip}\t{pod}");
    for s in services {
        let (n, sns) = (s.name, s.namespace);
        let _ = write!(
            out,
            "{}\t{n}.{sns}.svc.cluster.local {n}.{sns}.svc {n}.{sns}",
            s.ip
        );
        if sns == ns {
            let _ = write!(out, " {n}");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_only_in_the_same_namespace() {
        let svcs = [
            HostEntry {
                name: "orders",
                namespace: "shop",
                ip: "10.96.0.10".parse().unwrap(),
            },
            HostEntry {
                name: "db",
                namespace: "data",
                ip: "10.96.0.11".parse().unwrap(),
            },
        ];
        let text = render("front-abc", "10.244.0.2".parse().unwrap(), "shop", &svcs);
        assert!(text.contains("10.244.0.2\tfront-abc\n"));
        assert!(text.contains(
            "10.96.0.10\torders.shop.svc.cluster.local orders.shop.svc orders.shop orders\n"
        ));
        assert!(text.contains("10.96.0.11\tdb.data.svc.cluster.local db.data.svc db.data\n"));
    }
}
