//! Linkerd Viz's views, computed from the proxies' own metrics (Istio's
//! destination reporter, so each request is counted once, by the proxy
//! that served it): per workload or pod, the success rate, requests per
//! second and latency percentiles over a window between two scrapes, open
//! TCP connections and the share of requests over mTLS; and the edges
//! between workloads with their identities. Pure: scraping is the
//! caller's.

use std::collections::BTreeMap;

use common::prom_text::Sample;
use serde::Serialize;

pub mod graph;
pub mod promql;
pub mod routes;

/// One pod's scrape.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub pod: String,
    /// Its workload (Deployment), from the runtime.
    pub workload: String,
    /// The samples of its `/metrics`.
    pub samples: Vec<Sample>,
}

/// What a view is by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// A workload (Deployment), its pods together.
    Deployment,
    /// A pod.
    Pod,
}

/// Counters of one pod's served requests, summed over its series.
#[derive(Debug, Default, Clone)]
struct Served {
    requests: f64,
    failures: f64,
    mtls: f64,
    /// Duration buckets: upper bound (ms) -> cumulative count.
    buckets: BTreeMap<u64, f64>,
    open_tcp: f64,
}

/// Bucket bounds as keys (thousandths of a millisecond; +Inf as max).
fn bound_key(le: &str) -> Option<u64> {
    if le == "+Inf" {
        return Some(u64::MAX);
    }
    le.parse::<f64>().ok().map(|v| (v * 1000.0) as u64)
}

fn served(samples: &[Sample]) -> Served {
    let mut s = Served::default();
    let mut opened = 0.0;
    let mut closed = 0.0;
    for x in samples
        .iter()
        .filter(|x| x.label("reporter") == "destination")
    {
        match x.name.as_str() {
            "istio_requests_total" => {
                s.requests += x.value;
                if x.label("response_code").starts_with('5') {
                    s.failures += x.value;
                }
                if x.label("connection_security_policy") == "mutual_tls" {
                    s.mtls += x.value;
                }
            }
            "istio_request_duration_milliseconds_bucket" => {
                if let Some(k) = bound_key(x.label("le")) {
                    *s.buckets.entry(k).or_default() += x.value;
                }
            }
            "istio_tcp_connections_opened_total" => opened += x.value,
            "istio_tcp_connections_closed_total" => closed += x.value,
            _ => {}
        }
    }
    s.open_tcp = (opened - closed).max(0.0);
    s
}

/// `after - before`, each counter on its own; a counter that went down
/// (the proxy restarted) counts from zero.
fn delta(before: &Served, after: &Served) -> Served {
    let d = |a: f64, b: f64| if a >= b { a - b } else { a };
    Served {
        requests: d(after.requests, before.requests),
        failures: d(after.failures, before.failures),
        mtls: d(after.mtls, before.mtls),
        buckets: after
            .buckets
            .iter()
            .map(|(k, a)| (*k, d(*a, before.buckets.get(k).copied().unwrap_or(0.0))))
            .collect(),
        open_tcp: after.open_tcp,
    }
}

fn add(into: &mut Served, s: &Served) {
    into.requests += s.requests;
    into.failures += s.failures;
    into.mtls += s.mtls;
    into.open_tcp += s.open_tcp;
    for (k, v) in &s.buckets {
        *into.buckets.entry(*k).or_default() += v;
    }
}

/// The `q` quantile of cumulative `buckets`, in milliseconds, as
/// Prometheus' `histogram_quantile` interpolates it; `None` without
/// requests.
pub fn quantile(q: f64, buckets: &BTreeMap<u64, f64>) -> Option<f64> {
    let total = *buckets.get(&u64::MAX).or(buckets.values().last())?;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0u64, 0.0);
    for (&bound, &count) in buckets {
        if count >= rank {
            if bound == u64::MAX {
                return Some(lower.0 as f64 / 1000.0);
            }
            let (lb, lc) = lower;
            let width = (bound - lb) as f64 / 1000.0;
            let in_bucket = count - lc;
            let frac = if in_bucket > 0.0 {
                (rank - lc) / in_bucket
            } else {
                1.0
            };
            return Some(lb as f64 / 1000.0 + width * frac);
        }
        lower = (bound, count);
    }
    None
}

