//! Circuit breaking: outlier detection with the seed's
//! `consecutive5xxErrors: 5`, and connection pool limits.

use std::time::Duration;

use e2e::{Cluster, client, needs_root, text, versioned};

use super::*;

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

#[test]
#[ignore = "needs root"]
fn outlier_detection_and_connection_pool_limits() {
    needs_root();
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
    curl(
        &c,
        "cb",
        &["http://flaky:8080/__stats", "http://slow:8080/__stats"],
    );
    c.apply(OUTLIERS);
    until("the outlier policy", Duration::from_secs(5), || {
        config_dump(&c, "cb")["targets"]
            .as_object()
            .unwrap()
            .values()
            .any(|s| s.to_string().contains("\"outlier_detection\":true"))
    });
    // consecutive5xxErrors: 5 ejects the bad endpoint after its fifth 500.
    let codes = |n| requests(&c, "cb", n, 1, &["http://flaky:8080/"]);
    let first: Vec<u16> = codes(40).into_iter().map(|(s, _)| s).collect();
    assert_eq!(first.iter().filter(|s| **s == 500).count(), 5, "{first:?}");
    assert!(first[20..].iter().all(|s| *s == 200), "{first:?}");
    let circuit = |c: &Cluster| {
        config_dump(c, "cb")["endpoints"]["flaky.cb.svc.cluster.local"]
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
    until("the ejection to end", Duration::from_secs(10), || {
        circuit(&c)["circuit"] == "half_open"
    });
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
