//! ServiceEntries as Services for proxies: each host of an entry becomes a
//! Service named by the host as written (external names are FQDNs), with
//! the entry's ports and, as endpoints, its `endpoints` (static
//! resolution) or, without any, its addresses themselves (the original
//! destination, as `resolution: NONE` means). The entry's single-IP
//! `addresses` resolve to it; CIDR ranges are not indexed per address.

use std::net::IpAddr;

use api::cluster::MeshConfig;
use api::discovery::{Endpoint, Service, ServicePort, Workload};

use crate::index::Registered;
use api::protocol::AppProtocol;

/// One Service per (entry, host), with its endpoints, the addresses that
/// resolve to it and the namespaces it is exported to (`None`: all).
pub fn services(config: &MeshConfig) -> Vec<Registered> {
    let mut out = Vec::new();
    for se in &config.service_entries {
        let ns = se.metadata.namespace.as_deref().unwrap_or("default");
        let name = se.metadata.name.as_deref().unwrap_or_default();
        let addresses: Vec<IpAddr> = se
            .spec
            .addresses
            .iter()
            .flatten()
            .filter_map(|a| a.parse().ok())
            .collect();
        let ports: Vec<ServicePort> = se
            .spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(ServicePort {
                    name: p.name.clone().unwrap_or_default(),
                    port: u16::try_from(p.number?).ok()?,
                    protocol: AppProtocol::declared(
                        p.protocol
                            .as_deref()
                            .map(str::to_ascii_lowercase)
                            .as_deref(),
                        p.name.as_deref(),
                    ),
                })
            })
            .collect();
        let target = |names: Option<&std::collections::BTreeMap<String, u32>>| {
            se.spec
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    let port = u16::try_from(p.number?).ok()?;
                    let to = names
                        .and_then(|m| m.get(p.name.as_deref()?))
                        .copied()
                        .or(p.target_port)
                        .and_then(|t| u16::try_from(t).ok())
                        .unwrap_or(port);
                    Some((port, to))
                })
                .collect()
        };
        let endpoint = |address: IpAddr, labels, ports| Endpoint {
            workload: Workload {
                name: address.to_string(),
                namespace: ns.to_string(),
                address,
                identity: None,
                labels,
                workload: name.to_string(),
                policy: None,
            },
            ports,
        };
        let mut endpoints: Vec<Endpoint> = se
            .spec
            .endpoints
            .iter()
            .flatten()
            .filter_map(|e| {
                let ip = e.address.as_deref()?.parse().ok()?;
                Some(endpoint(
                    ip,
                    e.labels.clone().unwrap_or_default(),
                    target(e.ports.as_ref()),
                ))
            })
            .collect();
        if endpoints.is_empty() {
            endpoints = addresses
                .iter()
                .map(|a| endpoint(*a, Default::default(), target(None)))
                .collect();
        }
        for host in se.spec.hosts.iter().flatten() {
            out.push(Registered {
                service: Service {
                    name: host.clone(),
                    namespace: ns.to_string(),
                    hostname: host.clone(),
                    addresses: addresses.clone(),
                    ports: ports.clone(),
                    routing: None,
                },
                endpoints: endpoints.clone(),
                addresses: addresses.clone(),
                export_to: crate::index::export_to(se.spec.export_to.as_ref(), ns),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_endpoints_or_the_addresses_themselves() {
        let mut c = MeshConfig::default();
        for yaml in [
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: shop}
spec:
  hosts: [legacy.example.com]
  addresses: [192.0.2.10]
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
  resolution: STATIC
  endpoints: [{address: 192.0.2.20, labels: {dc: a}}, {address: 192.0.2.21, ports: {http: 9090}}]",
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: shop}
spec:
  hosts: [db.example.com]
  addresses: [192.0.2.30, 10.0.0.0/8]
  ports: [{number: 5432, name: tcp-pg, protocol: TCP}]
  resolution: NONE",
        ] {
            c.service_entries
                .push(serde_yaml_ng::from_str(yaml).unwrap());
        }
        let s = services(&c);
        assert_eq!(s.len(), 2);
        let legacy = &s[0];
        assert_eq!(legacy.export_to, None);
        assert_eq!(legacy.service.hostname, "legacy.example.com");
        assert_eq!(legacy.addresses, ["192.0.2.10".parse::<IpAddr>().unwrap()]);
        assert_eq!(legacy.service.ports[0].protocol, AppProtocol::Http);
        assert_eq!(legacy.endpoints.len(), 2);
        assert_eq!(legacy.endpoints[0].ports, [(80, 8080)].into());
        assert_eq!(legacy.endpoints[1].ports, [(80, 9090)].into());
        assert_eq!(legacy.endpoints[0].workload.labels["dc"], "a");
        assert!(legacy.endpoints[0].workload.identity.is_none());
        let db = &s[1];
        assert_eq!(db.addresses.len(), 1, "CIDRs are not indexed");
        assert_eq!(db.service.ports[0].protocol, AppProtocol::Tcp);
        assert_eq!(db.endpoints[0].workload.address.to_string(), "192.0.2.30");
    }
}
