use super::*;
use crate::manifest::{self, Object};

const PROFILE: &str = r#"
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {name: webapp.booksapp.svc.cluster.local, namespace: booksapp}
spec:
  routes:
  - name: GET /books/{id}
    condition: {method: GET, pathRegex: "/books/[^/]*"}
    isRetryable: true
    timeout: 300ms
  - name: POST /books
    condition:
      all: [{method: POST}, {pathRegex: /books}]
    responseClasses:
    - condition: {status: {min: 502, max: 504}}
      isFailure: true
  retryBudget: {retryRatio: 0.2, minRetriesPerSecond: 10, ttl: 10s}
---
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: canary, namespace: booksapp}
spec:
  service: webapp
  backends:
  - {service: webapp-v1, weight: 900m}
  - {service: webapp-v2, weight: 100m}
"#;

#[test]
fn weights_become_percentages_summing_to_100() {
    assert_eq!(percentages(&[0.5, 0.5]), [50, 50]);
    assert_eq!(percentages(&[1.0, 1.0, 1.0]), [34, 33, 33]);
    assert_eq!(percentages(&[0.9, 0.1]), [90, 10]);
    assert_eq!(percentages(&[0.0, 0.0]), [0, 0]);
    assert_eq!(Quantity::Text("500m".into()).value(), Some(0.5));
    assert_eq!(Quantity::Text("2".into()).value(), Some(2.0));
    assert_eq!(Quantity::Number(3.0).value(), Some(3.0));
    assert_eq!(Quantity::Text("lots".into()).value(), None);
}

#[test]
fn service_profile_and_traffic_split_translate_to_the_native_model() {
    let (docs, errors) = manifest::parse("sp.yaml", PROFILE);
    assert!(errors.is_empty(), "{errors:?}");
    let native = docs[0].object.native();
    let [Object::VirtualService(vs), Object::DestinationRule(dr)] = native.as_slice() else {
        panic!("{native:?}")
    };
    assert_eq!(
        vs.spec.hosts.as_deref(),
        Some(&["webapp.booksapp.svc.cluster.local".to_string()][..])
    );
    let http = vs.spec.http.as_ref().unwrap();
    assert_eq!(http.len(), 3, "two routes and the default");
    let first = &http[0];
    let m = &first.r#match.as_ref().unwrap()[0];
    assert_eq!(m.method.as_ref().unwrap().exact.as_deref(), Some("GET"));
    assert_eq!(
        m.uri.as_ref().unwrap().regex.as_deref(),
        Some("/books/[^/]*")
    );
    assert_eq!(first.timeout.as_deref(), Some("300ms"));
    assert_eq!(
        first.retries.as_ref().unwrap().retry_on.as_deref(),
        Some("5xx")
    );
    let second = &http[1];
    assert_eq!(
        second.r#match.as_ref().unwrap()[0]
            .method
            .as_ref()
            .unwrap()
            .exact
            .as_deref(),
        Some("POST")
    );
    assert!(second.retries.is_none());
    let budget = dr
        .spec
        .traffic_policy
        .as_ref()
        .unwrap()
        .retry_budget
        .as_ref()
        .unwrap();
    assert_eq!(budget.percent, Some(20.0));
    assert_eq!(budget.budget_interval.as_deref(), Some("10s"));
    // The translation is valid native config.
    assert_eq!(crate::istio::validate::virtual_service(&vs.spec), vec![]);

    let native = docs[1].object.native();
    let [Object::VirtualService(vs)] = native.as_slice() else {
        panic!("{native:?}")
    };
    let route = &vs.spec.http.as_ref().unwrap()[0].route.as_ref().unwrap();
    let weights: Vec<_> = route
        .iter()
        .map(|r| {
            (
                r.destination.as_ref().unwrap().host.clone().unwrap(),
                r.weight.unwrap(),
            )
        })
        .collect();
    assert_eq!(
        weights,
        [("webapp-v1".to_string(), 90), ("webapp-v2".to_string(), 10)]
    );
}

#[test]
fn what_does_not_translate_is_rejected_with_its_path() {
    let bad = r#"
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {name: webapp}
spec:
  routes:
  - name: either
    condition: {any: [{method: GET}, {method: HEAD}]}
    timeout: soon
---
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: t}
spec:
  backends: [{service: a, weight: lots}]
"#;
    let (_, errors) = manifest::parse("bad.yaml", bad);
    let at: Vec<(usize, &str)> = errors
        .iter()
        .map(|e| (e.document, e.field.as_str()))
        .collect();
    assert!(at.contains(&(1, "metadata.name")), "{errors:?}");
    assert!(at.contains(&(1, "spec.routes[0].condition")), "{errors:?}");
    assert!(at.contains(&(1, "spec.routes[0].timeout")), "{errors:?}");
    assert!(at.contains(&(2, "spec.service")), "{errors:?}");
    assert!(at.contains(&(2, "spec.backends[0].weight")), "{errors:?}");
}
