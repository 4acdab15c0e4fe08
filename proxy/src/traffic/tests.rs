use std::collections::BTreeMap;

use std::time::Duration;

use api::discovery::{Endpoint, ServicePort, Workload};
use api::traffic::{Backend as BackendSpec, ServiceTraffic};
use hyper::StatusCode;
use hyper::header::HeaderMap;

use super::route::HeaderOps;
use super::*;

const HOST: &str = "orders.shop.svc.cluster.local";

fn endpoint(ip: &str, version: &str) -> Endpoint {
    Endpoint {
        workload: Workload {
            name: format!("orders-{version}"),
            namespace: "shop".into(),
            address: ip.parse().unwrap(),
            identity: None,
            labels: [("version".to_string(), version.to_string())].into(),
            workload: format!("orders-{version}"),
            policy: None,
        },
        ports: [(8080, 9090)].into(),
    }
}

fn three() -> Vec<Endpoint> {
    vec![
        endpoint("10.244.0.2", "v1"),
        endpoint("10.244.0.3", "v1"),
        endpoint("10.244.0.4", "v2"),
    ]
}

fn spec(http: &str, dr: Option<&str>) -> ServiceTraffic {
    let backend = BackendSpec {
        ports: vec![ServicePort {
            name: "http".into(),
            port: 8080,
            protocol: api::protocol::AppProtocol::Http,
        }],
        destination_rule: dr.map(|_| "shop/orders".into()),
        policy: dr.map(|d| serde_yaml_ng::from_str(d).unwrap()),
    };
    ServiceTraffic {
        virtual_service: Some("shop/orders".into()),
        http: serde_yaml_ng::from_str(http).unwrap(),
        tcp: vec![],
        tls: vec![],
        backends: BTreeMap::from([(HOST.to_string(), backend)]),
    }
}

/// The routing as the controller sends it.
fn traffic(http: &str, dr: Option<&str>) -> proto::Routing {
    api::routing::routing(&spec(http, dr), HOST).unwrap()
}

fn endpoints(list: Vec<Endpoint>) -> EndpointsByHost {
    [(HOST.to_string(), list.into())].into()
}

/// Compiles `routing` over the three endpoints.
fn router(routing: &proto::Routing, state: &state::Registry) -> Result<Router, String> {
    Router::from_routing(routing, HOST, &endpoints(three()), state)
}

/// A VirtualService spec's routes (http, tcp, tls) on the wire.
pub(super) fn wire(vs: &str) -> proto::Routing {
    let vs: api::istio::virtual_service::VirtualServiceSpec = serde_yaml_ng::from_str(vs).unwrap();
    let t = ServiceTraffic {
        http: vs.http.unwrap_or_default(),
        tcp: vs.tcp.unwrap_or_default(),
        tls: vs.tls.unwrap_or_default(),
        ..Default::default()
    };
    api::routing::routing(&t, HOST).unwrap()
}

/// One HTTP route on the wire.
pub(super) fn wire_route(route: &str) -> proto::HttpRoute {
    wire(&format!("http: [{route}]")).http.remove(0)
}

const SEED: &str = "
- name: canary-override
  match: [{headers: {x-canary: {exact: 'true'}}}]
  route: [{destination: {host: orders.shop.svc.cluster.local, subset: v2}}]
- name: v2-api
  match: [{uri: {prefix: /v2/}}]
  rewrite: {uri: /}
  route: [{destination: {host: orders.shop.svc.cluster.local, subset: v2}}]
- name: split
  route:
  - {destination: {host: orders.shop.svc.cluster.local, subset: v1}, weight: 90}
  - {destination: {host: orders.shop.svc.cluster.local, subset: v2}, weight: 10}
  retries: {attempts: 3, perTryTimeout: 2s, retryOn: '5xx,connect-failure,retriable-4xx'}
  timeout: 10s
  fault:
    delay: {fixedDelay: 5s, percentage: {value: 10}}
    abort: {httpStatus: 503, percentage: {value: 5}}
";

const SUBSETS: &str = "
host: orders
subsets:
- {name: v1, labels: {version: v1}}
- name: v2
  labels: {version: v2}
  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user-id}}}
";

fn req(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut b = Request::builder().uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap()
}

#[test]
fn the_first_matching_route_wins_and_an_unmatched_one_is_the_default() {
    let r = router(&traffic(SEED, Some(SUBSETS)), &state::Registry::default()).unwrap();
    let src = Source::default();
    let name = |req: &Request<()>| r.select(req, 8080, &src).unwrap().1.name.clone();
    assert_eq!(
        name(&req("/v2/x", &[("x-canary", "true")])).as_deref(),
        Some("canary-override")
    );
    assert_eq!(name(&req("/v2/x", &[])).as_deref(), Some("v2-api"));
    assert_eq!(name(&req("/v1/x", &[])).as_deref(), Some("split"));
    let split = &r.routes[2];
    assert_eq!(split.timeout, Some(Duration::from_secs(10)));
    assert_eq!(split.retry.retries, 3);
    assert_eq!(split.fault.delay, Some((Duration::from_secs(5), 10.0)));
    assert_eq!(
        split.fault.abort,
        Some((Abort::Http(StatusCode::SERVICE_UNAVAILABLE), 5.0))
    );
    let Action::Forward(ds) = &split.action else {
        panic!()
    };
    assert_eq!(ds.iter().map(|d| d.weight).collect::<Vec<_>>(), [90, 10]);
}

