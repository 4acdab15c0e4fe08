//! Traffic management applied through the controller and enforced by the
//! client's proxy, with curl against the traffic test server: routing and
//! canaries, rewrites and friends, resilience (retries, timeouts, faults)
//! and balancing (subsets' policies, consistent hashing, mirroring).

use std::time::{Duration, Instant};

use e2e::{Cluster, can_run, client, text, versioned, versioned_on};

/// `curl` in the client pod; stdout.
fn curl(c: &Cluster, ns: &str, args: &[&str]) -> String {
    let mut argv = vec!["curl", "-sS", "--max-time", "60"];
    argv.extend(args);
    c.exec_ok(ns, "deploy/client", &argv)
}

/// `n` requests by curl, `parallel` at a time, each its own connection:
/// (status, seconds) per request.
fn requests(c: &Cluster, ns: &str, n: usize, parallel: usize, args: &[&str]) -> Vec<(u16, f64)> {
    let script = r#"n=$1; p=$2; shift 2; seq "$n" | xargs -P "$p" -I{} curl -sS --max-time 60 -o /dev/null -w '%{http_code} %{time_total}\n' "$@""#;
    let (n, parallel) = (n.to_string(), parallel.to_string());
    let mut argv = vec!["sh", "-c", script, "sh", &n, &parallel];
    argv.extend(args);
    c.exec_ok(ns, "deploy/client", &argv)
        .lines()
        .map(|l| {
            let (code, t) = l
                .split_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            (code.parse().unwrap(), t.trim().parse().unwrap())
        })
        .collect()
}

/// Bodies per pod-name prefix: how many answer lines start with
/// `pod=<prefix>`.
fn count(out: &str, prefix: &str) -> usize {
    out.lines()
        .filter(|l| l.starts_with(&format!("pod={prefix}")))
        .count()
}

/// The `/__stats` of every pod of Deployment `deploy`: (count, shadow).
fn stats(c: &Cluster, ns: &str, deploy: &str) -> Vec<(u64, u64)> {
    c.pods()
        .into_iter()
        .filter(|p| p.namespace == ns && p.deployment == deploy && p.ready)
        .map(|p| {
            let ip = p.ip.unwrap();
            let out = curl(c, ns, &[&format!("http://{ip}:8080/__stats")]);
            let num = |k: &str| {
                out.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(k))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("bad stats {out:?}"))
            };
            (num("count="), num("shadow="))
        })
        .collect()
}

fn total(s: &[(u64, u64)]) -> u64 {
    s.iter().map(|(c, _)| c).sum()
}

/// Waits (bounded) until `f` holds; returns how long it took.
fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

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
fn routing_canary_override_rewrites_and_live_changes() {
    if !can_run() {
        return;
    }
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
    for d in ["client", "web-v1", "web-v2", "api-v1", "api-v2"] {
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

    // The 90/10 split, on 10,000 requests: within 1.5 points.
    let out = curl(&c, "route", &["http://web:8080/[1-10000]"]);
    let (v1, v2) = (count(&out, "web-v1"), count(&out, "web-v2"));
    assert_eq!(v1 + v2, 10_000);
    let share = v2 as f64 / 100.0;
    assert!((share - 10.0).abs() <= 1.5, "canary share {share}%");

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
}

const FLAKY_RETRIES: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: flaky, namespace: res}
spec:
  hosts: [flaky]
  http:
  - name: timeout-only
    match: [{headers: {x-test: {exact: timeout}}}]
    timeout: 1s
    retries: {attempts: 0}
    route: [{destination: {host: flaky}}]
  - name: per-try
    match: [{headers: {x-test: {exact: per-try}}}]
    timeout: 5s
    retries: {attempts: 2, perTryTimeout: 300ms, retryOn: 5xx}
    route: [{destination: {host: flaky}}]
  - name: seed
    route: [{destination: {host: flaky}}]
    retries:
      attempts: 3
      perTryTimeout: 2s
      retryOn: 5xx,connect-failure,retriable-4xx
    timeout: 10s
"#;

