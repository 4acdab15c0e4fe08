use super::*;

/// A request for the pure evaluations' tests.
pub(crate) struct Req {
    pub host: &'static str,
    pub method: &'static str,
    pub path: &'static str,
    pub headers: Vec<(&'static str, &'static str)>,
}

impl Http for Req {
    fn host(&self) -> &str {
        self.host
    }
    fn method(&self) -> &str {
        self.method
    }
    fn path(&self) -> &str {
        self.path
    }
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .collect()
    }
}

const ORDERS: &str = "cluster.local/ns/shop/sa/order-service";

fn http(method: &'static str, path: &'static str) -> Req {
    Req {
        host: "payments.shop.svc.cluster.local:8080",
        method,
        path,
        headers: vec![("x-tenant", "acme"), ("x-tenant", "beta")],
    }
}

fn request<'a>(
    principal: &'a str,
    http: Option<&'a dyn Http>,
    auth: Option<&'a Auth>,
) -> Request<'a> {
    let namespace = principal
        .split_once("/ns/")
        .and_then(|(_, r)| r.split_once('/'))
        .map_or("", |(ns, _)| ns);
    Request {
        principal,
        namespace,
        source_ip: "10.244.0.7".parse().unwrap(),
        remote_ip: "192.0.2.9".parse().unwrap(),
        destination_ip: "10.244.0.9".parse().unwrap(),
        destination_port: 8080,
        sni: "outbound_.8080_._.payments",
        http,
        auth,
    }
}

/// A policy from Istio YAML, through the controller's translation.
fn policy(yaml: &str) -> AuthzPolicy {
    let r: crate::istio::Resource<crate::istio::security::AuthorizationPolicySpec> =
        serde_yaml_ng::from_str(yaml).unwrap();
    compile(&r)
}

fn allowed(policies: &[AuthzPolicy], req: &Request<'_>) -> bool {
    decide(policies, req).allowed
}

const PAYMENTS: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: payments, namespace: shop}
spec:
  selector: {matchLabels: {app: payment-service}}
  action: ALLOW
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/shop/sa/order-service"]}
    to:
    - operation: {methods: ["POST"], paths: ["/api/payments", "/api/payments/*"]}
"#;

#[test]
fn the_payment_policy_allows_its_principal_its_method_and_its_paths_only() {
    let p = [policy(PAYMENTS)];
    let post = http("POST", "/api/payments/42?retry=1");
    let d = decide(&p, &request(ORDERS, Some(&post), None));
    assert!(d.allowed);
    assert_eq!(
        d.reason,
        Some(Reason {
            policy: "shop/payments".into(),
            rule: Some(0)
        })
    );
    let exact = http("POST", "/api/payments");
    assert!(allowed(&p, &request(ORDERS, Some(&exact), None)));
    let get = http("GET", "/api/payments/42");
    let d = decide(&p, &request(ORDERS, Some(&get), None));
    assert!(!d.allowed);
    assert_eq!(d.reason.unwrap().rule, None);
    let other = http("POST", "/api/refunds");
    assert!(!allowed(&p, &request(ORDERS, Some(&other), None)));
    assert!(!allowed(
        &p,
        &request("cluster.local/ns/shop/sa/web", Some(&post), None)
    ));
    // Plaintext: no principal.
    assert!(!allowed(&p, &request("", Some(&post), None)));
}

#[test]
fn deny_all_allow_all_and_no_policy() {
    let get = http("GET", "/");
    let req = request(ORDERS, Some(&get), None);
    let deny_all = policy(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-all, namespace: shop}\nspec: {}\n",
    );
    assert!(!allowed(&[deny_all], &req));
    let allow_all = policy(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-all, namespace: shop}\nspec: {rules: [{}]}\n",
    );
    assert!(allowed(std::slice::from_ref(&allow_all), &req));
    let d = decide(&[], &req);
    assert!(d.allowed && d.reason.is_none());
    // DENY comes before ALLOW; AUDIT only records.
    let deny_get = policy(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: no-get, namespace: shop}\nspec: {action: DENY, rules: [{to: [{operation: {methods: [GET]}}]}]}\n",
    );
    let audit = policy(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: watch, namespace: shop}\nspec: {action: AUDIT, rules: [{}]}\n",
    );
    let d = decide(&[allow_all.clone(), deny_get, audit.clone()], &req);
    assert!(!d.allowed);
    assert_eq!(d.reason.unwrap().policy, "shop/no-get");
    assert_eq!(d.audited, ["shop/watch"]);
    let d = decide(&[audit], &req);
    assert!(d.allowed && d.audited == ["shop/watch"]);
}