#[test]
fn no_route_matches_when_every_route_has_conditions() {
    let r = router(&traffic(
            "[{match: [{uri: {exact: /only}}], route: [{destination: {host: orders.shop.svc.cluster.local}}]}]",
            None,
        ), &state::Registry::default())
    .unwrap();
    assert!(
        r.select(&req("/other", &[]), 8080, &Source::default())
            .is_none()
    );
    assert!(
        r.select(&req("/only", &[]), 8080, &Source::default())
            .is_some()
    );
}

#[test]
fn subsets_select_by_labels_with_their_own_balancer() {
    let r = router(&traffic(SEED, Some(SUBSETS)), &state::Registry::default()).unwrap();
    let b = &r.backends[HOST];
    assert_eq!(b.subset(&None, 8080).unwrap().members, [0, 1, 2]);
    assert_eq!(b.subset(&Some("v1".into()), 8080).unwrap().members, [0, 1]);
    let v2 = b.subset(&Some("v2".into()), 8080).unwrap();
    assert_eq!(v2.members, [2]);
    assert!(v2.balancer.hash_on().is_some());
    assert!(
        b.subset(&Some("v1".into()), 80)
            .unwrap()
            .balancer
            .hash_on()
            .is_none()
    );
    assert!(b.subset(&Some("v3".into()), 8080).is_none());
    assert_eq!(b.endpoint_port(&b.endpoints[0], 8080), 9090);
    assert_eq!(b.service_port(None, 8080), 8080);
    assert_eq!(b.service_port(None, 80), 8080);
    assert_eq!(b.service_port(Some(9000), 80), 9000);
}

#[test]
fn subset_and_port_level_policies_override_the_hosts() {
    let dr = "
host: orders
trafficPolicy:
  loadBalancer: {simple: RANDOM}
  connectionPool: {http: {http2MaxRequests: 10}, tcp: {connectTimeout: 1s}}
  portLevelSettings:
  - port: {number: 9000}
    loadBalancer: {consistentHash: {httpHeaderName: x-port}}
subsets:
- name: v1
  labels: {version: v1}
  trafficPolicy:
    connectionPool: {tcp: {connectTimeout: 2s}}
    outlierDetection: {consecutive5xxErrors: 3}
- name: v2
  labels: {version: v2}
  trafficPolicy:
    portLevelSettings:
    - port: {number: 9000}
      loadBalancer: {simple: LEAST_REQUEST}
";
    let r = router(&traffic(SEED, Some(dr)), &state::Registry::default()).unwrap();
    let b = &r.backends[HOST];
    let sub = |name: Option<&str>, port| b.subset(&name.map(str::to_string), port).unwrap();
    // The host's policy, and its port-level settings on their port.
    assert!(matches!(
        sub(None, 8080).balancer,
        balance::Balancer::Random
    ));
    assert!(sub(None, 9000).balancer.hash_on().is_some());
    // A subset's fields replace the host's; the rest is inherited.
    let v1 = sub(Some("v1"), 8080);
    assert_eq!(v1.conn.connect_timeout, Duration::from_secs(2));
    assert!(v1.outlier.is_some() && sub(None, 8080).outlier.is_none());
    assert!(matches!(v1.balancer, balance::Balancer::Random));
    assert_eq!(sub(None, 8080).conn.connect_timeout, Duration::from_secs(1));
    // The subset's port-level settings come first.
    assert!(matches!(
        sub(Some("v2"), 9000).balancer,
        balance::Balancer::LeastRequest
    ));
    assert!(matches!(
        sub(Some("v1"), 9000).balancer,
        balance::Balancer::Hash { .. }
    ));
}

#[test]
fn bad_fields_are_named() {
    // The controller refuses what Istio does not define...
    let err = api::routing::routing(
        &spec(
            "[{route: [{destination: {host: orders.shop.svc.cluster.local}}], retries: {attempts: 2, retryOn: 'sometimes'}}]",
            None,
        ),
        HOST,
    )
    .unwrap_err();
    assert!(err.starts_with("http[0].retries.retryOn:"), "{err}");
    // ...and a proxy what it cannot run.
    let mut bad = traffic("[{match: [{uri: {prefix: /}}]}]", None);
    bad.http[0].matches[0].uri = Some(proto::StringMatch {
        kind: Some(proto::string_match::Kind::Regex("(".into())),
    });
    let err = router(&bad, &state::Registry::default()).unwrap_err();
    assert!(err.starts_with("http[0].match[0].uri.regex:"), "{err}");
    let err = router(
        &traffic(
            "[{route: [{destination: {host: nowhere.svc.cluster.local}}]}]",
            None,
        ),
        &state::Registry::default(),
    )
    .unwrap_err();
    assert!(
        err.contains("nowhere.svc.cluster.local has no backend"),
        "{err}"
    );
}