const FAULTS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: flaky, namespace: res}
spec:
  hosts: [flaky]
  http:
  - name: no-fault
    match: [{headers: {x-test: {exact: none}}}]
    route: [{destination: {host: flaky, subset: good}}]
  - name: grpc-abort
    match: [{headers: {x-test: {exact: grpc}}}]
    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}
    route: [{destination: {host: flaky, subset: good}}]
  - name: always-abort
    match: [{headers: {x-test: {exact: abort}}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
    route: [{destination: {host: flaky, subset: good}}]
  - name: seed
    fault:
      delay: {fixedDelay: 5s, percentage: {value: 10}}
      abort: {httpStatus: 503, percentage: {value: 5}}
    route: [{destination: {host: flaky, subset: good}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: flaky, namespace: res}
spec:
  host: flaky
  subsets: [{name: good, labels: {version: good}}]
"#;

#[test]
fn retries_timeouts_and_faults() {
    if !can_run() {
        return;
    }
    let c = Cluster::up("resilience", &[]);
    c.apply(&client("res", true));
    c.apply(&versioned(
        "res",
        "flaky",
        8080,
        &[("good", 1, ""), ("bad", 1, "STATUS=500")],
    ));
    for d in ["client", "flaky-good", "flaky-bad"] {
        c.wait_ready("res", d, 1);
    }
    let codes = |n: usize, args: &[&str]| -> String {
        requests(&c, "res", n, 1, args)
            .iter()
            .map(|(code, _)| format!("{code}\n"))
            .collect()
    };
    // Istio's default policy does not retry a 500: half of them fail.
    let out = codes(40, &["http://flaky:8080/"]);
    assert_eq!(out.lines().filter(|l| *l == "500").count(), 20, "{out}");

    c.apply(FLAKY_RETRIES);
    until("the retry policy", Duration::from_secs(5), || {
        codes(10, &["http://flaky:8080/"])
            .lines()
            .all(|l| l == "200")
    });
    let before = total(&stats(&c, "res", "flaky-bad"));
    let out = codes(60, &["http://flaky:8080/"]);
    assert!(
        out.lines().all(|l| l == "200"),
        "retries let a 500 through: {out}"
    );
    assert!(
        total(&stats(&c, "res", "flaky-bad")) > before + 10,
        "the bad endpoint was not tried"
    );
    // retriable-4xx: a 409 everywhere is tried 1 + 3 times.
    let before = total(&stats(&c, "res", "flaky-good")) + total(&stats(&c, "res", "flaky-bad"));
    let out = codes(1, &["http://flaky:8080/conflict?status=409"]);
    assert_eq!(out.trim(), "409");
    let after = total(&stats(&c, "res", "flaky-good")) + total(&stats(&c, "res", "flaky-bad"));
    assert_eq!(after - before, 4, "attempts: 3 means four tries");
    // The route timeout answers 504 with UT in the access log.
    let start = Instant::now();
    let out = codes(
        1,
        &["-H", "x-test: timeout", "http://flaky:8080/slow?delay=3000"],
    );
    assert_eq!(out.trim(), "504");
    assert!(
        start.elapsed() < Duration::from_millis(2900),
        "{:?}",
        start.elapsed()
    );
    let logs = text(
        &c.meshctl(&["logs", "deploy/client", "-n", "res", "-c", "proxy"])
            .stdout,
    );
    assert!(
        logs.lines().any(|l| l.contains("\"response_code\":504")
            && l.contains("\"response_flags\":\"UT\"")
            && l.contains("\"route_name\":\"timeout-only\"")),
        "no UT line in the access log:\n{logs}"
    );
    // perTryTimeout: three tries of 300 ms, then 504.
    let before = total(&stats(&c, "res", "flaky-good")) + total(&stats(&c, "res", "flaky-bad"));
    let out = codes(
        1,
        &["-H", "x-test: per-try", "http://flaky:8080/slow?delay=1000"],
    );
    assert_eq!(out.trim(), "504");
    let after = total(&stats(&c, "res", "flaky-good")) + total(&stats(&c, "res", "flaky-bad"));
    assert_eq!(after - before, 3, "per-try timeouts are retried");

    // Faults: only on their route, never retried.
    c.apply(FAULTS);
    until("the fault routes", Duration::from_secs(5), || {
        codes(1, &["-H", "x-test: abort", "http://flaky:8080/"]).trim() == "503"
    });
    let before = total(&stats(&c, "res", "flaky-good"));
    let out = codes(20, &["-H", "x-test: abort", "http://flaky:8080/"]);
    assert!(out.lines().all(|l| l == "503"), "{out}");
    let out = codes(20, &["-H", "x-test: none", "http://flaky:8080/"]);
    assert!(out.lines().all(|l| l == "200"), "fault leaked: {out}");
    assert_eq!(
        total(&stats(&c, "res", "flaky-good")),
        before + 20,
        "an injected abort reached the server or was retried"
    );
    let out = curl(
        &c,
        "res",
        &[
            "-si",
            "-H",
            "x-test: grpc",
            "http://flaky:8080/pkg.Svc/Call",
        ],
    );
    assert!(out.contains("grpc-status: 14"), "{out}");
    // The seed: 10% delayed 5 s, 5% aborted with 503, on 400 requests.
    let rows = requests(&c, "res", 400, 100, &["http://flaky:8080/"]);
    let out = format!("{rows:?}");
    assert_eq!(rows.len(), 400, "{out}");
    let aborted = rows.iter().filter(|(c, _)| *c == 503).count();
    let delayed = rows.iter().filter(|(_, t)| *t >= 5.0).count();
    assert!((6..=40).contains(&aborted), "aborted {aborted} of 400");
    assert!((18..=70).contains(&delayed), "delayed {delayed} of 400");
    assert_eq!(
        rows.iter().filter(|(c, _)| *c != 503 && *c != 200).count(),
        0,
        "{out}"
    );
}

const BALANCING: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: shard, namespace: lb}
spec:
  host: shard
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: x-user-id}
  subsets:
  - name: least
    labels: {app: shard}
    trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
  - name: random
    labels: {app: shard}
    trafficPolicy: {loadBalancer: {simple: RANDOM}}
  - name: rr
    labels: {app: shard}
    trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shard, namespace: lb}
