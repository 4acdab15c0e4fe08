//! The dashboard's model, from two scrapes a window apart: the service
//! topology (nodes are workloads; an edge is a client workload's requests
//! to a server workload, with its rate, error rate, p99 and whether over
//! mTLS, as the server's proxy counted them), and each proxy's health
//! (controller connection, sync, configuration version, certificate
//! expiry). Pure, as the rest of [`crate::viz`].

use std::collections::BTreeMap;

use common::prom_text::Sample;
use serde::Serialize;

use super::{By, Scrape, Served, add, delta, quantile, served};

/// A workload.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Node {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub workload: String,
    /// Requests per second it served.
    pub rps: f64,
    /// Share not answered 5xx (`None` without requests).
    pub success_rate: Option<f64>,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: Option<f64>,
    /// Share of its requests over mTLS.
    pub mtls_share: Option<f64>,
    /// Whether its pods carry a proxy (a client seen only as a source
    /// may not).
    pub meshed: bool,
}

/// Requests from one workload to another.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Link {
    /// The client's namespace.
    pub src_namespace: String,
    /// The client.
    pub src: String,
    /// The server's namespace.
    pub dst_namespace: String,
    /// The server.
    pub dst: String,
    /// Requests per second.
    pub rps: f64,
    /// Share answered 5xx (`None` without requests).
    pub error_rate: Option<f64>,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: Option<f64>,
    /// Whether the requests came over mTLS (all of them).
    pub mtls: bool,
}

/// One proxy's health.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Proxy {
    /// Its pod's namespace.
    pub namespace: String,
    /// Its pod.
    pub pod: String,
    /// Its workload.
    pub workload: String,
    /// Whether its stream to the controller is up.
    pub connected: bool,
    /// Whether it applied a configuration.
    pub synced: bool,
    /// The configuration's version.
    pub version: String,
    /// When its certificate expires (Unix seconds).
    pub cert_expiry_unix: Option<f64>,
}

/// The whole picture.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Graph {
    /// Over how many seconds the rates are.
    pub window_secs: f64,
    /// Workloads, by namespace and name.
    pub nodes: Vec<Node>,
    /// Client-to-server links.
    pub links: Vec<Link>,
    /// Proxies, by namespace and pod.
    pub proxies: Vec<Proxy>,
}

/// The destination-reporter samples of `samples`, by client workload.
fn by_client(samples: &[Sample]) -> BTreeMap<(String, String), Vec<Sample>> {
    let mut out: BTreeMap<(String, String), Vec<Sample>> = BTreeMap::new();
    for s in samples.iter().filter(|s| {
        s.label("reporter") == "destination"
            && matches!(
                s.name.as_str(),
                "istio_requests_total" | "istio_request_duration_milliseconds_bucket"
            )
    }) {
        out.entry((
            s.label("source_workload_namespace").to_string(),
            s.label("source_workload").to_string(),
        ))
        .or_default()
        .push(s.clone());
    }
    out
}

fn value<'a>(samples: &'a [Sample], name: &str) -> Option<&'a Sample> {
    samples.iter().find(|s| s.name == name)
}

