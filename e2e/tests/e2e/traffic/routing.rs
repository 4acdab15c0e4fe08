//! Routing: the seed canary with its header override, the 90/10 split on
//! 10,000 requests, a live change under load, rewrites, redirects, direct
//! responses, header operations and CORS.

use std::time::Duration;

use e2e::{Cluster, client, needs_root, text, versioned};

use super::*;

const SUBSETS: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: route}
spec:
  host: web
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#;

/// The seed canary: 90/10 with an `x-canary: "true"` override.
const CANARY: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: route}
spec:
  hosts: [web]
  http:
  - match:
    - headers:
        x-canary: {exact: "true"}
    route:
    - destination: {host: web, subset: v2}
  - route:
    - destination: {host: web, subset: v1}
      weight: 90
    - destination: {host: web, subset: v2}
      weight: 10
"#;

const ALL_V2: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: route}
spec:
  hosts: [web]
  http:
  - route:
    - destination: {host: web, subset: v2}
"#;

const STABLE_CANARY: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: stable, namespace: route}
spec:
  hosts: [stable]
  http:
  - route:
    - destination: {host: stable}
      weight: 95
    - destination: {host: canary.route.svc.cluster.local}
      weight: 5
"#;

const API: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: route}
spec:
  host: api
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: route}
spec:
  hosts: [api.route.svc.cluster.local]
  http:
  - name: legacy
    match: [{uri: {prefix: /old/}}]
    redirect: {uri: /new/, authority: api.example}
  - name: static
    match: [{uri: {exact: /hello}}]
    directResponse: {status: 200, body: {string: "hello from the mesh"}}
  - name: no-deletes
    match: [{method: {exact: DELETE}}]
    directResponse: {status: 405}
  - name: from-client
    match: [{uri: {exact: /whoami}, sourceLabels: {app: client}, port: 8080}]
    directResponse: {status: 200, body: {string: "a meshed client"}}
  - name: any-case
    match: [{uri: {prefix: /case/}, ignoreUriCase: true}]
    directResponse: {status: 200, body: {string: "any case"}}
  - name: by-regex
    match: [{uri: {regex: "/items/[0-9]+"}}]
    directResponse: {status: 200, body: {string: "an item"}}
  - name: not-debug
    match: [{uri: {exact: /debug}, withoutHeaders: {x-debug: {}}}]
    directResponse: {status: 200, body: {string: "no debug"}}
  - name: by-authority
    match: [{authority: {prefix: "api-admin"}}]
    directResponse: {status: 403}
  - name: v1
    match: [{uri: {prefix: /v1/}}]
    rewrite: {uri: /}
    route: [{destination: {host: api, subset: v1}}]
  - name: v2
    match: [{uri: {prefix: /v2/}}, {queryParams: {version: {exact: "2"}}}]
    rewrite: {uri: /, authority: api-v2.internal}
    route: [{destination: {host: api, subset: v2}}]
    headers:
      request: {set: {x-route: v2}, remove: [x-secret]}
      response: {add: {x-served-by: mesh}}
    corsPolicy:
      allowOrigins: [{exact: "https://shop.example"}]
      allowMethods: [GET, POST]
      maxAge: 1h
  - route: [{destination: {host: api, subset: v1}}]
"#;