spec:
  hosts: [shard]
  http:
  - match: [{headers: {x-lb: {exact: least}}}]
    route: [{destination: {host: shard, subset: least}}]
  - match: [{headers: {x-lb: {exact: random}}}]
    route: [{destination: {host: shard, subset: random}}]
  - match: [{headers: {x-lb: {exact: rr}}}]
    route: [{destination: {host: shard, subset: rr}}]
  - route: [{destination: {host: shard}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: mir, namespace: lb}
spec:
  host: mir
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2-test, labels: {version: v2-test}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mir, namespace: lb}
spec:
  hosts: [mir]
  http:
  - route:
    - destination: {host: mir, subset: v1}
      weight: 100
    mirror: {host: mir, subset: v2-test}
    mirrorPercentage: {value: 100.0}
"#;

#[test]
fn balancing_consistent_hash_and_mirroring() {
    if !can_run() {
        return;
    }
    let c = Cluster::up("balancing", &[]);
    c.apply(&client("lb", true));
    c.apply(&versioned("lb", "shard", 8080, &[("v1", 3, "")]));
    c.apply(&versioned(
        "lb",
        "mir",
        8080,
        &[("v1", 1, ""), ("v2-test", 1, "STATUS=500,DELAY_MS=1500")],
    ));
    c.wait_ready("lb", "shard-v1", 3);
    for d in ["client", "mir-v1", "mir-v2-test"] {
        c.wait_ready("lb", d, 1);
    }
    c.apply(BALANCING);
    let pods_of = |out: &str| -> Vec<String> {
        out.lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect()
    };
    until("the hash policy", Duration::from_secs(5), || {
        let out = curl(
            &c,
            "lb",
            &["-H", "x-user-id: u0", "http://shard:8080/[1-6]"],
        );
        let p = pods_of(&out);
        p.iter().all(|x| *x == p[0])
    });
    // The same user always reaches the same pod; users spread out.
    let mut homes = std::collections::BTreeSet::new();
    for u in 0..20 {
        let out = curl(
            &c,
            "lb",
            &[
                "-H",
                &format!("x-user-id: user-{u}"),
                "http://shard:8080/[1-5]",
            ],
        );
        let p = pods_of(&out);
        assert_eq!(p.len(), 5);
        assert!(p.iter().all(|x| *x == p[0]), "user-{u} moved: {p:?}");
        homes.insert(p[0].clone());
    }
    assert!(homes.len() >= 2, "20 users on one pod: {homes:?}");
    // The simple policies each reach every pod.
    for lb in ["least", "random", "rr"] {
        let out = curl(
            &c,
            "lb",
            &["-H", &format!("x-lb: {lb}"), "http://shard:8080/[1-60]"],
        );
        let p = pods_of(&out);
        assert_eq!(p.len(), 60);
        let distinct: std::collections::BTreeSet<_> = p.iter().collect();
        assert_eq!(distinct.len(), 3, "{lb} missed a pod: {p:?}");
        if lb == "rr" {
            for d in &distinct {
                assert_eq!(p.iter().filter(|x| x == d).count(), 20, "{lb}: {p:?}");
            }
        }
    }

    // Mirroring: the caller sees v1 only, fast, though the mirror answers
    // 500 after 1.5 s; the mirror gets every request, with -shadow.
    let start = Instant::now();
    let out = curl(
        &c,
        "lb",
        &["-w", " %{http_code}\n", "http://mir:8080/[1-20]"],
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "mirror slowed the caller"
    );
    assert_eq!(count(&out, "mir-v1"), 20, "{out}");
    assert_eq!(
        out.lines().filter(|l| l.ends_with(" 200")).count(),
        20,
        "{out}"
    );
    until("every mirrored copy", Duration::from_secs(20), || {
        stats(&c, "lb", "mir-v2-test") == [(20, 20)]
    });
}

