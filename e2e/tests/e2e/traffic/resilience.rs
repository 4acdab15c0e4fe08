//! Resilience: retries with the seed policy, retriable-4xx attempts, route
//! and per-try timeouts, and faults (the seed's delay and abort).

use std::time::{Duration, Instant};

use e2e::{Cluster, client, needs_root, text, versioned};

use super::*;

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
  - name: grpc
    match: [{headers: {x-test: {exact: grpc}}}]
    retries: {attempts: 2, retryOn: "unavailable,resource-exhausted"}
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
#[ignore = "needs root"]
fn retries_timeouts_and_faults() {
    needs_root();
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
    // gRPC statuses are read from the response: UNAVAILABLE (14) is
    // retried, INTERNAL (13) is not under this route's retryOn.
    let tries = |grpc: &str| {
        let before = total(&stats(&c, "res", "flaky-good")) + total(&stats(&c, "res", "flaky-bad"));
        let url = format!("http://flaky:8080/pkg.Svc/Call?grpc={grpc}");
        codes(1, &["-H", "x-test: grpc", &url]);
        total(&stats(&c, "res", "flaky-good")) + total(&stats(&c, "res", "flaky-bad")) - before
    };
    assert_eq!(tries("14"), 3);
    assert_eq!(tries("13"), 1);
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

    let mut steps = e2e::Steps::new();
    steps.step(
        "Bodies are kept for retries up to 64 KiB: a small POST is retried",
        || {
            // Bodies are kept for retries up to 64 KiB: a small POST is retried
            // past the bad endpoint, a 100 KiB one is not.
            let small = c.state.join("small.bin");
            let big = c.state.join("big.bin");
            std::fs::write(&small, vec![b'x'; 1024]).unwrap();
            std::fs::write(&big, vec![b'x'; 100 * 1024]).unwrap();
            let post = |file: &std::path::Path| -> Vec<u16> {
                let data = format!("@{}", file.display());
                requests(
                    &c,
                    "res",
                    20,
                    1,
                    &["--data-binary", &data, "http://flaky:8080/upload"],
                )
                .into_iter()
                .map(|(s, _)| s)
                .collect()
            };
            let out = post(&small);
            assert!(out.iter().all(|s| *s == 200), "{out:?}");
            let out = post(&big);
            let failed = out.iter().filter(|s| **s == 500).count();
            assert!(
                (5..=15).contains(&failed),
                "a big body was retried: {out:?}"
            );
        },
    );

    steps.step(
        "A retry budget of nothing: not one retry, whatever the policy says",
        || {
            // A retry budget of nothing: not one retry, whatever the policy says.
            c.apply(
                r#"
    apiVersion: networking.istio.io/v1
    kind: DestinationRule
    metadata: {name: flaky, namespace: res}
    spec:
      host: flaky
      trafficPolicy:
        retryBudget: {percent: 0, minRetryConcurrency: 0}
    "#,
            );
            until("the retry budget", Duration::from_secs(5), || {
                codes(4, &["http://flaky:8080/"]).contains("500")
            });
            let before =
                total(&stats(&c, "res", "flaky-good")) + total(&stats(&c, "res", "flaky-bad"));
            let rows = requests(&c, "res", 40, 8, &["http://flaky:8080/"]);
            let after =
                total(&stats(&c, "res", "flaky-good")) + total(&stats(&c, "res", "flaky-bad"));
            assert_eq!(after - before, 40, "retries beyond the budget: {rows:?}");
        },
    );

    steps.step("Faults: only on their route, never retried", || {
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
    });

    steps.finish();
}
