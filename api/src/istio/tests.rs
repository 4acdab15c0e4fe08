//! Istio's documented examples read unchanged (every field written back
//! as it was), and each rejection names the field and the fix.

use serde_yaml_ng::Value;

use crate::manifest::{self, Object};

/// Examples in the shape of Istio's traffic-management documentation.
const EXAMPLES: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-route, namespace: bookinfo}
spec:
  hosts: [reviews.prod.svc.cluster.local]
  http:
  - name: reviews-v2-routes
    match:
    - uri: {prefix: /wpcatalog}
    - uri: {prefix: /consumercatalog}
    rewrite: {uri: /newcatalog}
    route:
    - destination: {host: reviews.prod.svc.cluster.local, subset: v2}
  - name: reviews-v1-route
    route:
    - destination: {host: reviews.prod.svc.cluster.local, subset: v1}
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user: {exact: jason}
        x-canary: {}
      withoutHeaders:
        x-debug: {regex: "^on$"}
      queryParams:
        v: {prefix: "2"}
      sourceLabels: {app: productpage}
      port: 9080
      ignoreUriCase: true
      method: {exact: GET}
      authority: {regex: "reviews(:9080)?"}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 90
      headers:
        request:
          set: {x-route: stable}
        response:
          add: {x-served-by: v1}
          remove: [x-internal]
    - destination: {host: reviews, subset: v3, port: {number: 9080}}
      weight: 10
    timeout: 10s
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: "5xx,connect-failure,retriable-4xx,503", retryRemoteLocalities: true}
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - fault:
      delay: {percentage: {value: 10}, fixedDelay: 5s}
      abort: {percentage: {value: 5.5}, httpStatus: 503}
    route:
    - destination: {host: ratings, subset: v1}
  - match: [{uri: {exact: /grpc}}]
    fault:
      abort: {grpcStatus: UNAVAILABLE, percentage: {value: 1}}
    route:
    - destination: {host: ratings}
    mirror: {host: ratings, subset: v2-test}
    mirrorPercentage: {value: 100.0}
    corsPolicy:
      allowOrigins: [{exact: "https://example.com"}, {regex: "https://.*\\.example\\.org"}]
      allowMethods: [POST, GET]
      allowHeaders: [x-custom]
      exposeHeaders: [x-exposed]
      maxAge: 24h
      allowCredentials: true
    headers:
      request: {set: {x-a: b}}
  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, authority: newratings.default.svc.cluster.local, redirectCode: 301}
  - match: [{uri: {prefix: /v2/}}]
    rewrite:
      uriRegexRewrite: {match: "^/v2/(.*)", rewrite: "/\\1"}
      authority: ratings.internal
    route:
    - destination: {host: ratings}
    mirrors:
    - destination: {host: ratings, subset: v3}
      percentage: {value: 25}
  - match: [{uri: {exact: /health}}]
    directResponse: {status: 200, body: {string: ok}}
  tcp:
  - match: [{port: 27017, sourceLabels: {app: reviews}}]
    route:
    - destination: {host: mongo.backup.svc.cluster.local, port: {number: 5555}}
  tls:
  - match: [{port: 443, sniHosts: [login.bookinfo.com]}]
    route:
    - destination: {host: login.prod.svc.cluster.local}
  exportTo: [".", "istio-system"]
  gateways: [mesh]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-destination}