#[test]
#[ignore = "needs root"]
fn routing_canary_override_rewrites_and_live_changes() {
    needs_root();
    let c = Cluster::up("routing", &[]);
    c.apply(&client("route", true));
    c.apply(&versioned(
        "route",
        "web",
        8080,
        &[("v1", 2, ""), ("v2", 1, "")],
    ));
    c.apply(&versioned(
        "route",
        "api",
        8080,
        &[("v1", 1, ""), ("v2", 1, "")],
    ));
    c.apply(&versioned("route", "stable", 8080, &[("v1", 1, "")]));
    c.apply(&versioned("route", "canary", 8080, &[("v1", 1, "")]));
    for d in [
        "client",
        "web-v1",
        "web-v2",
        "api-v1",
        "api-v2",
        "stable-v1",
        "canary-v1",
    ] {
        c.wait_ready("route", d, if d == "web-v1" { 2 } else { 1 });
    }
    // Plain balancing first: all three pods answer.
    let out = curl(&c, "route", &["http://web:8080/[1-30]"]);
    assert_eq!(count(&out, "web-v1"), 20, "{out}");

    c.apply(&format!("{SUBSETS}---{CANARY}"));
    let took = until(
        "the override to reach the proxy",
        Duration::from_secs(5),
        || {
            let out = curl(
                &c,
                "route",
                &["-H", "x-canary: true", "http://web:8080/[1-5]"],
            );
            count(&out, "web-v2") == 5
        },
    );
    assert!(
        took < Duration::from_secs(2),
        "routing took {took:?} to apply"
    );
    let out = curl(
        &c,
        "route",
        &["-H", "x-canary: true", "http://web:8080/[1-200]"],
    );
    assert_eq!(count(&out, "web-v2"), 200, "override leaked");

    let mut steps = e2e::Steps::new();
    steps.step(
        "meshctl explain names the route, the subsets and their endpoints",
        || {
            let explain = |args: &[&str]| -> serde_json::Value {
                let mut all = vec![
                    "explain",
                    "--from",
                    "deploy/client",
                    "-n",
                    "route",
                    "-o",
                    "json",
                ];
                all.extend(args);
                let out = c.meshctl_top(&all);
                serde_json::from_slice(&out.stdout)
                    .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)))
            };
            let pods = |d: &serde_json::Value| -> Vec<String> {
                d["endpoints"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| {
                        e["pod"]
                            .as_str()
                            .unwrap()
                            .rsplit_once('-')
                            .unwrap()
                            .0
                            .to_string()
                    })
                    .collect()
            };
            let x = explain(&["-H", "x-canary: true", "http://web:8080/"]);
            let route = &x["outbound"]["route"];
            assert_eq!(route["index"], 0, "{x}");
            assert_eq!(x["outbound"]["virtual_service"], "route/web", "{x}");
            let d = &route["destinations"][0];
            assert_eq!(
                (&d["subset"], &d["weight"]),
                (&"v2".into(), &100.into()),
                "{x}"
            );
            assert!(
                pods(d).iter().all(|p| p.starts_with("route/web-v2-")),
                "{x}"
            );
            let x = explain(&["http://web:8080/"]);
            let route = &x["outbound"]["route"];
            assert_eq!(route["index"], 1, "{x}");
            let (v1, v2) = (&route["destinations"][0], &route["destinations"][1]);
            assert_eq!(
                (&v1["subset"], &v1["weight"]),
                (&"v1".into(), &90.into()),
                "{x}"
            );
            assert_eq!(pods(v1).len(), 2, "{x}");
            assert_eq!(
                (&v2["subset"], &v2["weight"]),
                (&"v2".into(), &10.into()),
                "{x}"
            );
            assert_eq!(x["inbound"].as_array().map(Vec::len), Some(3), "{x}");
        },
    );
    steps.step(
        "The 90/10 split, on 10,000 requests: within 1.5 points",
        || {
            // The 90/10 split, on 10,000 requests: within 1.5 points.
            let out = curl(&c, "route", &["http://web:8080/[1-10000]"]);
            let (v1, v2) = (count(&out, "web-v1"), count(&out, "web-v2"));
            assert_eq!(v1 + v2, 10_000);
            let share = v2 as f64 / 100.0;
            assert!((share - 10.0).abs() <= 1.5, "canary share {share}%");
        },
    );

    steps.step(
        "95/5 across two hosts (a stable/canary pair of Services)",
        || {
            // 95/5 across two hosts (a stable/canary pair of Services).
            c.apply(STABLE_CANARY);
            until("the host split", Duration::from_secs(5), || {
                count(
                    &curl(&c, "route", &["http://stable:8080/[1-100]"]),
                    "canary-v1",
                ) > 0
            });
            let out = curl(&c, "route", &["http://stable:8080/[1-10000]"]);
            let (s, k) = (count(&out, "stable-v1"), count(&out, "canary-v1"));
            assert_eq!(s + k, 10_000);
            let share = k as f64 / 100.0;
            assert!((share - 5.0).abs() <= 1.5, "canary host share {share}%");
        },
    );

    steps.step(
        "A routing change under constant load loses no request",
        || {
            // A routing change under constant load loses no request.
            let load = c.spawn_exec(
                "route",
                "deploy/client",
                &[
                    "curl",
                    "-sS",
                    "-w",
                    "%{http_code}\n",
                    "http://web:8080/[1-3000]",
                ],
            );
            std::thread::sleep(Duration::from_millis(700));
            c.apply(ALL_V2);
            let out = text(&load.wait_with_output().unwrap().stdout);
            let codes: Vec<&str> = out.lines().filter(|l| !l.starts_with("pod=")).collect();
            assert_eq!(codes.len(), 3000, "{out}");
            assert!(codes.iter().all(|c| *c == "200"), "a request failed");
            let bodies: Vec<&str> = out.lines().filter(|l| l.starts_with("pod=")).collect();
            assert!(
                bodies[bodies.len() - 200..]
                    .iter()
                    .all(|b| b.starts_with("pod=web-v2")),
                "the change did not apply to the running connection"
            );
        },
    );

    steps.step(
        "Rewrites, redirects, direct responses, headers and CORS",
        || {
            // Rewrites, redirects, direct responses, headers and CORS.
            c.apply(API);
            until("the api routes", Duration::from_secs(5), || {
                curl(&c, "route", &["http://api:8080/hello"]) == "hello from the mesh"
            });
            let out = curl(&c, "route", &["-si", "http://api:8080/old/page"]);
            assert!(out.starts_with("HTTP/1.1 301"), "{out}");
            assert!(out.contains("location: http://api.example/new/"), "{out}");
            let out = curl(
                &c,
                "route",
                &["-si", "-X", "DELETE", "http://api:8080/v1/x"],
            );
            assert!(out.starts_with("HTTP/1.1 405"), "{out}");
            let out = curl(&c, "route", &["http://api:8080/v1/items?a=1"]);
            assert!(
                out.starts_with("pod=api-v1") && out.contains("path=/items?a=1"),
                "{out}"
            );
            let out = curl(
                &c,
                "route",
                &["-si", "-H", "x-secret: s3", "http://api:8080/v2/items"],
            );
            assert!(out.contains("x-served-by: mesh"), "{out}");
            let body = out.lines().last().unwrap();
            assert!(body.starts_with("pod=api-v2"), "{out}");
            assert!(body.contains("path=/items host=api-v2.internal"), "{out}");
            assert!(
                body.contains("h:x-route=v2") && !body.contains("x-secret"),
                "{out}"
            );
            assert_eq!(
                curl(&c, "route", &["http://api:8080/whoami"]),
                "a meshed client"
            );
            assert_eq!(curl(&c, "route", &["http://api:8080/CASE/x"]), "any case");
            assert_eq!(curl(&c, "route", &["http://api:8080/items/42"]), "an item");
            let out = curl(&c, "route", &["http://api:8080/items/42/parts"]);
            assert!(out.starts_with("pod=api-v1"), "regex is anchored: {out}");
            assert_eq!(curl(&c, "route", &["http://api:8080/debug"]), "no debug");
            let out = curl(&c, "route", &["-H", "x-debug: 1", "http://api:8080/debug"]);
            assert!(out.starts_with("pod=api-v1"), "withoutHeaders: {out}");
            let out = curl(
                &c,
                "route",
                &["-si", "-H", "host: api-admin.route", "http://api:8080/"],
            );
            assert!(out.starts_with("HTTP/1.1 403"), "authority: {out}");
            let out = curl(&c, "route", &["http://api:8080/any?version=2"]);
            assert!(out.starts_with("pod=api-v2"), "query match: {out}");
            let out = curl(&c, "route", &["http://api:8080/any"]);
            assert!(out.starts_with("pod=api-v1"), "default route: {out}");
            // A preflight from an allowed origin is answered by the proxy.
            let preflight = |origin: &str| {
                curl(
                    &c,
                    "route",
                    &[
                        "-si",
                        "-X",
                        "OPTIONS",
                        "-H",
                        &format!("origin: {origin}"),
                        "-H",
                        "access-control-request-method: POST",
                        "http://api:8080/v2/items",
                    ],
                )
            };
            let out = preflight("https://shop.example");
            assert!(
                out.contains("access-control-allow-origin: https://shop.example")
                    && out.contains("access-control-allow-methods: GET,POST")
                    && out.contains("access-control-max-age: 3600")
                    && !out.contains("pod="),
                "{out}"
            );
            let out = preflight("https://evil.example");
            assert!(!out.contains("access-control-allow-origin"), "{out}");
            assert!(
                out.contains("pod=api-v2"),
                "unmatched preflights go on: {out}"
            );
        },
    );

    steps.finish();
}