const OUTLIERS: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: flaky, namespace: cb}
spec:
  host: flaky
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 5
      interval: 1s
      baseEjectionTime: 3s
      maxEjectionPercent: 100
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: slow, namespace: cb}
spec:
  host: slow
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http2MaxRequests: 1, http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}
"#;

/// The client proxy's `/config_dump`.
fn config_dump(c: &Cluster, ns: &str) -> serde_json::Value {
    let out = curl(c, ns, &["http://127.0.0.1:15000/config_dump"]);
    serde_json::from_str(&out).unwrap()
}

#[test]
fn outlier_detection_and_connection_pool_limits() {
    if !can_run() {
        return;
    }
    let c = Cluster::up("circuit", &[]);
    c.apply(&client("cb", true));
    c.apply(&versioned(
        "cb",
        "flaky",
        8080,
        &[("good", 1, ""), ("bad", 1, "STATUS=500")],
    ));
    c.apply(&versioned(
        "cb",
        "slow",
        8080,
        &[("v1", 1, "DELAY_MS=1000")],
    ));
    for d in ["client", "flaky-good", "flaky-bad", "slow-v1"] {
        c.wait_ready("cb", d, 1);
    }
    let bad_ip = c
        .pods()
        .into_iter()
        .find(|p| p.deployment == "flaky-bad")
        .and_then(|p| p.ip)
        .unwrap()
        .to_string();
    // Subscribe the client's proxy to both services first.
    curl(&c, "cb", &["http://flaky:8080/__stats", "http://slow:8080/__stats"]);
    c.apply(OUTLIERS);
    until("the outlier policy", Duration::from_secs(5), || {
        config_dump(&c, "cb")["discovery"]
            .as_object()
            .unwrap()
            .values()
            .any(|s| s.to_string().contains("outlierDetection"))
    });
    // consecutive5xxErrors: 5 ejects the bad endpoint after its fifth 500.
    let codes = |n| requests(&c, "cb", n, 1, &["http://flaky:8080/"]);
    let first: Vec<u16> = codes(40).into_iter().map(|(s, _)| s).collect();
    assert_eq!(first.iter().filter(|s| **s == 500).count(), 5, "{first:?}");
    assert!(first[20..].iter().all(|s| *s == 200), "{first:?}");
    let circuit = |c: &Cluster| {
        config_dump(c, "cb")["outlier_detection"]["flaky.cb.svc.cluster.local"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["address"] == bad_ip.as_str())
            .cloned()
            .unwrap()
    };
    let bad = circuit(&c);
    assert_eq!(bad["circuit"], "open", "{bad}");
    assert_eq!(bad["ejections"], 1, "{bad}");
    let metrics = curl(&c, "cb", &["http://127.0.0.1:15020/metrics"]);
    assert!(
        metrics.contains(&format!(
            "mesh_outlier_circuit{{destination_service=\"flaky.cb.svc.cluster.local\",endpoint=\"{bad_ip}\",state=\"open\"}} 1"
        )),
        "{metrics}"
    );
    assert!(metrics.contains(
        "mesh_outlier_ejections_total{destination_service=\"flaky.cb.svc.cluster.local\"} 1"
    ));
    // After baseEjectionTime it comes back half-open; its first 500
    // ejects it again at once, for twice as long.
    std::thread::sleep(Duration::from_millis(3300));
    let again: Vec<u16> = codes(20).into_iter().map(|(s, _)| s).collect();
    assert_eq!(again.iter().filter(|s| **s == 500).count(), 1, "{again:?}");
    let bad = circuit(&c);
    assert_eq!(bad["circuit"], "open", "{bad}");
    assert_eq!(bad["ejections"], 2, "{bad}");
    assert!(bad["ejected_for_secs"].as_f64().unwrap() > 4.0, "{bad}");

    // One request in flight and one queued; the rest fail fast with UO.
    let rows = requests(&c, "cb", 10, 10, &["http://slow:8080/"]);
    let ok = rows.iter().filter(|(s, _)| *s == 200).count();
    let overflow: Vec<f64> = rows
        .iter()
        .filter(|(s, _)| *s == 503)
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(ok + overflow.len(), 10, "{rows:?}");
    assert!((2..=4).contains(&ok), "{rows:?}");
    assert!(
        overflow.iter().all(|t| *t < 0.9),
        "overflow queued: {rows:?}"
    );
    let logs = text(
        &c.meshctl(&["logs", "deploy/client", "-n", "cb", "-c", "proxy"])
            .stdout,
    );
    assert!(
        logs.lines()
            .any(|l| l.contains("\"response_flags\":\"UO\"") && l.contains("slow.cb")),
        "no UO in the access log:\n{logs}"
    );
}

