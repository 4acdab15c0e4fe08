use super::*;

fn pod(name: &str, ip: &str, app: &str, ready: bool, meshed: bool) -> cluster::Pod {
    cluster::Pod {
        name: name.into(),
        namespace: "shop".into(),
        labels: [("app".to_string(), app.to_string())].into(),
        service_account: app.into(),
        ip: Some(ip.parse().unwrap()),
        meshed,
        ready,
        named_ports: [("web".to_string(), 9090)].into(),
        owner: app.into(),
        app_exited: false,
    }
}

fn snapshot() -> Snapshot {
    Snapshot {
        version: 7,
        pods: vec![
            pod("orders-b", "10.244.0.9", "orders", true, true),
            pod("orders-a", "10.244.0.8", "orders", true, false),
            pod("orders-c", "10.244.0.10", "orders", false, true),
            pod("pay-a", "10.244.0.11", "payments", true, true),
        ],
        services: vec![cluster::Service {
            name: "orders".into(),
            namespace: "shop".into(),
            cluster_ip: "10.96.0.5".parse().unwrap(),
            export_to: None,
            selector: [("app".to_string(), "orders".to_string())].into(),
            ports: vec![
                cluster::ServicePort {
                    name: "http".into(),
                    port: 80,
                    target_port: TargetPort::Name("web".into()),
                    app_protocol: None,
                },
                cluster::ServicePort {
                    name: "db".into(),
                    port: 5432,
                    target_port: TargetPort::Number(5432),
                    app_protocol: Some("tcp".into()),
                },
            ],
        }],
        config: Default::default(),
    }
}

#[test]
fn service_has_ready_selected_endpoints_in_order() {
    let idx = Index::build(&snapshot(), "cluster.local");
    let Decoded::Address(Resolved::Service(s)) = &*idx.get("10.96.0.5").unwrap().resource else {
        panic!()
    };
    let Decoded::Endpoints(e) = &*idx.endpoints(&s.hostname).unwrap().resource else {
        panic!()
    };
    let names: Vec<_> = e
        .endpoints
        .iter()
        .map(|e| e.workload.name.as_str())
        .collect();
    assert_eq!(names, ["orders-a", "orders-b"]);
    assert_eq!(e.endpoints[0].ports, [(80, 9090), (5432, 5432)].into());
    assert_eq!(e.endpoints[0].workload.identity, None);
    assert_eq!(
        e.endpoints[1]
            .workload
            .identity
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("spiffe://cluster.local/ns/shop/sa/orders")
    );
    assert_eq!(s.port(80).unwrap().protocol, AppProtocol::Http);
    assert_eq!(s.port(5432).unwrap().protocol, AppProtocol::Tcp);
    assert_eq!(s.hostname, "orders.shop.svc.cluster.local");
}

#[test]
fn pods_resolve_and_unknown_addresses_do_not() {
    let idx = Index::build(&snapshot(), "cluster.local");
    assert!(
        matches!(&*idx.get("10.244.0.11").unwrap().resource, Decoded::Address(Resolved::Workload(w)) if w.name == "pay-a")
    );
    assert!(idx.get("10.1.2.3").is_none());
    assert!(idx.get("not-an-ip").is_none());
}

#[test]
fn version_changes_with_content_only_and_endpoints_alone() {
    const HOST: &str = "orders.shop.svc.cluster.local";
    let a = Index::build(&snapshot(), "cluster.local");
    let b = Index::build(&snapshot(), "cluster.local");
    assert_eq!(
        a.get("10.96.0.5").unwrap().version,
        b.get("10.96.0.5").unwrap().version
    );
    assert_eq!(&*a.get("10.96.0.5").unwrap().needs, [HOST]);
    let mut snap = snapshot();
    snap.pods[2].ready = true;
    let c = Index::build(&snap, "cluster.local");
    // A pod became ready: the endpoints change, the Service does not.
    assert_ne!(
        a.endpoints(HOST).unwrap().version,
        c.endpoints(HOST).unwrap().version
    );
    assert_eq!(
        a.get("10.96.0.5").unwrap().version,
        c.get("10.96.0.5").unwrap().version
    );
    assert_eq!(
        a.get("10.244.0.11").unwrap().version,
        c.get("10.244.0.11").unwrap().version
    );
}

/// Every address and routed-to host, with what a proxy would be sent.
fn served(idx: &Index) -> Vec<(String, String, Option<String>)> {
    let mut out: Vec<_> = idx
        .by_addr
        .iter()
        .map(|(a, e)| {
            (
                a.to_string(),
                e.version.clone(),
                e.own.as_ref().map(|o| o.version.clone()),
            )
        })
        .chain(
            idx.endpoints
                .iter()
                .map(|(h, e)| (h.clone(), e.version.clone(), None)),
        )
        .collect();
    out.sort();
    out
}

