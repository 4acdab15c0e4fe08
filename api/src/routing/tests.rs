use std::collections::BTreeMap;

use super::*;
use crate::istio::destination_rule::DestinationRuleSpec;
use crate::istio::virtual_service::VirtualServiceSpec;
use crate::traffic::Backend;

const HOST: &str = "orders.shop.svc.cluster.local";

fn traffic(vs: &str, dr: Option<&str>) -> ServiceTraffic {
    let vs: VirtualServiceSpec = serde_yaml_ng::from_str(vs).unwrap();
    let policy: Option<DestinationRuleSpec> = dr.map(|d| serde_yaml_ng::from_str(d).unwrap());
    ServiceTraffic {
        virtual_service: Some("shop/orders".into()),
        http: vs.http.unwrap_or_default(),
        tcp: vs.tcp.unwrap_or_default(),
        tls: vs.tls.unwrap_or_default(),
        backends: BTreeMap::from([(
            HOST.to_string(),
            Backend {
                destination_rule: policy.as_ref().map(|_| "shop/orders".into()),
                policy,
                ..Backend::default()
            },
        )]),
    }
}

fn secs(s: i64, ms: i32) -> Option<proto::Duration> {
    Some(proto::Duration {
        seconds: s,
        nanos: ms * 1_000_000,
    })
}

#[test]
fn routes_are_typed_with_istios_defaults_filled() {
    let t = traffic(
        "http:
- match: [{uri: {prefix: /a}, headers: {X-User: {exact: u}}, gateways: [mesh]}]
  route: [{destination: {host: orders.shop.svc.cluster.local, subset: v1}}]
  timeout: 1.5s
- match: [{uri: {prefix: /gw}, gateways: [edge]}]
  route: [{destination: {host: orders.shop.svc.cluster.local}}]
- redirect: {uri: /new}
  retries: {attempts: 3, perTryTimeout: 200ms, retryOn: 'reset-before-request,gateway-error,409,unavailable'}
  fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 50}}}",
        None,
    );
    let r = routing(&t, HOST).unwrap();
    assert_eq!(r.http.len(), 2, "the gateway-only route never applies here");
    let first = &r.http[0];
    assert_eq!(first.timeout, secs(1, 500));
    assert_eq!(first.retry, Some(default_retry()), "Istio's default policy");
    assert_eq!(first.matches[0].headers[0].name, "x-user");
    let Some(proto::http_route::Action::Forward(f)) = &first.action else {
        panic!("{first:?}")
    };
    assert_eq!(f.destinations[0].weight, 100, "the only destination");
    assert_eq!(f.destinations[0].destination.as_ref().unwrap().subset, "v1");
    let second = &r.http[1];
    let Some(proto::http_route::Action::Redirect(rd)) = &second.action else {
        panic!("{second:?}")
    };
    assert_eq!(rd.status, 301);
    let retry = second.retry.as_ref().unwrap();
    assert_eq!(retry.attempts, 3);
    assert_eq!(retry.per_try_timeout, secs(0, 200));
    let on = retry.on.as_ref().unwrap();
    assert_eq!(
        on.conditions,
        [
            proto::RetryCondition::Reset as i32,
            proto::RetryCondition::GatewayError as i32
        ]
    );
    assert_eq!(on.status_codes, [409]);
    assert_eq!(on.grpc_statuses, [14]);
    let abort = second.fault.as_ref().unwrap().abort.as_ref().unwrap();
    assert_eq!(abort.code, Some(proto::fault_abort::Code::GrpcStatus(14)));
    assert!((abort.percent - 50.0).abs() < f64::EPSILON);
}

#[test]
fn validation_and_the_wire_read_retry_on_alike() {
    for ok in [
        "reset-before-request",
        "5xx,503",
        "retriable-status-codes,409",
    ] {
        assert!(retry_on(ok).is_ok(), "{ok}");
    }
    let err = retry_on("5xx,gateway-eror").unwrap_err();
    assert_eq!(err, "unknown retry condition \"gateway-eror\"");
    let (_, problems) = crate::manifest::parse(
        "vs.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a, namespace: shop}\nspec:\n  hosts: [a]\n  http:\n  - route: [{destination: {host: a}}]\n    retries: {attempts: 1, retryOn: reset-before-request}\n",
    );
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn destination_rule_precedence_is_resolved_per_subset_and_port() {
    let t = traffic(
        "http: [{route: [{destination: {host: orders.shop.svc.cluster.local}}]}]",
        Some(
            "host: orders
trafficPolicy:
  loadBalancer: {simple: RANDOM}
  connectionPool: {tcp: {maxConnections: 10, connectTimeout: 250ms}}
  outlierDetection: {consecutive5xxErrors: 2}
  portLevelSettings:
  - port: {number: 8080}
    loadBalancer: {simple: LEAST_REQUEST}
subsets:
- name: v2
  labels: {version: v2}
  trafficPolicy:
    loadBalancer: {consistentHash: {httpHeaderName: X-User}}",
        ),
    );
    let r = routing(&t, HOST).unwrap();
    let b = &r.backends[0];
    assert_eq!(b.destination_rule, "shop/orders");
    let find = |name: &str, port: u32| {
        b.subsets
            .iter()
            .find(|s| s.name == name && s.port == port)
            .unwrap_or_else(|| panic!("no {name}:{port} in {b:?}"))
    };
    let simple = |s: &proto::Subset| match s.load_balancer.as_ref().unwrap().policy {
        Some(proto::load_balancer::Policy::Simple(p)) => Some(p),
        _ => None,
    };
    assert_eq!(simple(find("", 0)), Some(proto::SimpleLb::Random as i32));
    assert_eq!(
        simple(find("", 8080)),
        Some(proto::SimpleLb::LeastRequest as i32)
    );
    // The subset's own balancer beats the host's port-level one.
    assert_eq!(simple(find("v2", 8080)), None);
    let v2 = find("v2", 0);
    assert_eq!(v2.labels["version"], "v2");
    // What the subset does not set comes from the host, defaults filled.
    let pool = v2.connection_pool.as_ref().unwrap();
    assert_eq!(pool.max_connections, 10);
    assert_eq!(pool.connect_timeout, secs(0, 250));
    let od = v2.outlier_detection.as_ref().unwrap();
    assert_eq!(od.consecutive_5xx, 2);
    assert_eq!(od.base_ejection_time, secs(30, 0));
    assert_eq!(od.max_ejection_percent, 10);
    assert_eq!(b.retry_budget, None);
}

#[test]
fn workload_policy_is_typed() {
    let spec: crate::policy::LocalRateLimitSpec = serde_yaml_ng::from_str(
        "tokenBucket: {maxTokens: 5, fillInterval: 1s}
routes: [{match: {name: r1}, tokenBucket: {maxTokens: 1, tokensPerFill: 2, fillInterval: 100ms}}]",
    )
    .unwrap();
    let p = workload_policy(&WorkloadPolicy {
        rate_limits: vec![crate::traffic::RateLimit {
            name: "shop/rl".into(),
            spec,
        }],
        outbound_traffic_policy: Some("REGISTRY_ONLY".into()),
    })
    .unwrap();
    assert_eq!(p.outbound, proto::OutboundMode::RegistryOnly as i32);
    let rl = &p.rate_limits[0];
    assert_eq!(rl.status, 429);
    assert_eq!(rl.bucket.as_ref().unwrap().tokens_per_fill, 1);
    assert_eq!(rl.routes[0].route, "r1");
    assert_eq!(
        rl.routes[0].bucket.as_ref().unwrap().fill_interval,
        secs(0, 100)
    );
}