/// One row of `stat`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stat {
    /// Namespace.
    pub namespace: String,
    /// The workload or pod.
    pub name: String,
    /// Pods scraped.
    pub pods: usize,
    /// Share of requests not answered 5xx (`None` without requests).
    pub success_rate: Option<f64>,
    /// Requests per second.
    pub rps: f64,
    /// Latency percentiles, milliseconds.
    pub latency_p50_ms: Option<f64>,
    /// 95th.
    pub latency_p95_ms: Option<f64>,
    /// 99th.
    pub latency_p99_ms: Option<f64>,
    /// TCP connections open now.
    pub tcp_connections: u64,
    /// Share of requests over mTLS.
    pub mtls_share: Option<f64>,
}

/// `stat` over `window_secs` between two scrapes of the same pods.
pub fn stat(before: &[Scrape], after: &[Scrape], window_secs: f64, by: By) -> Vec<Stat> {
    let mut rows: BTreeMap<(String, String), (usize, Served)> = BTreeMap::new();
    for a in after {
        let b = before
            .iter()
            .find(|b| b.namespace == a.namespace && b.pod == a.pod)
            .map(|b| served(&b.samples))
            .unwrap_or_default();
        let d = delta(&b, &served(&a.samples));
        let name = match by {
            By::Deployment => a.workload.clone(),
            By::Pod => a.pod.clone(),
        };
        let row = rows.entry((a.namespace.clone(), name)).or_default();
        row.0 += 1;
        add(&mut row.1, &d);
    }
    rows.into_iter()
        .map(|((namespace, name), (pods, s))| {
            let share = |n: f64| (s.requests > 0.0).then(|| n / s.requests);
            Stat {
                namespace,
                name,
                pods,
                success_rate: share(s.requests - s.failures),
                rps: if window_secs > 0.0 {
                    s.requests / window_secs
                } else {
                    0.0
                },
                latency_p50_ms: quantile(0.5, &s.buckets),
                latency_p95_ms: quantile(0.95, &s.buckets),
                latency_p99_ms: quantile(0.99, &s.buckets),
                tcp_connections: s.open_tcp as u64,
                mtls_share: share(s.mtls),
            }
        })
        .collect()
}

/// One edge: a client workload that has talked to a server workload.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Edge {
    /// The client's namespace (`unknown` outside the mesh).
    pub src_namespace: String,
    /// The client's workload.
    pub src: String,
    /// The server's namespace.
    pub dst_namespace: String,
    /// The server's workload.
    pub dst: String,
    /// The client's identity (`unknown` without mTLS).
    pub client_id: String,
    /// The server's identity.
    pub server_id: String,
    /// Whether over mTLS.
    pub secured: bool,
}

/// The edges the servers' proxies have seen (requests and TCP
/// connections), by pod or by workload.
pub fn edges(scrapes: &[Scrape], by: By) -> Vec<Edge> {
    let mut out = std::collections::BTreeSet::new();
    for sc in scrapes {
        for x in sc.samples.iter().filter(|x| {
            x.label("reporter") == "destination"
                && x.value > 0.0
                && matches!(
                    x.name.as_str(),
                    "istio_requests_total" | "istio_tcp_connections_opened_total"
                )
        }) {
            out.insert(Edge {
                src_namespace: x.label("source_workload_namespace").to_string(),
                src: x.label("source_workload").to_string(),
                dst_namespace: sc.namespace.clone(),
                dst: match by {
                    By::Deployment => sc.workload.clone(),
                    By::Pod => sc.pod.clone(),
                },
                client_id: x.label("source_principal").to_string(),
                server_id: x.label("destination_principal").to_string(),
                secured: x.label("connection_security_policy") == "mutual_tls",
            });
        }
    }
    out.into_iter().collect()
}

