//! The local runtime plays kube-proxy: in every pod's network namespace, a
//! nat chain `MESH_SERVICES` sends a connection to a Service's cluster IP
//! and port to one of its ready endpoints (chosen at random, as
//! kube-proxy's iptables mode does), and a filter chain of the same name
//! refuses one to a Service port without endpoints at once. So a pod
//! outside the mesh reaches Services by name and cluster IP as on
//! Kubernetes.
//!
//! The rules live in each pod's own namespace (kube-proxy's live in the
//! node's): the pod's conntrack undoes the translation on the answers,
//! and the server sees the client's own address. In a meshed pod they
//! come after the proxy's redirection, which takes the app's connections
//! first; they apply to what the proxy lets through (excluded ports, and
//! its own passthrough).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::IpAddr;

use api::cluster::{Snapshot, TargetPort, labels_match};

/// The chain's name, in both tables.
pub const CHAIN: &str = "MESH_SERVICES";

/// The `iptables-restore --noflush` input that replaces both chains.
pub fn rules(snap: &Snapshot) -> String {
    let mut nat = format!("*nat\n:{CHAIN} - [0:0]\n");
    let mut filter = format!("*filter\n:{CHAIN} - [0:0]\n");
    let mut services: Vec<_> = snap.services.iter().collect();
    services.sort_by_key(|s| (s.cluster_ip, &s.namespace, &s.name));
    for svc in services {
        for port in &svc.ports {
            let mut endpoints: BTreeMap<IpAddr, u16> = BTreeMap::new();
            for pod in &snap.pods {
                let Some(ip) = pod.ip.filter(|_| pod.ready) else {
                    continue;
                };
                if pod.namespace != svc.namespace
                    || svc.selector.is_empty()
                    || !labels_match(&svc.selector, &pod.labels)
                {
                    continue;
                }
                let target = match &port.target_port {
                    TargetPort::Number(n) => Some(*n),
                    TargetPort::Name(n) => pod.named_ports.get(n).copied(),
                };
                if let Some(t) = target {
                    endpoints.insert(ip, t);
                }
            }
            let dst = format!(
                "-A {CHAIN} -d {}/32 -p tcp --dport {}",
                svc.cluster_ip, port.port
            );
            if endpoints.is_empty() {
                let _ = writeln!(filter, "{dst} -j REJECT --reject-with tcp-reset");
                continue;
            }
            let n = endpoints.len();
            for (i, (ip, target)) in endpoints.into_iter().enumerate() {
                let pick = if i + 1 < n {
                    format!(
                        " -m statistic --mode random --probability {:.5}",
                        1.0 / (n - i) as f64
                    )
                } else {
                    String::new()
                };
                let _ = writeln!(nat, "{dst}{pick} -j DNAT --to-destination {ip}:{target}");
            }
        }
    }
    nat + "COMMIT\n" + &filter + "COMMIT\n"
}

/// The shell script, run in a pod's namespace, that installs `rules` and
/// makes sure each table's OUTPUT chain jumps to them once, last.
pub fn script(rules: &str) -> String {
    let mut s = String::from("set -e\niptables-restore -w --noflush <<'MESH_EOF'\n");
    s.push_str(rules);
    s.push_str("MESH_EOF\n");
    for table in ["nat", "filter"] {
        let _ = writeln!(
            s,
            "iptables -w -t {table} -C OUTPUT -j {CHAIN} 2>/dev/null || iptables -w -t {table} -A OUTPUT -j {CHAIN}"
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::cluster::{Pod, Service, ServicePort};

    fn pod(name: &str, ip: &str, app: &str, ready: bool) -> Pod {
        Pod {
            name: name.into(),
            namespace: "shop".into(),
            labels: [("app".to_string(), app.to_string())].into(),
            service_account: "default".into(),
            ip: Some(ip.parse().unwrap()),
            meshed: false,
            ready,
            named_ports: [("web".to_string(), 9090)].into(),
            owner: app.into(),
            app_exited: false,
        }
    }

    fn svc(name: &str, ip: &str, app: &str, target: TargetPort) -> Service {
        Service {
            name: name.into(),
            namespace: "shop".into(),
            cluster_ip: ip.parse().unwrap(),
            selector: [("app".to_string(), app.to_string())].into(),
            ports: vec![ServicePort {
                name: "http".into(),
                port: 80,
                target_port: target,
                app_protocol: None,
            }],
            export_to: None,
        }
    }

    #[test]
    fn ready_endpoints_share_the_port_evenly_and_a_port_without_any_is_refused() {
        let snap = Snapshot {
            pods: vec![
                pod("a", "10.244.0.3", "web", true),
                pod("b", "10.244.0.2", "web", true),
                pod("c", "10.244.0.4", "web", true),
                pod("d", "10.244.0.5", "web", false),
                pod("e", "10.244.0.6", "db", false),
            ],
            services: vec![
                svc("web", "10.96.0.7", "web", TargetPort::Name("web".into())),
                svc("db", "10.96.0.8", "db", TargetPort::Number(5432)),
            ],
            ..Default::default()
        };
        let r = rules(&snap);
        let nat: Vec<&str> = r.lines().filter(|l| l.contains("DNAT")).collect();
        assert_eq!(
            nat,
            [
                "-A MESH_SERVICES -d 10.96.0.7/32 -p tcp --dport 80 -m statistic --mode random --probability 0.33333 -j DNAT --to-destination 10.244.0.2:9090",
                "-A MESH_SERVICES -d 10.96.0.7/32 -p tcp --dport 80 -m statistic --mode random --probability 0.50000 -j DNAT --to-destination 10.244.0.3:9090",
                "-A MESH_SERVICES -d 10.96.0.7/32 -p tcp --dport 80 -j DNAT --to-destination 10.244.0.4:9090",
            ]
        );
        assert!(r.contains(
            "*filter\n:MESH_SERVICES - [0:0]\n-A MESH_SERVICES -d 10.96.0.8/32 -p tcp --dport 80 -j REJECT --reject-with tcp-reset\nCOMMIT\n"
        ));
        let s = script(&r);
        assert!(s.contains("iptables -w -t nat -C OUTPUT -j MESH_SERVICES 2>/dev/null || iptables -w -t nat -A OUTPUT -j MESH_SERVICES"));
    }
}