fn yaml<T: serde::de::DeserializeOwned>(s: &str) -> T {
    serde_yaml_ng::from_str(s).unwrap()
}

/// A config that splits `a` between `a` and `b`, declares an external
/// host, and limits the rate of `app: a` pods.
fn routed_config() -> cluster::MeshConfig {
    cluster::MeshConfig {
        virtual_services: vec![yaml(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a, namespace: shop}
spec:
  hosts: [a]
  http:
  - route:
    - {destination: {host: a}, weight: 50}
    - {destination: {host: b}, weight: 50}",
        )],
        service_entries: vec![yaml(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: shop}
spec:
  hosts: [api.example.com]
  addresses: [10.96.0.3]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: STATIC
  endpoints: [{address: 10.244.0.3}]",
        )],
        rate_limits: vec![yaml(
            "apiVersion: policy.mesh.io/v1alpha1
kind: LocalRateLimit
metadata: {name: a, namespace: shop}
spec:
  selector: {matchLabels: {app: a}}
  tokenBucket: {maxTokens: 10, tokensPerFill: 10, fillInterval: 1s}",
        )],
        ..Default::default()
    }
}

fn svc(name: &str, ip: &str, app: Option<&str>) -> cluster::Service {
    cluster::Service {
        name: name.into(),
        namespace: "shop".into(),
        cluster_ip: ip.parse().unwrap(),
        selector: app
            .map(|a| [("app".to_string(), a.to_string())].into())
            .unwrap_or_default(),
        ports: vec![cluster::ServicePort {
            name: "http".into(),
            port: 80,
            target_port: TargetPort::Name("web".into()),
            app_protocol: None,
        }],
        export_to: None,
    }
}

fn slice(ips: &[(&str, Option<&str>)]) -> cluster::EndpointSlice {
    cluster::EndpointSlice {
        namespace: "shop".into(),
        service: "manual".into(),
        ports: [("http".to_string(), 7070)].into(),
        endpoints: ips
            .iter()
            .map(|(ip, pod)| cluster::SliceEndpoint {
                address: ip.parse().unwrap(),
                ready: true,
                pod: pod.map(str::to_string),
            })
            .collect(),
    }
}

fn key(name: &str) -> Key {
    ("shop".to_string(), name.to_string())
}

/// A small deterministic generator (xorshift), so that a failure
/// reproduces.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One random change among a few pods (whose IPs collide on purpose),
/// three Services (one selector-less, fed by slices) and two configs.
fn random_change(rng: &mut Rng) -> Change {
    let name = format!("p{}", rng.below(5));
    match rng.below(8) {
        0..=3 => {
            let p = (rng.below(4) > 0).then(|| {
                let mut p = pod(
                    &name,
                    &format!("10.244.0.{}", rng.below(4) + 1),
                    ["a", "b"][rng.below(2) as usize],
                    rng.below(3) > 0,
                    rng.below(2) > 0,
                );
                p.ip = p.ip.filter(|_| rng.below(6) > 0);
                p
            });
            Change::Pod(key(&name), p)
        }
        4 => {
            let (n, ip, app) = [("a", "10.96.0.1", Some("a")), ("b", "10.96.0.2", Some("b"))]
                [rng.below(2) as usize];
            let ip = if rng.below(5) == 0 { "10.244.0.1" } else { ip };
            Change::Service(key(n), (rng.below(4) > 0).then(|| svc(n, ip, app)))
        }
        5 => Change::Service(
            key("manual"),
            (rng.below(4) > 0).then(|| svc("manual", "10.96.0.4", None)),
        ),
        6 => {
            let eps: &[(&str, Option<&str>)] = match rng.below(3) {
                0 => &[("10.244.0.1", Some("p1")), ("10.1.0.9", None)],
                1 => &[("10.244.0.2", Some("p2"))],
                _ => &[],
            };
            let which = format!("manual-{}", rng.below(2));
            Change::Slice(key(&which), (rng.below(4) > 0).then(|| slice(eps)))
        }
        _ => Change::Config(Box::new(if rng.below(2) == 0 {
            routed_config()
        } else {
            cluster::MeshConfig::default()
        })),
    }
}