/// A scrape of `pod` of `workload` in `shop` with `text`, for tests.
#[cfg(test)]
fn scrape(pod: &str, workload: &str, text: &str) -> Scrape {
    Scrape {
        namespace: "shop".into(),
        pod: pod.into(),
        workload: workload.into(),
        samples: common::prom_text::parse(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABELS: &str = "reporter=\"destination\",source_workload=\"web\",source_workload_namespace=\"shop\",source_principal=\"spiffe://cluster.local/ns/shop/sa/web\",destination_principal=\"spiffe://cluster.local/ns/shop/sa/orders\"";

    fn metrics(ok: u32, failed: u32, fast: u32, slow: u32, plain: u32) -> String {
        format!(
            "istio_requests_total{{{LABELS},response_code=\"200\",connection_security_policy=\"mutual_tls\"}} {ok}
istio_requests_total{{{LABELS},response_code=\"503\",connection_security_policy=\"mutual_tls\"}} {failed}
istio_requests_total{{reporter=\"destination\",source_workload=\"unknown\",source_workload_namespace=\"unknown\",source_principal=\"unknown\",destination_principal=\"spiffe://cluster.local/ns/shop/sa/orders\",response_code=\"200\",connection_security_policy=\"none\"}} {plain}
istio_requests_total{{reporter=\"source\",response_code=\"200\"}} 999
istio_request_duration_milliseconds_bucket{{reporter=\"destination\",le=\"5\"}} {fast}
istio_request_duration_milliseconds_bucket{{reporter=\"destination\",le=\"100\"}} {fast}
istio_request_duration_milliseconds_bucket{{reporter=\"destination\",le=\"250\"}} {}
istio_request_duration_milliseconds_bucket{{reporter=\"destination\",le=\"+Inf\"}} {}
istio_tcp_connections_opened_total{{{LABELS},connection_security_policy=\"mutual_tls\"}} 5
istio_tcp_connections_closed_total{{{LABELS},connection_security_policy=\"mutual_tls\"}} 3
",
            fast + slow,
            fast + slow
        )
    }

    #[test]
    fn quantiles_interpolate_as_prometheus_does() {
        let b: BTreeMap<u64, f64> = [
            (5_000, 90.0),
            (100_000, 90.0),
            (250_000, 100.0),
            (u64::MAX, 100.0),
        ]
        .into_iter()
        .collect();
        assert_eq!(quantile(0.5, &b), Some(5.0 * 50.0 / 90.0));
        // The 99th request lies in (100, 250]: 9/10 of the way.
        let p99 = quantile(0.99, &b).unwrap();
        assert!((p99 - 235.0).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(0.5, &BTreeMap::new()), None);
    }

    #[test]
    fn stat_over_a_window_by_deployment_and_by_pod() {
        let before = [
            scrape("orders-a", "orders", &metrics(10, 0, 10, 0, 0)),
            scrape("orders-b", "orders", &metrics(0, 0, 0, 0, 0)),
        ];
        let after = [
            scrape("orders-a", "orders", &metrics(50, 5, 45, 5, 5)),
            scrape("orders-b", "orders", &metrics(40, 5, 40, 0, 0)),
        ];
        let s = stat(&before, &after, 10.0, By::Deployment);
        assert_eq!(s.len(), 1);
        let o = &s[0];
        assert_eq!((o.name.as_str(), o.pods), ("orders", 2));
        // 40 + 5 + 5 on a, 40 + 5 on b: 95 requests, 10 failed, 5 plain.
        assert_eq!(o.rps, 9.5);
        assert_eq!(o.success_rate, Some(85.0 / 95.0));
        assert_eq!(o.mtls_share, Some(90.0 / 95.0));
        assert_eq!(o.tcp_connections, 4);
        assert!(o.latency_p50_ms.unwrap() <= 5.0);
        assert!(o.latency_p99_ms.unwrap() > 100.0);
        let p = stat(&before, &after, 10.0, By::Pod);
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].name, "orders-b");
        assert_eq!(p[1].rps, 4.5);
        // A restarted proxy counts from zero.
        let restarted = [scrape("orders-a", "orders", &metrics(3, 0, 3, 0, 0))];
        let r = stat(&after[..1], &restarted, 1.0, By::Pod);
        assert_eq!(r[0].rps, 3.0);
    }

    #[test]
    fn edges_name_both_ends_and_whether_secured() {
        let s = [scrape("orders-a", "orders", &metrics(1, 0, 1, 0, 1))];
        let e = edges(&s, By::Deployment);
        assert_eq!(e.len(), 2, "{e:?}");
        let web = e.iter().find(|e| e.src == "web").unwrap();
        assert!(web.secured);
        assert_eq!(web.dst, "orders");
        assert_eq!(web.client_id, "spiffe://cluster.local/ns/shop/sa/web");
        assert_eq!(web.server_id, "spiffe://cluster.local/ns/shop/sa/orders");
        let outsider = e.iter().find(|e| e.src == "unknown").unwrap();
        assert!(!outsider.secured);
        // Nothing served, no edge.
        let idle = format!("istio_requests_total{{{LABELS},response_code=\"200\"}} 0\n");
        assert!(edges(&[scrape("x", "x", &idle)], By::Pod).is_empty());
    }
}