#[test]
fn strings_paths_hosts_and_not_forms() {
    assert!(string_matches("*", "x") && !string_matches("*", ""));
    assert!(string_matches("/api/*", "/api/x") && !string_matches("/api/*", "/apix"));
    assert!(string_matches("*.png", "/a/b.png") && !string_matches("*.png", "/a/b.jpg"));
    assert!(string_matches("/exact", "/exact") && !string_matches("/exact", "/exact/"));
    let h = |p: &str, host: &'static str| {
        let r = Req {
            host,
            method: "GET",
            path: "/",
            headers: vec![],
        };
        let o = AuthzOperation {
            hosts: vec![p.into()],
            ..Default::default()
        };
        operation(&o, &request("", Some(&r), None)) == Fit::Yes
    };
    assert!(h(
        "Payments.Shop.svc.cluster.local",
        "payments.shop.svc.cluster.local:8080"
    ));
    assert!(h(
        "*.shop.svc.cluster.local",
        "PAYMENTS.shop.svc.cluster.local"
    ));
    assert!(!h("payments", "payments.shop.svc.cluster.local"));
    let get = http("GET", "/admin/x");
    let not_admin = AuthzOperation {
        not_paths: vec!["/admin/*".into()],
        ..Default::default()
    };
    assert_eq!(
        operation(&not_admin, &request(ORDERS, Some(&get), None)),
        Fit::No
    );
    let ports = AuthzOperation {
        ports: vec![8080],
        not_methods: vec!["DELETE".into()],
        ..Default::default()
    };
    assert_eq!(
        operation(&ports, &request(ORDERS, Some(&get), None)),
        Fit::Yes
    );
    let other_port = AuthzOperation {
        not_ports: vec![8080],
        ..Default::default()
    };
    assert_eq!(
        operation(&other_port, &request(ORDERS, None, None)),
        Fit::No
    );
}

#[test]
fn sources_by_principal_namespace_ip_and_token() {
    let get = http("GET", "/");
    let auth = Auth {
        principal: "https://issuer.example/alice".into(),
        ..Default::default()
    };
    let req = request(ORDERS, Some(&get), Some(&auth));
    let fits = |s: AuthzSource| source(&s, &req);
    assert_eq!(
        fits(AuthzSource {
            principals: vec!["*/sa/order-service".into()],
            ..Default::default()
        }),
        Fit::Yes
    );
    assert_eq!(
        fits(AuthzSource {
            not_principals: vec!["*".into()],
            ..Default::default()
        }),
        Fit::No
    );
    assert_eq!(
        fits(AuthzSource {
            namespaces: vec!["shop".into()],
            ..Default::default()
        }),
        Fit::Yes
    );
    assert_eq!(
        fits(AuthzSource {
            service_accounts: vec!["shop/order-service".into()],
            ..Default::default()
        }),
        Fit::Yes
    );
    assert_eq!(
        fits(AuthzSource {
            not_service_accounts: vec!["shop/*".into()],
            ..Default::default()
        }),
        Fit::No
    );
    assert_eq!(
        fits(AuthzSource {
            not_namespaces: vec!["shop".into()],
            ..Default::default()
        }),
        Fit::No
    );
    assert_eq!(
        fits(AuthzSource {
            ip_blocks: vec!["10.244.0.0/16".into()],
            ..Default::default()
        }),
        Fit::Yes
    );
    assert_eq!(
        fits(AuthzSource {
            ip_blocks: vec!["10.244.0.8".into()],
            ..Default::default()
        }),
        Fit::No
    );
    assert_eq!(
        fits(AuthzSource {
            not_ip_blocks: vec!["10.244.0.7/32".into()],
            ..Default::default()
        }),
        Fit::No
    );
    assert_eq!(
        fits(AuthzSource {
            remote_ip_blocks: vec!["192.0.2.0/24".into()],
            ..Default::default()
        }),
        Fit::Yes
    );
    assert_eq!(
        fits(AuthzSource {
            not_remote_ip_blocks: vec!["192.0.2.9".into()],
            ..Default::default()
        }),
        Fit::No
    );
    assert_eq!(
        fits(AuthzSource {
            request_principals: vec!["https://issuer.example/*".into()],
            ..Default::default()
        }),
        Fit::Yes
    );
    assert_eq!(
        fits(AuthzSource {
            not_request_principals: vec!["*".into()],
            ..Default::default()
        }),
        Fit::No
    );
    // No token: no request principal.
    let anonymous = request(ORDERS, Some(&get), None);
    let s = AuthzSource {
        request_principals: vec!["*".into()],
        ..Default::default()
    };
    assert_eq!(source(&s, &anonymous), Fit::No);
    assert!(in_block("2001:db8::/32", "2001:db8::1".parse().unwrap()));
    assert!(!in_block("10.0.0.0/8", "2001:db8::1".parse().unwrap()));
}