/// The model over `window_secs` between `before` and `after` (scrapes of
/// the same pods).
pub fn graph(before: &[Scrape], after: &[Scrape], window_secs: f64) -> Graph {
    let rate = |n: f64| {
        if window_secs > 0.0 {
            n / window_secs
        } else {
            0.0
        }
    };
    let mut links: BTreeMap<(String, String, String, String), Served> = BTreeMap::new();
    for a in after {
        let b = before
            .iter()
            .find(|b| b.namespace == a.namespace && b.pod == a.pod)
            .map(|b| by_client(&b.samples))
            .unwrap_or_default();
        for ((src_ns, src), samples) in by_client(&a.samples) {
            let was = b
                .get(&(src_ns.clone(), src.clone()))
                .map(|s| served(s))
                .unwrap_or_default();
            let d = delta(&was, &served(&samples));
            if d.requests <= 0.0 {
                continue;
            }
            let key = (src_ns, src, a.namespace.clone(), a.workload.clone());
            add(links.entry(key).or_default(), &d);
        }
    }
    let mut nodes: BTreeMap<(String, String), Node> =
        super::stat(before, after, window_secs, By::Deployment)
            .into_iter()
            .map(|s| {
                let key = (s.namespace.clone(), s.name.clone());
                let node = Node {
                    namespace: s.namespace,
                    workload: s.name,
                    rps: s.rps,
                    success_rate: s.success_rate,
                    p99_ms: s.latency_p99_ms,
                    mtls_share: s.mtls_share,
                    meshed: true,
                };
                (key, node)
            })
            .collect();
    for (src_ns, src, _, _) in links.keys() {
        nodes
            .entry((src_ns.clone(), src.clone()))
            .or_insert_with(|| Node {
                namespace: src_ns.clone(),
                workload: src.clone(),
                rps: 0.0,
                success_rate: None,
                p99_ms: None,
                mtls_share: None,
                meshed: false,
            });
    }
    let links = links
        .into_iter()
        .map(|((src_namespace, src, dst_namespace, dst), s)| Link {
            src_namespace,
            src,
            dst_namespace,
            dst,
            rps: rate(s.requests),
            error_rate: Some(s.failures / s.requests),
            p99_ms: quantile(0.99, &s.buckets),
            mtls: s.mtls >= s.requests,
        })
        .collect();
    let mut proxies: Vec<Proxy> = after
        .iter()
        .map(|a| {
            let gauge = |name: &str| value(&a.samples, name).map(|s| s.value);
            Proxy {
                namespace: a.namespace.clone(),
                pod: a.pod.clone(),
                workload: a.workload.clone(),
                connected: gauge("mesh_proxy_controller_connected") == Some(1.0),
                synced: gauge("mesh_proxy_config_synced") == Some(1.0),
                version: value(&a.samples, "mesh_proxy_config_info")
                    .map(|s| s.label("version").to_string())
                    .unwrap_or_default(),
                cert_expiry_unix: gauge("mesh_proxy_certificate_expiration_timestamp_seconds")
                    .filter(|t| *t > 0.0),
            }
        })
        .collect();
    proxies.sort_by(|x, y| (&x.namespace, &x.pod).cmp(&(&y.namespace, &y.pod)));
    Graph {
        window_secs,
        nodes: nodes.into_values().collect(),
        links,
        proxies,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::viz::scrape;

    fn served_text(src: &str, ok: u32, fail: u32, mtls: bool) -> String {
        let policy = if mtls { "mutual_tls" } else { "none" };
        let labels = |code: u32| {
            format!(
                "reporter=\"destination\",source_workload=\"{src}\",source_workload_namespace=\"shop\",response_code=\"{code}\",connection_security_policy=\"{policy}\""
            )
        };
        format!(
            "istio_requests_total{{{}}} {ok}\nistio_requests_total{{{}}} {fail}\n\
             istio_request_duration_milliseconds_bucket{{{},le=\"10\"}} {ok}\n\
             istio_request_duration_milliseconds_bucket{{{},le=\"+Inf\"}} {}\n",
            labels(200),
            labels(503),
            labels(200),
            labels(200),
            ok + fail
        )
    }

    #[test]
    fn links_carry_rates_errors_and_mtls() {
        let health = "mesh_proxy_controller_connected 1\nmesh_proxy_config_synced 1\nmesh_proxy_config_info{version=\"v7\"} 1\nmesh_proxy_certificate_expiration_timestamp_seconds 1800000000\n";
        let before = [
            scrape("orders-1", "orders", &served_text("frontend", 0, 0, true)),
            scrape("payments-1", "payments", &served_text("orders", 0, 0, true)),
        ];
        let after = [
            scrape(
                "orders-1",
                "orders",
                &format!("{}{health}", served_text("frontend", 90, 10, true)),
            ),
            scrape(
                "payments-1",
                "payments",
                &format!(
                    "{}{}",
                    served_text("orders", 50, 0, true),
                    served_text("outsider", 5, 0, false)
                ),
            ),
        ];
        let g = graph(&before, &after, 10.0);
        assert_eq!(g.links.len(), 3, "{g:#?}");
        let fo = &g.links[0];
        assert_eq!((fo.src.as_str(), fo.dst.as_str()), ("frontend", "orders"));
        assert_eq!(fo.rps, 10.0);
        assert_eq!(fo.error_rate, Some(0.1));
        assert!(fo.mtls);
        let outsider = g.links.iter().find(|l| l.src == "outsider").unwrap();
        assert!(!outsider.mtls);
        assert_eq!(outsider.rps, 0.5);
        let names: Vec<&str> = g.nodes.iter().map(|n| n.workload.as_str()).collect();
        assert_eq!(names, ["frontend", "orders", "outsider", "payments"]);
        assert!(!g.nodes[0].meshed && g.nodes[1].meshed);
        assert_eq!(g.nodes[1].success_rate, Some(0.9));
        let p = &g.proxies[0];
        assert!(p.connected && p.synced);
        assert_eq!(p.version, "v7");
        assert_eq!(p.cert_expiry_unix, Some(1_800_000_000.0));
        assert!(!g.proxies[1].synced, "no health gauges: not synced");
    }
}