spec:
  host: reviews.prod.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      simple: LEAST_REQUEST
      localityLbSetting:
        enabled: true
        distribute:
        - from: us-west/zone1/*
          to: {"us-west/zone1/*": 80, "us-west/zone2/*": 20}
        failover: [{from: us-east, to: eu-west}]
        failoverPriority: [topology.kubernetes.io/region]
      warmupDurationSecs: 30s
      warmup: {duration: 60s, minimumPercent: 10, aggression: 1.5}
    retryBudget: {percent: 20, minRetryConcurrency: 3, budgetInterval: 10s}
    connectionPool:
      tcp:
        maxConnections: 100
        connectTimeout: 30ms
        tcpKeepalive: {time: 7200s, interval: 75s, probes: 9}
        maxConnectionDuration: 1h
        idleTimeout: 1h
      http:
        http1MaxPendingRequests: 1
        http2MaxRequests: 1000
        maxRequestsPerConnection: 10
        maxRetries: 3
        idleTimeout: 90s
        h2UpgradePolicy: UPGRADE
        useClientProtocol: true
        maxConcurrentStreams: 100
    outlierDetection:
      consecutive5xxErrors: 5
      consecutiveGatewayErrors: 3
      consecutiveLocalOriginFailures: 2
      splitExternalLocalOriginErrors: true
      interval: 10s
      baseEjectionTime: 30s
      maxEjectionPercent: 50
      minHealthPercent: 30
    tls: {mode: ISTIO_MUTUAL, sni: reviews.prod, subjectAltNames: ["spiffe://cluster.local/ns/prod/sa/reviews"]}
    portLevelSettings:
    - port: {number: 80}
      loadBalancer: {simple: ROUND_ROBIN}
    - port: {number: 9080}
      loadBalancer:
        consistentHash:
          httpCookie: {name: user, ttl: 0s, path: /}
          ringHash: {minimumRingSize: 1024}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer:
        consistentHash: {httpHeaderName: x-user-id, maglev: {tableSize: 65537}}
  - name: v3
    labels: {version: v3}
    trafficPolicy:
      loadBalancer: {consistentHash: {useSourceIp: true}}
  exportTo: ["*"]
  workloadSelector: {matchLabels: {app: productpage}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: bookinfo-ratings-port}
spec:
  host: ratings.prod.svc.cluster.local
  trafficPolicy:
    loadBalancer: {consistentHash: {httpQueryParameterName: user}}
    tls: {mode: MUTUAL, clientCertificate: /etc/certs/cert.pem, privateKey: /etc/certs/key.pem, caCertificates: /etc/certs/ca.pem, credentialName: c, insecureSkipVerify: false, caCrl: /etc/crl.pem}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external-svc-https}
spec:
  hosts: [api.dropboxapi.com, www.googleapis.com]
  location: MESH_EXTERNAL
  ports: [{number: 443, name: https, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: external-svc-mongocluster}
spec:
  hosts: [mymongodb.somedomain]
  addresses: [192.192.192.192/24]
  ports: [{number: 27018, name: mongodb, protocol: MONGO, targetPort: 27019}]
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
  - address: 2.2.2.2
  - {address: 3.3.3.3, ports: {mongodb: 27019}, labels: {app: mongo}, locality: us-west/zone1, weight: 10, network: n1}
  exportTo: ["."]
  subjectAltNames: ["spiffe://cluster.local/ns/db/sa/mongo"]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: details-svc}
spec:
  serviceAccount: details-legacy
  address: 2.2.2.2
  labels: {app: details-legacy, instance-id: vm1}
  ports: {http: 8080}
---
apiVersion: networking.istio.io/v1alpha3
kind: Sidecar
metadata: {name: ratings, namespace: prod-us1}
spec:
  workloadSelector: {labels: {app: ratings}}
  ingress:
  - port: {number: 9080, protocol: HTTP, name: somename}
    defaultEndpoint: unix:///var/run/someuds.sock
  egress:
  - port: {number: 9080, protocol: HTTP, name: egresshttp}
    hosts: ["prod-us1/*"]
  - hosts: ["istio-system/*", "./*"]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: finance, namespace: finance}
spec:
  selector: {matchLabels: {app: finance}}
  mtls: {mode: PERMISSIVE}
  portLevelMtls:
    8080: {mode: DISABLE}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin, version: v1}}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/default/sa/sleep]
        requestPrincipals: ["*"]
    - source:
        namespaces: [dev]
        notIpBlocks: [10.1.0.0/16]
        remoteIpBlocks: [203.0.113.4]
    to:
    - operation:
        methods: [GET]
        paths: ["/info*"]
        notPorts: ["8443"]
    - operation:
        methods: [POST]
        paths: [/data]
        hosts: [httpbin.foo.svc.cluster.local]
    when:
    - key: request.auth.claims[iss]
      values: ["https://accounts.google.com"]
    - key: source.ip
      notValues: [10.0.0.1]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz}
spec:
  action: CUSTOM
  provider: {name: my-ext-authz}
  rules: [{to: [{operation: {paths: [/admin/*]}}]}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt-example, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  jwtRules:
  - issuer: testing@secure.istio.io
    audiences: [app.example.com]
    jwksUri: https://raw.example.com/jwks.json
    fromHeaders: [{name: x-jwt-assertion, prefix: "Bearer "}]
    fromParams: [my_token]
    outputPayloadToHeader: x-jwt-payload
    forwardOriginalToken: true
    outputClaimToHeaders: [{header: x-jwt-sub, claim: sub}]
  - issuer: local
    jwks: '{"keys": [{"kty": "RSA", "e": "AQAB", "n": "xyz"}]}'
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - providers: [{name: otel}]
    randomSamplingPercentage: 10.0
    customTags:
      team: {literal: {value: payments}}
      pod: {environment: {name: POD_NAME, defaultValue: unknown}}
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_COUNT, mode: CLIENT}
      tagOverrides:
        request_protocol: {operation: REMOVE}
    - match: {metric: ALL_METRICS}
      disabled: false
  accessLogging:
  - providers: [{name: envoy}]
    filter: {expression: "response.code >= 400"}
"#;

fn to_json(v: &Value) -> serde_json::Value {
    numbers_as_floats(serde_json::to_value(v).unwrap())
}

/// YAML's `10` and our `10.0` are the same percentage.
fn numbers_as_floats(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        J::Number(n) => n.as_f64().map(J::from).unwrap_or(J::Number(n)),
        J::Array(a) => J::Array(a.into_iter().map(numbers_as_floats).collect()),
        J::Object(o) => J::Object(
            o.into_iter()
                .map(|(k, v)| (k, numbers_as_floats(v)))
                .collect(),
        ),
        other => other,
    }
}

fn object_json(o: &Object) -> serde_json::Value {
    match o {
        Object::VirtualService(v) => numbers_as_floats(serde_json::to_value(v).unwrap()),
        Object::DestinationRule(d) => numbers_as_floats(serde_json::to_value(d).unwrap()),
        Object::ServiceEntry(o) => numbers_as_floats(serde_json::to_value(o).unwrap()),
        Object::WorkloadEntry(o) => numbers_as_floats(serde_json::to_value(o).unwrap()),
        Object::Sidecar(o) => numbers_as_floats(serde_json::to_value(o).unwrap()),
        Object::PeerAuthentication(p) => numbers_as_floats(serde_json::to_value(p).unwrap()),
        Object::AuthorizationPolicy(p) => numbers_as_floats(serde_json::to_value(p).unwrap()),
        Object::RequestAuthentication(p) => numbers_as_floats(serde_json::to_value(p).unwrap()),
        Object::Telemetry(t) => numbers_as_floats(serde_json::to_value(t).unwrap()),
        other => panic!("unexpected {}", other.kind()),
    }
}

#[test]
fn documented_examples_read_back_unchanged() {
    let (docs, errors) = manifest::parse("examples.yaml", EXAMPLES);
    assert!(
        errors.is_empty(),
        "{:#?}",
        errors.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
    assert_eq!(docs.len(), 15);
    let originals: Vec<Value> = serde_yaml_ng::Deserializer::from_str(EXAMPLES)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .collect();
    for (doc, original) in docs.iter().zip(&originals) {
        // Every field the example sets is kept, with its value.
        assert_eq!(
            object_json(&doc.object),
            to_json(original),
            "document {}",
            doc.index
        );
        // And what we write reads back to the same model.
        let written = match &doc.object {
            Object::VirtualService(v) => serde_yaml_ng::to_string(v),
            Object::DestinationRule(d) => serde_yaml_ng::to_string(d),
            Object::ServiceEntry(o) => serde_yaml_ng::to_string(o),
            Object::WorkloadEntry(o) => serde_yaml_ng::to_string(o),
            Object::Sidecar(o) => serde_yaml_ng::to_string(o),
            Object::PeerAuthentication(p) => serde_yaml_ng::to_string(p),
            Object::AuthorizationPolicy(p) => serde_yaml_ng::to_string(p),
            Object::RequestAuthentication(p) => serde_yaml_ng::to_string(p),
            Object::Telemetry(t) => serde_yaml_ng::to_string(t),
            other => panic!("unexpected {}", other.kind()),
        }
        .unwrap();
        let (again, errs) = manifest::parse("again.yaml", &written);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(again[0].object, doc.object);
    }
}

fn problems(yaml: &str) -> Vec<(String, String)> {
    let (_, errors) = manifest::parse("bad.yaml", yaml);
    errors.into_iter().map(|e| (e.field, e.message)).collect()
}

fn vs(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: r}}\nspec:\n  hosts: [r]\n  http:\n{http}"
    )
}

fn has(problems: &[(String, String)], field: &str, text: &str) -> bool {
    problems.iter().any(|(f, m)| f == field && m.contains(text))
}

#[test]
fn virtual_service_rejections_name_the_field() {
    let p = problems(&vs(
        "  - route:\n    - destination: {host: a}\n      weight: 60\n    - destination: {host: b}\n      weight: 50\n",
    ));
    assert!(
        has(&p, "spec.http[0].route", "weights sum to 110, expected 100"),
        "{p:?}"
    );
    let p = problems(&vs(
        "  - route:\n    - destination: {host: a}\n      weight: -10\n    - destination: {host: b}\n      weight: 110\n",
    ));
    assert!(has(&p, "spec.http[0].route[0].weight", "negative"), "{p:?}");
    let p = problems(&vs(
        "  - route:\n    - destination: {host: a}\n      weight: 10.5\n",
    ));
    assert!(
        has(
            &p,
            "spec.http[0].route[0].weight",
            "invalid type: floating point"
        ),
        "{p:?}"
    );
    let p = problems(&vs(
        "  - route:\n    - destination: {host: a}\n    timeout: 10\n",
    ));
    assert!(p[0].0 == "spec.http[0].timeout", "{p:?}");
    let p = problems(&vs(
        "  - route:\n    - destination: {host: a}\n    timeout: 10sec\n",
    ));
    assert!(has(&p, "spec.http[0].timeout", "not a duration"), "{p:?}");
    let p = problems(&vs(
        "  - route:\n    - destination: {host: a}\n    retries: {attempts: 3, retryOn: \"5xx,gateway-eror\"}\n",
    ));
    assert!(
        has(
            &p,
            "spec.http[0].retries.retryOn",
            "unknown retry condition \"gateway-eror\" (did you mean \"gateway-error\"?)"
        ),
        "{p:?}"
    );
    let p = problems(&vs(
        "  - match: [{uri: {regex: \"(unclosed\"}}]\n    route:\n    - destination: {host: a}\n",
    ));
    assert!(
        has(&p, "spec.http[0].match[0].uri.regex", "invalid regex"),
        "{p:?}"
    );
    let p = problems(&vs(
        "  - fault: {abort: {httpStatus: 503, percentage: {value: 120}}}\n    route:\n    - destination: {host: a}\n",
    ));
    assert!(
        has(
            &p,
            "spec.http[0].fault.abort.percentage.value",
            "outside 0..100"
        ),
        "{p:?}"
    );
    let p = problems(&vs(
        "  - route:\n    - destination: {host: a}\n    redirect: {uri: /x}\n",
    ));
    assert!(
        has(&p, "spec.http[0]", "only one of route, redirect"),
        "{p:?}"
    );
    let p = problems(&vs(
        "  - route:\n    - destination: {host: a}\n    mirror: {host: b}\n    mirrors: [{destination: {host: c}}]\n",
    ));
    assert!(
        has(&p, "spec.http[0].mirrors", "only one of mirror and mirrors"),
        "{p:?}"
    );
    let p = problems(&format!(
        "{}  exportTo: [\".\", \"Not_A_Namespace\"]\n",
        vs("  - route:\n    - destination: {host: a}\n")
    ));
    assert!(has(&p, "spec.exportTo[1]", "namespace name"), "{p:?}");
    let p = problems(&vs("  - route:\n    - destination: {hots: a}\n"));
    assert!(
        has(
            &p,
            "spec.http[0].route[0].destination.hots",
            "did you mean \"host\"?"
        ),
        "{p:?}"
    );
    let p = problems(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hsts: [r]\n",
    );
    assert!(has(&p, "spec.hsts", "did you mean \"hosts\"?"), "{p:?}");
    let p =
        problems("apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: {name: r}\n");
    assert!(
        has(
            &p,
            "apiVersion",
            "networking.istio.io/v1alpha3, networking.istio.io/v1beta1, networking.istio.io/v1"
        ),
        "{p:?}"
    );
    let p = problems(
        "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: f}\n",
    );
    assert!(
        has(&p, "spec", "EnvoyFilter is not supported here"),
        "{p:?}"
    );
    let p =
        problems("apiVersion: networking.istio.io/v1\nkind: VirtualServce\nmetadata: {name: f}\n");
    assert!(has(&p, "kind", "did you mean \"VirtualService\"?"), "{p:?}");
}

fn dr(policy: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: d}}\nspec:\n  host: r\n{policy}"
    )
}

#[test]
fn destination_rule_rejections_name_the_field() {
    let p = problems(&dr(
        "  trafficPolicy: {loadBalancer: {simple: ROUND_ROBBIN}}\n",
    ));
    assert!(
        has(
            &p,
            "spec.trafficPolicy.loadBalancer.simple",
            "\"ROUND_ROBBIN\" is not one of"
        ),
        "{p:?}"
    );
    let p = problems(&dr(
        "  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: a, useSourceIp: true}}}\n",
    ));
    assert!(
        has(
            &p,
            "spec.trafficPolicy.loadBalancer.consistentHash",
            "exactly one"
        ),
        "{p:?}"
    );
    let p = problems(&dr(
        "  trafficPolicy: {outlierDetection: {interval: 5, maxEjectionPercent: 150}}\n",
    ));
    assert!(
        p.iter()
            .any(|(f, _)| f == "spec.trafficPolicy.outlierDetection.interval"),
        "{p:?}"
    );
    let p = problems(&dr(
        "  trafficPolicy: {outlierDetection: {interval: 5x, maxEjectionPercent: 150}}\n",
    ));
    assert!(
        has(
            &p,
            "spec.trafficPolicy.outlierDetection.interval",
            "not a duration"
        ),
        "{p:?}"
    );
    assert!(
        has(
            &p,
            "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
            "outside 0..100"
        ),
        "{p:?}"
    );
    let p = problems(&dr("  trafficPolicy: {tls: {mode: STRICT}}\n"));
    assert!(
        has(
            &p,
            "spec.trafficPolicy.tls.mode",
            "not one of DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL"
        ),
        "{p:?}"
    );
    let p = problems(&dr(
        "  trafficPolicy: {portLevelSettings: [{port: {number: 443}, tls: {mode: MUTUAL, caCertificates: certs/ca.pem}}]}\n",
    ));
    let at = "spec.trafficPolicy.portLevelSettings[0].tls";
    assert!(
        has(
            &p,
            &format!("{at}.clientCertificate"),
            "required with mode MUTUAL"
        ),
        "{p:?}"
    );
    assert!(
        has(&p, &format!("{at}.privateKey"), "required with mode MUTUAL"),
        "{p:?}"
    );
    assert!(
        has(&p, &format!("{at}.caCertificates"), "absolute path"),
        "{p:?}"
    );
    assert!(
        problems(&dr(
            "  trafficPolicy: {tls: {mode: MUTUAL, credentialName: c}}\n"
        ))
        .is_empty()
    );
    let p = problems(&dr(
        "  subsets: [{name: v1, labels: {v: a}}, {name: v1, labels: {v: b}}]\n",
    ));
    assert!(has(&p, "spec.subsets[1].name", "defined twice"), "{p:?}");
    let p = problems(&dr(
        "  trafficPolicy: {portLevelSettings: [{loadBalancer: {simple: RANDOM}}]}\n",
    ));
    assert!(
        has(
            &p,
            "spec.trafficPolicy.portLevelSettings[0].port.number",
            "required"
        ),
        "{p:?}"
    );
    let p = problems(&dr(
        "  trafficPolicy: {connectionPool: {http: {http2MaxRequests: -1, h2UpgradePolicy: SOMETIMES}}}\n",
    ));
    assert!(
        has(
            &p,
            "spec.trafficPolicy.connectionPool.http.http2MaxRequests",
            "negative"
        ),
        "{p:?}"
    );
    assert!(
        has(
            &p,
            "spec.trafficPolicy.connectionPool.http.h2UpgradePolicy",
            "not one of"
        ),
        "{p:?}"
    );
    let p = problems(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec: {}\n",
    );
    assert!(has(&p, "spec.host", "required"), "{p:?}");
}

fn security(kind: &str, spec: &str) -> String {
    format!("apiVersion: security.istio.io/v1\nkind: {kind}\nmetadata: {{name: p}}\nspec:\n{spec}")
}

#[test]
fn security_and_telemetry_rejections_name_the_field() {
    let p = problems(&security(
        "PeerAuthentication",
        "  portLevelMtls:\n    8080: {mode: DISABLE}\n",
    ));
    assert!(
        has(&p, "spec.portLevelMtls", "needs a workload selector"),
        "{p:?}"
    );
    let p = problems(&security("PeerAuthentication", "  mtls: {mode: strict}\n"));
    assert!(
        has(
            &p,
            "spec.mtls.mode",
            "not one of UNSET, DISABLE, PERMISSIVE, STRICT"
        ),
        "{p:?}"
    );
    let p = problems(&security(
        "RequestAuthentication",
        "  jwtRules:\n  - issuer: a\n    jwks: '{\"keys\": []}'\n    jwksUri: https://x/jwks\n",
    ));
    assert!(
        has(&p, "spec.jwtRules[0]", "only one of jwks and jwksUri"),
        "{p:?}"
    );
    let p = problems(&security(
        "RequestAuthentication",
        "  jwtRules:\n  - jwksUri: ftp://x\n",
    ));
    assert!(has(&p, "spec.jwtRules[0].issuer", "required"), "{p:?}");
    assert!(
        has(&p, "spec.jwtRules[0].jwksUri", "not an http(s) URL"),
        "{p:?}"
    );
    let p = problems(&security(
        "AuthorizationPolicy",
        "  rules:\n  - from:\n    - source: {principals: [\"cluster.local/ns/default\"], ipBlocks: [\"10.0.0.0/40\"]}\n",
    ));
    assert!(
        has(
            &p,
            "spec.rules[0].from[0].source.principals[0]",
            "not a SPIFFE path"
        ),
        "{p:?}"
    );
    assert!(
        has(
            &p,
            "spec.rules[0].from[0].source.ipBlocks[0]",
            "not an IP address or CIDR"
        ),
        "{p:?}"
    );
    let p = problems(&security(
        "AuthorizationPolicy",
        "  action: CUSTOM\n  rules:\n  - to: [{operation: {ports: [\"http\"]}}]\n    when: [{key: request.colour, values: [red]}]\n",
    ));
    assert!(
        has(&p, "spec.provider", "required with action CUSTOM"),
        "{p:?}"
    );
    assert!(
        has(&p, "spec.rules[0].to[0].operation.ports[0]", "not a port"),
        "{p:?}"
    );
    assert!(
        has(
            &p,
            "spec.rules[0].when[0].key",
            "unknown key \"request.colour\""
        ),
        "{p:?}"
    );
    let p = problems(&security("AuthorizationPolicy", "  action: ALOW\n"));
    assert!(
        has(&p, "spec.action", "not one of ALLOW, DENY, AUDIT, CUSTOM"),
        "{p:?}"
    );
    let p = problems(
        "apiVersion: telemetry.istio.io/v1alpha1\nkind: Telemetry\nmetadata: {name: t}\nspec:\n  tracing: [{randomSamplingPercentage: 120}]\n  metrics: [{overrides: [{match: {metric: REQUESTS}}]}]\n",
    );
    assert!(
        has(
            &p,
            "spec.tracing[0].randomSamplingPercentage",
            "outside 0..100"
        ),
        "{p:?}"
    );
    assert!(
        has(
            &p,
            "spec.metrics[0].overrides[0].match.metric",
            "not one of ALL_METRICS"
        ),
        "{p:?}"
    );
}

#[test]
fn service_entry_and_sidecar_rejections_name_the_field() {
    let se = |spec: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: s}}\nspec:\n{spec}"
        )
    };
    let p = problems(&se(
        "  hosts: [\"*.example.com\"]\n  resolution: DNS\n  ports: [{number: 443, name: https, protocol: HTTPZ}]\n",
    ));
    assert!(
        has(
            &p,
            "spec.hosts[0]",
            "wildcard host cannot be resolved with DNS"
        ),
        "{p:?}"
    );
    assert!(
        has(&p, "spec.ports[0].protocol", "not one of HTTP"),
        "{p:?}"
    );
    let p = problems(&se(
        "  hosts: [db]\n  resolution: STATIC\n  ports: [{name: a}]\n  addresses: [not-an-ip]\n",
    ));
    assert!(
        has(&p, "spec.endpoints", "STATIC resolution needs endpoints"),
        "{p:?}"
    );
    assert!(has(&p, "spec.ports[0].number", "required"), "{p:?}");
    assert!(has(&p, "spec.addresses[0]", "not an IP address"), "{p:?}");
    let p = problems(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s}\nspec:\n  egress: [{hosts: [reviews]}]\n  outboundTrafficPolicy: {mode: DENY_ALL}\n",
    );
    assert!(
        has(&p, "spec.egress[0].hosts[0]", "not namespace/host"),
        "{p:?}"
    );
    assert!(
        has(
            &p,
            "spec.outboundTrafficPolicy.mode",
            "not one of REGISTRY_ONLY, ALLOW_ANY"
        ),
        "{p:?}"
    );
    let p = problems(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: w}\nspec:\n  ports: {http: 70000}\n",
    );
    assert!(has(&p, "spec.address", "required"), "{p:?}");
    assert!(has(&p, "spec.ports.http", "not a port"), "{p:?}");
}

/// Property: any model value that serializes reads back as the same value.
fn round_trips<S>(kind: &str, seed: u64)
where
    S: crate::sample::Sample
        + serde::Serialize
        + serde::de::DeserializeOwned
        + PartialEq
        + std::fmt::Debug
        + Default,
{
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut checked = 0;
    for case in 0..400 {
        let spec = S::sample(&mut rng, 0);
        let r = crate::istio::Resource {
            api_version: "x/v1".into(),
            kind: kind.into(),
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("n".into()),
                ..Default::default()
            },
            spec,
            status: None,
        };
        let Ok(text) = serde_yaml_ng::to_string(&r) else {
            continue;
        };
        let back: crate::istio::Resource<S> = serde_yaml_ng::from_str(&text)
            .unwrap_or_else(|e| panic!("{kind} case {case} (seed {seed}): {e}\n{text}"));
        assert_eq!(back, r, "{kind} case {case} (seed {seed}):\n{text}");
        checked += 1;
    }
    // Serializing a model value must not fail either.
    assert_eq!(
        checked, 400,
        "{kind}: only {checked} of 400 values serialized"
    );
}

#[test]
fn every_kind_round_trips_through_yaml() {
    use crate::istio::{destination_rule, security, service_entry, telemetry, virtual_service};
    for seed in [1, 2, 3] {
        round_trips::<virtual_service::VirtualServiceSpec>("VirtualService", seed);
        round_trips::<destination_rule::DestinationRuleSpec>("DestinationRule", seed);
        round_trips::<service_entry::ServiceEntrySpec>("ServiceEntry", seed);
        round_trips::<service_entry::WorkloadEntrySpec>("WorkloadEntry", seed);
        round_trips::<service_entry::SidecarSpec>("Sidecar", seed);
        round_trips::<security::PeerAuthenticationSpec>("PeerAuthentication", seed);
        round_trips::<security::AuthorizationPolicySpec>("AuthorizationPolicy", seed);
        round_trips::<security::RequestAuthenticationSpec>("RequestAuthentication", seed);
        round_trips::<telemetry::TelemetrySpec>("Telemetry", seed);
        round_trips::<crate::linkerd::ServiceProfileSpec>("ServiceProfile", seed);
        round_trips::<crate::linkerd::TrafficSplitSpec>("TrafficSplit", seed);
        round_trips::<crate::policy::LocalRateLimitSpec>("LocalRateLimit", seed);
    }
}