#[test]
fn prefix_rewrites_replace_only_the_prefix() {
    let rw = |uri: &str| Rewrite {
        uri: Some(uri.into()),
        authority: None,
        regex: None,
    };
    let prefix = StrMatch::Prefix("/v2/".into());
    assert_eq!(
        rewrite_path("/v2/items?a=1", Some(&prefix), &rw("/")),
        "/items?a=1"
    );
    assert_eq!(rewrite_path("/v2/", Some(&prefix), &rw("/")), "/");
    assert_eq!(
        rewrite_path(
            "/v1/items",
            Some(&StrMatch::Prefix("/v1".into())),
            &rw("/api/v1")
        ),
        "/api/v1/items"
    );
    assert_eq!(
        rewrite_path(
            "/exact",
            Some(&StrMatch::Exact("/exact".into())),
            &rw("/new")
        ),
        "/new"
    );
    let re = Rewrite {
        uri: None,
        authority: None,
        regex: Some((
            regex::Regex::new("^/service/([^/]+)").unwrap(),
            "/$1".into(),
        )),
    };
    assert_eq!(rewrite_path("/service/orders/1", None, &re), "/orders/1");
}

#[test]
fn grpc_statuses_by_name_or_number() {
    use api::routing::grpc_code;
    assert_eq!(grpc_code("UNAVAILABLE"), Some(14));
    assert_eq!(grpc_code("deadline_exceeded"), Some(4));
    assert_eq!(grpc_code("8"), Some(8));
    assert_eq!(grpc_code("NOPE"), None);
}

#[test]
fn header_operations_remove_set_add() {
    let r = wire_route("{headers: {request: {set: {x-a: '1'}, add: {x-b: '2'}, remove: [x-c]}}}");
    let ops = r.headers.unwrap().request;
    let ops = HeaderOps::compile(ops.as_ref(), "h").unwrap();
    let mut h = HeaderMap::new();
    h.insert("x-a", "0".parse().unwrap());
    h.insert("x-b", "1".parse().unwrap());
    h.insert("x-c", "1".parse().unwrap());
    ops.apply(&mut h);
    assert_eq!(h["x-a"], "1");
    assert_eq!(h.get_all("x-b").iter().count(), 2);
    assert!(!h.contains_key("x-c"));
}

const POOL: &str = "
host: orders
trafficPolicy:
  connectionPool: {tcp: {maxConnections: 1}}
  loadBalancer: {simple: LEAST_REQUEST}
";

#[test]
fn limits_and_counts_hold_while_endpoints_churn() {
    let state = state::Registry::default();
    let before = router(&traffic(SEED, Some(POOL)), &state).unwrap();
    let sub = before.backends[HOST].subset(&None, 8080).unwrap();
    let held = sub.limits.connection().unwrap();
    sub.active[0].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // A push: one endpoint gone, one new, same pool settings.
    let mut churned = three();
    churned.remove(2);
    churned.push(endpoint("10.244.0.9", "v1"));
    let after = Router::from_routing(
        &traffic(SEED, Some(POOL)),
        HOST,
        &endpoints(churned),
        &state,
    )
    .unwrap();
    let sub2 = after.backends[HOST].subset(&None, 8080).unwrap();
    assert!(
        sub2.limits.connection().is_err(),
        "the connection opened before the push still counts"
    );
    assert_eq!(
        sub2.active[0].load(std::sync::atomic::Ordering::Relaxed),
        1,
        "requests in flight to a kept endpoint still count"
    );
    drop(held);
    assert!(sub2.limits.connection().is_ok());
    // New caps start afresh.
    let wider = POOL.replace("maxConnections: 1", "maxConnections: 2");
    let changed = router(&traffic(SEED, Some(&wider)), &state).unwrap();
    let sub3 = changed.backends[HOST].subset(&None, 8080).unwrap();
    let _a = sub3.limits.connection().unwrap();
    let _b = sub3.limits.connection().unwrap();
    assert!(sub3.limits.connection().is_err());
    assert!(std::sync::Arc::ptr_eq(
        &before.backends[HOST].budget,
        &after.backends[HOST].budget
    ));
}

#[test]
fn after_a_push_the_next_requests_spread_over_the_endpoints() {
    let state = state::Registry::default();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut first = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let r = router(&traffic(SEED, None), &state).unwrap();
        let b = &r.backends[HOST];
        let sub = b.subset(&None, 8080).unwrap();
        let (_, w, _) = b.choose(sub, None, &mut Vec::new(), &mut rng).unwrap();
        first.insert(w.address);
    }
    assert_eq!(first.len(), 3, "each compile starts round robin anywhere");
}
