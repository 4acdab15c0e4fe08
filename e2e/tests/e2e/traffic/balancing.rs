//! Balancing: consistent hashing on `x-user-id`, the simple policies, and
//! 100% mirroring to a `v2-test` subset.

use std::time::{Duration, Instant};

use e2e::{Cluster, client, needs_root, text, versioned};

use super::*;

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
  - name: cookie
    labels: {app: shard}
    trafficPolicy:
      loadBalancer:
        consistentHash: {httpCookie: {name: session, ttl: 60s, path: /}}
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
  - match: [{headers: {x-lb: {exact: cookie}}}]
    route: [{destination: {host: shard, subset: cookie}}]
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
#[ignore = "needs root"]
fn balancing_consistent_hash_and_mirroring() {
    needs_root();
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

    let mut steps = e2e::Steps::new();
    steps.step(
        "A cookie with a TTL is made when missing, and sticks",
        || {
            // A cookie with a TTL is made when missing, and sticks.
            let mut cookie_homes = std::collections::BTreeSet::new();
            for _ in 0..10 {
                let out = curl(
                    &c,
                    "lb",
                    &["-si", "-H", "x-lb: cookie", "http://shard:8080/"],
                );
                let set = out
                    .lines()
                    .find_map(|l| l.strip_prefix("set-cookie: "))
                    .unwrap_or_else(|| panic!("no cookie made: {out}"));
                assert!(
                    set.contains("Max-Age=60") && set.contains("Path=/"),
                    "{set}"
                );
                let cookie = set.split(';').next().unwrap().to_string();
                let first = out
                    .lines()
                    .last()
                    .unwrap()
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_string();
                let again = curl(
                    &c,
                    "lb",
                    &[
                        "-H",
                        "x-lb: cookie",
                        "-H",
                        &format!("cookie: {cookie}"),
                        "http://shard:8080/[1-5]",
                    ],
                );
                assert!(
                    pods_of(&again).iter().all(|p| *p == first),
                    "{cookie}: {again}"
                );
                cookie_homes.insert(first);
            }
            assert!(
                cookie_homes.len() >= 2,
                "ten cookies, one pod: {cookie_homes:?}"
            );
            // One of three pods goes: only its users move.
            let home = |u: usize| {
                let out = curl(
                    &c,
                    "lb",
                    &["-H", &format!("x-user-id: user-{u}"), "http://shard:8080/"],
                );
                pods_of(&out)[0].clone()
            };
            let before: Vec<String> = (0..20).map(home).collect();
            c.apply(&versioned("lb", "shard", 8080, &[("v1", 2, "")]));
            let left: Vec<String> = c
                .wait_ready("lb", "shard-v1", 2)
                .iter()
                .map(|p| format!("pod={}", p.name))
                .collect();
            until("the smaller endpoint set", Duration::from_secs(5), || {
                (0..20).all(|u| left.contains(&home(u)))
            });
            for (u, was) in before.iter().enumerate() {
                if left.contains(was) {
                    assert_eq!(&home(u), was, "user-{u} moved though its pod stayed");
                }
            }
        },
    );

    steps.step("Mirroring: the caller sees v1 only, fast, though the mirror answers", || {
        // Mirroring: the caller sees v1 only, fast, though the mirror answers
        // 500 after 1.5 s; the mirror gets every request, with -shadow.
        let start = Instant::now();
        let out = curl(
            &c,
            "lb",
            &["-w", " %{http_code}\n", "http://mir:8080/[1-20]"],
        );
        let took = start.elapsed();
        if took >= Duration::from_secs(10) {
            let log = c.meshctl(&["logs", "deploy/client", "-n", "lb", "-c", "proxy"]);
            let ctl = std::fs::read_to_string(c.state.join("controller.log")).unwrap_or_default();
            let daemon = std::fs::read_to_string(c.state.join("daemon.log")).unwrap_or_default();
            panic!(
                "mirror slowed the caller: 20 requests took {took:?}\n{out}\nclient proxy log:\n{}\ncontroller log:\n{ctl}\ndaemon log:\n{daemon}",
                text(&log.stdout)
            );
        }
        assert_eq!(count(&out, "mir-v1"), 20, "{out}");
        assert_eq!(
            out.lines().filter(|l| l.ends_with(" 200")).count(),
            20,
            "{out}"
        );
        until("every mirrored copy", Duration::from_secs(20), || {
            stats(&c, "lb", "mir-v2-test") == [(20, 20)]
        });
    });

    steps.finish();
}