const OPAQUE: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: l4}
spec:
  host: echo
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: l4}
spec:
  hosts: [echo]
  tcp:
  - match: [{port: 9000}]
    route:
    - destination: {host: echo, subset: v1}
      weight: 80
    - destination: {host: echo, subset: v2}
      weight: 20
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: secure, namespace: l4}
spec:
  host: secure
  subsets:
  - {name: a, labels: {version: a}}
  - {name: b, labels: {version: b}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: secure, namespace: l4}
spec:
  hosts: [secure]
  tls:
  - match: [{port: 8443, sniHosts: [a.example.com]}]
    route: [{destination: {host: secure, subset: a}}]
  - match: [{port: 8443, sniHosts: ['*.example.org']}]
    route: [{destination: {host: secure, subset: b}}]
"#;

#[test]
fn tcp_routes_split_and_tls_routes_follow_sni() {
    if !can_run() {
        return;
    }
    let c = Cluster::up("opaque", &[]);
    let dir = c.state.join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=secure", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let tls_env = format!("TLS_CERT={},TLS_KEY={}", cert.display(), key.display());
    c.apply(&client("l4", true));
    c.apply(&versioned_on(
        "l4",
        "echo",
        "tcp",
        9000,
        &[("v1", 1, ""), ("v2", 1, "")],
    ));
    c.apply(&versioned_on(
        "l4",
        "secure",
        "tls",
        8443,
        &[("a", 1, &tls_env), ("b", 1, &tls_env)],
    ));
    for d in ["client", "echo-v1", "echo-v2", "secure-a", "secure-b"] {
        c.wait_ready("l4", d, 1);
    }
    c.apply(OPAQUE);
    let sni = |name: &str| {
        curl(
            &c,
            "l4",
            &[
                "-k",
                "--connect-to",
                &format!("{name}:8443:secure:8443"),
                &format!("https://{name}:8443/"),
            ],
        )
    };
    until("the tls routes", Duration::from_secs(5), || {
        sni("a.example.com").starts_with("pod=secure-a")
    });
    for _ in 0..5 {
        assert!(sni("a.example.com").starts_with("pod=secure-a"));
        assert!(sni("api.example.org").starts_with("pod=secure-b"));
    }
    let out = c.exec(
        "l4",
        "deploy/client",
        &[
            "curl",
            "-sk",
            "--max-time",
            "5",
            "--connect-to",
            "other.example.net:8443:secure:8443",
            "https://other.example.net:8443/",
        ],
    );
    assert!(!out.status.success(), "an SNI no route takes got through");

    // TCP, 80/20 by connection: each curl is its own connection.
    let script = "for i in $(seq 300); do curl -s --max-time 10 http://echo:9000/; done";
    let out = c.exec_ok("l4", "deploy/client", &["sh", "-c", script]);
    let (v1, v2) = (count(&out, "echo-v1"), count(&out, "echo-v2"));
    assert_eq!(v1 + v2, 300, "{out}");
    assert!((33..=90).contains(&v2), "v2 got {v2} of 300 connections");
}
