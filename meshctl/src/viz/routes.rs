//! `stat route`, as Linkerd's per-route view: the routes of the services
//! the scraped pods call, from their proxies' `mesh_route_*` metrics (the
//! client's side: the route is the one its VirtualService or
//! ServiceProfile chose), over a window between two scrapes.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Scrape, bound_key, quantile};

/// One row of `stat route`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RouteStat {
    /// The service's host.
    pub service: String,
    /// The route's name (`default` when unnamed).
    pub route: String,
    /// Share of requests not answered 5xx.
    pub success_rate: Option<f64>,
    /// Requests per second.
    pub rps: f64,
    /// Latency percentiles, milliseconds.
    pub latency_p50_ms: Option<f64>,
    /// 95th.
    pub latency_p95_ms: Option<f64>,
    /// 99th.
    pub latency_p99_ms: Option<f64>,
}

#[derive(Default)]
struct Counts {
    ok: f64,
    failed: f64,
    buckets: BTreeMap<u64, f64>,
}

/// The counters of every pod, by (service, route).
fn counts(scrapes: &[Scrape]) -> BTreeMap<(String, String), Counts> {
    let mut out: BTreeMap<(String, String), Counts> = BTreeMap::new();
    for x in scrapes.iter().flat_map(|s| &s.samples) {
        let key = || {
            (
                x.label("destination_service").to_string(),
                x.label("route").to_string(),
            )
        };
        match x.name.as_str() {
            "mesh_route_requests_total" => {
                let c = out.entry(key()).or_default();
                if x.label("classification") == "failure" {
                    c.failed += x.value;
                } else {
                    c.ok += x.value;
                }
            }
            "mesh_route_request_duration_milliseconds_bucket" => {
                if let Some(k) = bound_key(x.label("le")) {
                    *out.entry(key()).or_default().buckets.entry(k).or_default() += x.value;
                }
            }
            _ => {}
        }
    }
    out
}

/// The routes over `window_secs` between `before` and `after`.
pub fn routes(before: &[Scrape], after: &[Scrape], window_secs: f64) -> Vec<RouteStat> {
    let was = counts(before);
    let d = |a: f64, b: f64| if a >= b { a - b } else { a };
    counts(after)
        .into_iter()
        .map(|(key, now)| {
            let then = was.get(&key);
            let ok = d(now.ok, then.map_or(0.0, |t| t.ok));
            let failed = d(now.failed, then.map_or(0.0, |t| t.failed));
            let buckets: BTreeMap<u64, f64> = now
                .buckets
                .iter()
                .map(|(k, v)| {
                    let before = then.and_then(|t| t.buckets.get(k)).copied().unwrap_or(0.0);
                    (*k, d(*v, before))
                })
                .collect();
            let total = ok + failed;
            RouteStat {
                service: key.0,
                route: key.1,
                success_rate: (total > 0.0).then(|| ok / total),
                rps: if window_secs > 0.0 {
                    total / window_secs
                } else {
                    0.0
                },
                latency_p50_ms: quantile(0.5, &buckets),
                latency_p95_ms: quantile(0.95, &buckets),
                latency_p99_ms: quantile(0.99, &buckets),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::prom_text;

    fn scrape(ok: u32, failed: u32) -> Scrape {
        let svc = "destination_service=\"orders.shop.svc.cluster.local\",route=\"checkout\"";
        Scrape {
            namespace: "shop".into(),
            pod: "web-1".into(),
            workload: "web".into(),
            samples: prom_text::parse(&format!(
                "mesh_route_requests_total{{{svc},classification=\"success\"}} {ok}\n\
                 mesh_route_requests_total{{{svc},classification=\"failure\"}} {failed}\n\
                 mesh_route_request_duration_milliseconds_bucket{{{svc},le=\"5\"}} {ok}\n\
                 mesh_route_request_duration_milliseconds_bucket{{{svc},le=\"+Inf\"}} {}\n",
                ok + failed
            )),
        }
    }

    #[test]
    fn a_routes_rate_success_and_latency() {
        let rows = routes(&[scrape(10, 0)], &[scrape(58, 2)], 5.0);
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(
            (r.service.as_str(), r.route.as_str()),
            ("orders.shop.svc.cluster.local", "checkout")
        );
        assert_eq!(r.rps, 10.0);
        assert_eq!(r.success_rate, Some(48.0 / 50.0));
        assert!(r.latency_p50_ms.unwrap() <= 5.0);
    }
}