#[test]
fn every_when_key() {
    let get = http("GET", "/");
    let auth = Auth {
        principal: "iss/alice".into(),
        audiences: vec!["payments".into(), "orders".into()],
        presenter: "web-app".into(),
        claims: serde_json::json!({"role": "admin", "groups": ["dev", "ops"], "realm": {"access": {"level": "gold"}}}),
    };
    let req = request(ORDERS, Some(&get), Some(&auth));
    let when = |key: &str, values: &[&str]| {
        let c = AuthzCondition {
            key: key.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
            not_values: vec![],
        };
        condition(&c, &req)
    };
    for (key, yes_value, no_value) in [
        ("source.ip", "10.244.0.0/24", "10.245.0.0/16"),
        ("remote.ip", "192.0.2.9", "192.0.2.10"),
        ("destination.ip", "10.244.0.9/32", "10.244.0.10"),
        ("destination.port", "8080", "9090"),
        ("source.namespace", "shop", "other"),
        ("source.principal", ORDERS, "cluster.local/ns/shop/sa/web"),
        ("source.serviceAccount", "shop/order-service", "shop/web"),
        ("connection.sni", "outbound_*", "inbound*"),
        ("request.headers[X-Tenant]", "beta", "gamma"),
        ("request.auth.principal", "iss/*", "other/*"),
        ("request.auth.audiences", "orders", "billing"),
        ("request.auth.presenter", "web-app", "cli"),
        ("request.auth.claims[role]", "admin", "user"),
        ("request.auth.claims[groups]", "ops", "qa"),
        (
            "request.auth.claims[realm][access][level]",
            "gold",
            "silver",
        ),
    ] {
        assert_eq!(when(key, &[no_value, yes_value]), Fit::Yes, "{key}");
        assert_eq!(when(key, &[no_value]), Fit::No, "{key}");
    }
    let c = AuthzCondition {
        key: "request.auth.claims[role]".into(),
        values: vec![],
        not_values: vec!["admin".into()],
    };
    assert_eq!(condition(&c, &req), Fit::No);
    assert_eq!(when("request.auth.claims[missing]", &["*"]), Fit::No);
}

#[test]
fn on_tcp_http_only_rules_match_nothing_in_allow_and_everything_in_deny() {
    let tcp = request(ORDERS, None, None);
    let allow_paths = policy(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a, namespace: shop}\nspec: {rules: [{to: [{operation: {paths: [\"/x\"]}}]}]}\n",
    );
    assert!(!allowed(&[allow_paths], &tcp));
    let allow_port = policy(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a, namespace: shop}\nspec: {rules: [{to: [{operation: {ports: [\"8080\"]}}]}]}\n",
    );
    assert!(allowed(std::slice::from_ref(&allow_port), &tcp));
    let deny_methods = policy(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: d, namespace: shop}\nspec: {action: DENY, rules: [{to: [{operation: {methods: [GET]}}]}]}\n",
    );
    assert!(!allowed(&[allow_port.clone(), deny_methods.clone()], &tcp));
    let deny_header = policy(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: d, namespace: shop}\nspec: {action: DENY, rules: [{when: [{key: \"request.headers[x]\", values: [\"1\"]}]}]}\n",
    );
    assert!(!allowed(&[allow_port.clone(), deny_header], &tcp));
    // The same DENY on HTTP judges the method.
    let post = http("POST", "/");
    assert!(allowed(
        &[allow_port, deny_methods],
        &request(ORDERS, Some(&post), None)
    ));
}
