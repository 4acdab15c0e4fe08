//! Pure translation of VirtualServices and DestinationRules into what a
//! client's proxy needs for one Service: the routes of the VirtualService
//! that owns the host, with every destination host made an FQDN, and each
//! such host's ports and DestinationRule ([`ServiceTraffic`]), compiled
//! into the wire's [`proto::Routing`] by [`api::routing`].
//!
//! Selection follows Istio for sidecars: a VirtualService applies when its
//! `gateways` are empty or name `mesh`; an exact host beats a wildcard;
//! among equals the first by namespace/name wins (Istio takes the oldest;
//! the local runtime keeps no creation times). A DestinationRule in the
//! Service's namespace beats one elsewhere.

use std::collections::BTreeMap;

use api::cluster::MeshConfig;
use api::discovery::Service;
use api::istio::Resource;
use api::istio::destination_rule::DestinationRuleSpec;
use api::istio::shared::Destination;
use api::istio::virtual_service::VirtualServiceSpec;
use api::proto;
use api::traffic::{Backend, ServiceTraffic, fqdn, host_matches};

/// The wire routing of `svc`, or `None` when no resource concerns it (or
/// the one that does fails to compile: the Service is then served with
/// plain balancing, and the error logged with its field path).
pub fn routing<'a>(
    config: &MeshConfig,
    svc: &Service,
    find: &dyn Fn(&str) -> Option<&'a Service>,
) -> Option<proto::Routing> {
    let t = for_service(config, svc, find)?;
    match api::routing::routing(&t, &svc.hostname) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!(service = %svc.hostname, virtual_service = ?t.virtual_service, error = %e, "routing not compiled; serving plain balancing");
            None
        }
    }
}

/// The routing for `svc`, or `None` when no resource concerns it;
/// `find` looks up the Services it routes to.
pub fn for_service<'a>(
    config: &MeshConfig,
    svc: &Service,
    find: &dyn Fn(&str) -> Option<&'a Service>,
) -> Option<ServiceTraffic> {
    let vs = virtual_service(config, &svc.hostname);
    let own_rule = destination_rule(config, &svc.hostname, &svc.namespace);
    if vs.is_none() && own_rule.is_none() {
        return None;
    }
    let mut t = ServiceTraffic::default();
    let mut hosts = vec![svc.hostname.clone()];
    if let Some(vs) = vs {
        let ns = vs.namespace();
        t.virtual_service = Some(vs.address());
        let mut resolve = |d: &mut Option<Destination>| {
            if let Some(d) = d
                && let Some(h) = &mut d.host
            {
                *h = fqdn(h, ns);
                hosts.push(h.clone());
            }
        };
        t.http = vs.spec.http.clone().unwrap_or_default();
        for r in &mut t.http {
            for d in r.route.iter_mut().flatten() {
                resolve(&mut d.destination);
            }
            resolve(&mut r.mirror);
            for m in r.mirrors.iter_mut().flatten() {
                resolve(&mut m.destination);
            }
        }
        t.tcp = vs.spec.tcp.clone().unwrap_or_default();
        for d in t.tcp.iter_mut().flat_map(|r| r.route.iter_mut().flatten()) {
            resolve(&mut d.destination);
        }
        t.tls = vs.spec.tls.clone().unwrap_or_default();
        for d in t.tls.iter_mut().flat_map(|r| r.route.iter_mut().flatten()) {
            resolve(&mut d.destination);
        }
    }
    for host in hosts {
        if t.backends.contains_key(&host) {
            continue;
        }
        let target = find(&host);
        let rule = destination_rule(
            config,
            &host,
            target.map_or(svc.namespace.as_str(), |s| s.namespace.as_str()),
        );
        t.backends.insert(
            host,
            Backend {
                ports: target.map(|s| s.ports.clone()).unwrap_or_default(),
                destination_rule: rule.map(Resource::address),
                policy: rule.map(|r| r.spec.clone()),
            },
        );
    }
    Some(t)
}

/// The VirtualService for `hostname`: exact host first, then wildcard.
fn virtual_service<'a>(
    config: &'a MeshConfig,
    hostname: &str,
) -> Option<&'a Resource<VirtualServiceSpec>> {
    let mut best: BTreeMap<(u8, &str, &str), &Resource<VirtualServiceSpec>> = BTreeMap::new();
    for vs in &config.virtual_services {
        if !api::routing::for_sidecars(vs.spec.gateways.as_ref()) {
            continue;
        }
        let ns = vs.namespace();
        for h in vs.spec.hosts.iter().flatten() {
            let rank = if h.starts_with('*') {
                host_matches(h, hostname).then_some(1)
            } else {
                (fqdn(h, ns) == hostname).then_some(0)
            };
            if let Some(rank) = rank {
                best.entry((rank, ns, vs.name())).or_insert(vs);
            }
        }
    }
    best.into_values().next()
}

