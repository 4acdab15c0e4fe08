use super::*;
use crate::manifest;

const CLUSTER: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  trafficPolicy: {tls: {mode: DISABLE}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v9, labels: {version: v9}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 50}
    - {destination: {host: reviews.shop.svc.cluster.local, subset: v2}, weight: 50}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-again, namespace: shop}
spec:
  hosts: [reviews.shop.svc.cluster.local]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ghost, namespace: shop}
spec:
  hosts: [ghost]
  http: [{route: [{destination: {host: ghost}}]}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: shop}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: nobody, namespace: shop}
spec:
  selector: {matchLabels: {app: nobody}}
"#;

fn run(text: &str, pods: Option<&[PodLabels]>) -> Vec<Finding> {
    let (docs, errors) = manifest::parse("c.yaml", text);
    assert!(errors.is_empty(), "{errors:?}");
    let located: Vec<Located<'_>> = docs
        .iter()
        .map(|d| Located {
            source: format!("c.yaml:{}", d.index),
            object: &d.object,
        })
        .collect();
    analyze(&located, pods)
}

fn pods() -> Vec<PodLabels> {
    vec![PodLabels {
        namespace: "shop".into(),
        labels: [
            ("app".to_string(), "reviews".to_string()),
            ("version".to_string(), "v1".to_string()),
        ]
        .into(),
    }]
}

fn find<'a>(f: &'a [Finding], object: &str, field: &str) -> &'a Finding {
    f.iter()
        .find(|x| x.object == object && x.field == field)
        .unwrap_or_else(|| panic!("no finding for {object} {field} in {f:#?}"))
}

#[test]
fn finds_every_kind_of_problem() {
    let pods = pods();
    let f = run(CLUSTER, Some(&pods));
    let missing = find(
        &f,
        "VirtualService/reviews",
        "spec.http[0].route[1].destination.subset",
    );
    assert_eq!(missing.severity, Severity::Error);
    assert!(missing.message.contains(
        "subset \"v2\" of reviews.shop.svc.cluster.local is defined by no DestinationRule"
    ));
    assert_eq!(missing.source, "c.yaml:3");
    let empty = find(&f, "DestinationRule/reviews", "spec.subsets[1].labels");
    assert_eq!(empty.severity, Severity::Warning);
    assert!(empty.message.contains("\"v9\" matches no pod"));
    let unknown = find(&f, "VirtualService/ghost", "spec.hosts[0]");
    assert!(
        unknown
            .message
            .contains("no Service or ServiceEntry has host \"ghost\"")
    );
    let twice = find(&f, "VirtualService/reviews-again", "spec.hosts");
    assert!(
        twice
            .message
            .contains("also routed by VirtualService/reviews, VirtualService/reviews-again")
    );
    let tls = find(&f, "DestinationRule/reviews", "spec.trafficPolicy.tls.mode");
    assert_eq!(tls.severity, Severity::Error);
    assert!(
        tls.message
            .contains("DISABLE conflicts with PeerAuthentication/strict (mtls.mode STRICT)")
    );
    let nobody = find(&f, "AuthorizationPolicy/nobody", "spec.selector");
    assert!(nobody.message.contains("app=nobody selects no workload"));
    // Stored, not enforced yet: said, never silent.
    let stored = f
        .iter()
        .filter(|x| x.message.contains("stored but not enforced yet"))
        .count();
    assert_eq!(stored, 0, "{f:#?}");
    // Nothing else: the v1 route and the subset v1 are fine.
    assert_eq!(f.len(), 7 + stored, "{f:#?}");
}

#[test]
fn without_pods_the_pod_checks_are_skipped_and_clean_config_is_clean() {
    let f = run(CLUSTER, None);
    assert!(
        !f.iter()
            .any(|x| x.field == "spec.subsets[1].labels" || x.field == "spec.selector"),
        "{f:#?}"
    );
    let clean = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec: {selector: {app: reviews}, ports: [{port: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews.shop.svc.cluster.local
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v1}}]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: shop}
spec: {hosts: ["*.example.com"], ports: [{number: 443, name: tls, protocol: TLS}], resolution: NONE}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ext, namespace: shop}
spec:
  hosts: [api.example.com]
  tls: [{match: [{sniHosts: [api.example.com]}], route: [{destination: {host: api.example.com}}]}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
"#;
    let pods = pods();
    // Nothing: the PeerAuthentication is enforced now.
    let f = run(clean, Some(&pods));
    assert!(f.is_empty(), "{f:#?}");
}

#[test]
fn fqdn_completion() {
    assert_eq!(fqdn("reviews", "shop"), "reviews.shop.svc.cluster.local");
    assert_eq!(fqdn("reviews.shop", "x"), "reviews.shop.svc.cluster.local");
    assert_eq!(
        fqdn("reviews.shop.svc", "x"),
        "reviews.shop.svc.cluster.local"
    );
    assert_eq!(fqdn("api.example.com", "x"), "api.example.com");
}