#[test]
fn changes_applied_one_by_one_serve_what_a_fresh_index_of_the_result_serves() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut live = Indexer::new("cluster.local");
    let mut state: Vec<Change> = Vec::new();
    let mut last = Index::default();
    for round in 0..400 {
        let batch: Vec<Change> = (0..=rng.below(3))
            .map(|_| random_change(&mut rng))
            .collect();
        state.extend(batch.iter().cloned());
        live.apply(batch);
        if let Some(idx) = live.publish() {
            assert!(idx.version > last.version);
            last = idx;
        }
        // The whole state as one batch, into a fresh indexer.
        let mut fresh = Indexer::new("cluster.local");
        fresh.apply(state.iter().cloned());
        let expected = fresh.publish().unwrap_or_default();
        assert_eq!(served(&last), served(&expected), "round {round}");
    }
    assert!(
        last.len().0 > 0 && last.version > 50,
        "the sequence exercised little"
    );
}

#[test]
fn a_pod_change_reencodes_that_pod_and_its_services_endpoints_only() {
    const HOST: &str = "orders.shop.svc.cluster.local";
    let mut snap = snapshot();
    snap.config = routed_config();
    let mut ix = Indexer::new("cluster.local");
    ix.apply(Change::between(&Snapshot::default(), &snap));
    let before = ix.publish().unwrap();
    let mut p = snap.pods[2].clone();
    p.ready = true;
    ix.apply([Change::Pod(key("orders-c"), Some(p))]);
    let after = ix.publish().unwrap();
    let shared = |ip: &str| {
        let ip: IpAddr = ip.parse().unwrap();
        Arc::ptr_eq(&before.by_addr[&ip], &after.by_addr[&ip])
    };
    // The pod's own resource is unchanged (readiness is not in it); the
    // Service is the same object; only its endpoints are new.
    assert!(shared("10.244.0.10") && shared("10.244.0.11") && shared("10.96.0.5"));
    assert!(!Arc::ptr_eq(
        &before.endpoints[HOST],
        &after.endpoints[HOST]
    ));
    assert_eq!(after.version, before.version + 1);
    // The same again changes nothing, and publishes nothing.
    let mut p = snap.pods[2].clone();
    p.ready = true;
    ix.apply([Change::Pod(key("orders-c"), Some(p))]);
    assert!(ix.publish().is_none());
}

#[test]
fn a_selectorless_service_takes_its_slices_endpoints_with_known_pods_identities() {
    const HOST: &str = "manual.shop.svc.cluster.local";
    let mut ix = Indexer::new("cluster.local");
    ix.apply([
        Change::Pod(key("p1"), Some(pod("p1", "10.244.0.1", "x", true, true))),
        Change::Service(key("manual"), Some(svc("manual", "10.96.0.4", None))),
        Change::Slice(
            key("manual-abc"),
            Some(slice(&[("10.244.0.1", Some("p1")), ("10.1.0.9", None)])),
        ),
    ]);
    let idx = ix.publish().unwrap();
    let Decoded::Endpoints(e) = &*idx.endpoints(HOST).unwrap().resource else {
        panic!()
    };
    let got: Vec<_> = e
        .endpoints
        .iter()
        .map(|e| {
            (
                e.workload.address.to_string(),
                e.workload.identity.as_ref().map(ToString::to_string),
                e.ports.clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("10.1.0.9".to_string(), None, [(80, 7070)].into()),
            (
                "10.244.0.1".to_string(),
                Some("spiffe://cluster.local/ns/shop/sa/x".to_string()),
                [(80, 7070)].into()
            ),
        ]
    );
    // The slice goes: so do the endpoints; the Service stays.
    ix.apply([Change::Relisted(Kind::Slices, Default::default())]);
    let idx = ix.publish().unwrap();
    let Decoded::Endpoints(e) = &*idx.endpoints(HOST).unwrap().resource else {
        panic!()
    };
    assert!(e.endpoints.is_empty());
    assert!(idx.get("10.96.0.4").is_some());
}

#[test]
fn a_pod_wins_its_address_over_a_service_whatever_the_order() {
    let p = Change::Pod(key("p1"), Some(pod("p1", "10.244.0.1", "x", true, true)));
    let s = Change::Service(key("clash"), Some(svc("clash", "10.244.0.1", None)));
    for order in [[p.clone(), s.clone()], [s.clone(), p.clone()]] {
        let mut ix = Indexer::new("cluster.local");
        for c in order {
            ix.apply([c]);
            ix.publish();
        }
        let mut ix2 = ix;
        let idx = {
            ix2.apply([Change::Config(Box::new(routed_config()))]);
            ix2.publish().unwrap()
        };
        assert!(matches!(
            &*idx.get("10.244.0.1").unwrap().resource,
            Decoded::Address(Resolved::Workload(_))
        ));
        ix2.apply([Change::Pod(key("p1"), None)]);
        let idx = ix2.publish().unwrap();
        assert!(matches!(
            &*idx.get("10.244.0.1").unwrap().resource,
            Decoded::Address(Resolved::Service(s)) if s.name == "clash"
        ));
    }
}