/// The DestinationRule for `hostname`; one in `namespace` comes first.
fn destination_rule<'a>(
    config: &'a MeshConfig,
    hostname: &str,
    namespace_first: &str,
) -> Option<&'a Resource<DestinationRuleSpec>> {
    config
        .destination_rules
        .iter()
        .filter(|dr| {
            dr.spec
                .workload_selector
                .as_ref()
                .is_none_or(|s| s.match_labels.as_ref().is_none_or(BTreeMap::is_empty))
        })
        .filter_map(|dr| {
            let ns = dr.namespace();
            let host = dr.spec.host.as_deref()?;
            let full = if host.starts_with('*') {
                host.to_string()
            } else {
                fqdn(host, ns)
            };
            let exact = !full.starts_with('*');
            host_matches(&full, hostname)
                .then_some(((ns != namespace_first, !exact, ns, dr.name()), dr))
        })
        .min_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, dr)| dr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Registered;

    fn resource<S: serde::de::DeserializeOwned + Default>(yaml: &str) -> Resource<S> {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn svc(name: &str, ns: &str) -> Registered {
        Registered {
            service: Service {
                name: name.into(),
                namespace: ns.into(),
                hostname: fqdn(name, ns),
                addresses: vec![],
                ports: vec![],
                routing: None,
            },
            endpoints: vec![],
            addresses: vec![],
            export_to: None,
        }
    }

    fn config() -> MeshConfig {
        MeshConfig {
            virtual_services: vec![
                resource(
                    "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: b-orders, namespace: shop}
spec:
  hosts: [orders]
  http:
  - route:
    - destination: {host: orders, subset: v1}
      weight: 90
    - destination: {host: orders-canary.other}
      weight: 10
    mirror: {host: shadow}
",
                ),
                resource(
                    "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a-wild, namespace: shop}
spec:
  hosts: ['*.shop.svc.cluster.local']
  http:
  - route:
    - destination: {host: wild}
",
                ),
                resource(
                    "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a-gateway, namespace: shop}
spec:
  hosts: [orders]
  gateways: [ingress]
  http:
  - route:
    - destination: {host: gw}
",
                ),
            ],
            destination_rules: vec![
                resource(
                    "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: elsewhere, namespace: other}
spec: {host: orders.shop.svc.cluster.local}
",
                ),
                resource(
                    "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: orders, namespace: shop}
spec:
  host: orders
  subsets: [{name: v1, labels: {version: v1}}]
",
                ),
            ],
            ..MeshConfig::default()
        }
    }

    #[test]
    fn exact_hosts_beat_wildcards_and_gateway_only_services_are_skipped() {
        let (orders, canary) = (svc("orders", "shop"), svc("orders-canary", "other"));
        let known = [&orders, &canary];
        let by_host = |h: &str| {
            known
                .iter()
                .find(|r| r.service.hostname == h)
                .map(|r| &r.service)
        };
        let t = for_service(&config(), &orders.service, &by_host).unwrap();
        assert_eq!(t.virtual_service.as_deref(), Some("shop/b-orders"));
        let route = t.http[0].route.as_ref().unwrap();
        assert_eq!(
            route[1].destination.as_ref().unwrap().host.as_deref(),
            Some("orders-canary.other.svc.cluster.local")
        );
        let hosts: Vec<&str> = t.backends.keys().map(String::as_str).collect();
        assert_eq!(
            hosts,
            [
                "orders-canary.other.svc.cluster.local",
                "orders.shop.svc.cluster.local",
                "shadow.shop.svc.cluster.local"
            ]
        );
        assert_eq!(
            t.backends["orders.shop.svc.cluster.local"]
                .destination_rule
                .as_deref(),
            Some("shop/orders")
        );
        assert_eq!(
            t.backends["orders-canary.other.svc.cluster.local"].destination_rule,
            None
        );

        let pay = svc("payments", "shop");
        let t = for_service(&config(), &pay.service, &|_| None).unwrap();
        assert_eq!(t.virtual_service.as_deref(), Some("shop/a-wild"));
        assert!(for_service(&config(), &svc("payments", "x").service, &|_| None).is_none());
        let wire = routing(&config(), &orders.service, &by_host).unwrap();
        assert_eq!(wire.backends.len(), 3);
        assert_eq!(wire.http.len(), 1);
    }
}
