//! `stat` and `edges` from a Prometheus instead of the proxies (as
//! `linkerd viz` reads its Prometheus): the PromQL, over Istio's standard
//! metrics (destination reporter), and the rows made from the answers.
//! Pure: the queries are sent by the caller.

use std::collections::BTreeMap;

use super::{By, Edge, Stat};

/// What one query asks, for [`stat_rows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figure {
    /// Requests per second.
    Rate,
    /// Of them, not 5xx.
    Ok,
    /// Of them, over mTLS.
    Mtls,
    /// Latency quantile (per mille).
    Quantile(u32),
    /// Open TCP connections.
    Tcp,
    /// Pods.
    Pods,
}

/// The labels rows are grouped by.
fn group(by: By) -> (&'static str, &'static str) {
    match by {
        By::Deployment => ("destination_workload_namespace", "destination_workload"),
        By::Pod => ("namespace", "pod"),
    }
}

/// The queries of `stat` by `by` in `namespace` (`None`: all) over
/// `window` (a PromQL duration such as `1m`).
pub fn stat_queries(by: By, namespace: Option<&str>, window: &str) -> Vec<(Figure, String)> {
    let (ns_label, name_label) = group(by);
    let g = format!("{ns_label}, {name_label}");
    let sel = match namespace {
        Some(ns) => format!(r#"reporter="destination",{ns_label}="{ns}""#),
        None => r#"reporter="destination""#.to_string(),
    };
    let rate =
        |extra: &str| format!("sum(rate(istio_requests_total{{{sel}{extra}}}[{window}])) by ({g})");
    let quantile = |q: u32| {
        (
            Figure::Quantile(q),
            format!(
                "histogram_quantile({}, sum(rate(istio_request_duration_milliseconds_bucket{{{sel}}}[{window}])) by (le, {g}))",
                f64::from(q) / 1000.0
            ),
        )
    };
    vec![
        (Figure::Rate, rate("")),
        (Figure::Ok, rate(r#",response_code!~"5..""#)),
        (
            Figure::Mtls,
            rate(r#",connection_security_policy="mutual_tls""#),
        ),
        quantile(500),
        quantile(950),
        quantile(990),
        (
            Figure::Tcp,
            format!(
                "sum(istio_tcp_connections_opened_total{{{sel}}}) by ({g}) - sum(istio_tcp_connections_closed_total{{{sel}}}) by ({g})"
            ),
        ),
        (
            Figure::Pods,
            format!("count(count(istio_requests_total{{{sel}}}) by ({g}, pod)) by ({g})"),
        ),
    ]
}

/// One series of an instant query's answer: its labels and value.
pub type Series = (BTreeMap<String, String>, f64);

/// The series of a Prometheus `/api/v1/query` answer.
pub fn series(answer: &serde_json::Value) -> anyhow::Result<Vec<Series>> {
    anyhow::ensure!(
        answer["status"] == "success",
        "Prometheus answered: {}",
        answer["error"].as_str().unwrap_or("no success")
    );
    Ok(answer["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let labels = s["metric"]
                .as_object()?
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let value = s["value"][1].as_str()?.parse::<f64>().ok()?;
            Some((labels, value))
        })
        .collect())
}

/// The rows of `stat` from the answers to [`stat_queries`].
pub fn stat_rows(by: By, answers: &[(Figure, Vec<Series>)]) -> Vec<Stat> {
    let (ns_label, name_label) = group(by);
    let mut rows: BTreeMap<(String, String), Stat> = BTreeMap::new();
    let finite = |v: f64| v.is_finite().then_some(v);
    for (figure, series) in answers {
        for (labels, value) in series {
            let key = (
                labels.get(ns_label).cloned().unwrap_or_default(),
                labels.get(name_label).cloned().unwrap_or_default(),
            );
            let row = rows.entry(key.clone()).or_insert_with(|| Stat {
                namespace: key.0,
                name: key.1,
                pods: 0,
                success_rate: None,
                rps: 0.0,
                latency_p50_ms: None,
                latency_p95_ms: None,
                latency_p99_ms: None,
                tcp_connections: 0,
                mtls_share: None,
            });
            match figure {
                Figure::Rate => row.rps = *value,
                // Ratios for now; divided by the rate below.
                Figure::Ok => row.success_rate = Some(*value),
                Figure::Mtls => row.mtls_share = Some(*value),
                Figure::Quantile(500) => row.latency_p50_ms = finite(*value),
                Figure::Quantile(950) => row.latency_p95_ms = finite(*value),
                Figure::Quantile(_) => row.latency_p99_ms = finite(*value),
                Figure::Tcp => row.tcp_connections = value.max(0.0) as u64,
                Figure::Pods => row.pods = *value as usize,
            }
        }
    }
    rows.into_values()
        .map(|mut r| {
            let share = |n: Option<f64>| n.filter(|_| r.rps > 0.0).map(|n| n / r.rps);
            r.success_rate = share(r.success_rate).or((r.rps > 0.0).then_some(0.0));
            r.mtls_share = share(r.mtls_share).or((r.rps > 0.0).then_some(0.0));
            r
        })
        .collect()
}

/// The query of `edges` in `namespace` (`None`: all).
pub fn edges_query(namespace: Option<&str>) -> String {
    let sel = match namespace {
        Some(ns) => format!(r#"reporter="destination",destination_workload_namespace="{ns}""#),
        None => r#"reporter="destination""#.to_string(),
    };
    let by = "source_workload_namespace, source_workload, destination_workload_namespace, destination_workload, source_principal, destination_principal, connection_security_policy";
    format!(
        "sum(istio_requests_total{{{sel}}}) by ({by}) > 0 or sum(istio_tcp_connections_opened_total{{{sel}}}) by ({by}) > 0"
    )
}

/// The edges from the answer to [`edges_query`].
pub fn edge_rows(series: &[Series]) -> Vec<Edge> {
    let mut out: Vec<Edge> = series
        .iter()
        .map(|(l, _)| {
            let get = |k: &str| l.get(k).cloned().unwrap_or_else(|| "unknown".into());
            Edge {
                src_namespace: get("source_workload_namespace"),
                src: get("source_workload"),
                dst_namespace: get("destination_workload_namespace"),
                dst: get("destination_workload"),
                client_id: get("source_principal"),
                server_id: get("destination_principal"),
                secured: l.get("connection_security_policy").map(String::as_str)
                    == Some("mutual_tls"),
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(pairs: &[(&str, &str, f64)]) -> Vec<Series> {
        pairs
            .iter()
            .map(|(ns, w, v)| {
                let labels = [
                    ("destination_workload_namespace".to_string(), ns.to_string()),
                    ("destination_workload".to_string(), w.to_string()),
                ]
                .into();
                (labels, *v)
            })
            .collect()
    }

    #[test]
    fn rows_from_answers() {
        let q = stat_queries(By::Deployment, Some("shop"), "1m");
        assert_eq!(q.len(), 8);
        assert_eq!(
            q[0].1,
            r#"sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="shop"}[1m])) by (destination_workload_namespace, destination_workload)"#
        );
        assert!(
            q[5].1.starts_with("histogram_quantile(0.99, "),
            "{}",
            q[5].1
        );
        let rows = stat_rows(
            By::Deployment,
            &[
                (
                    Figure::Rate,
                    answer(&[("shop", "api", 10.0), ("shop", "idle", 0.0)]),
                ),
                (Figure::Ok, answer(&[("shop", "api", 7.5)])),
                (Figure::Mtls, answer(&[("shop", "api", 10.0)])),
                (
                    Figure::Quantile(990),
                    answer(&[("shop", "api", 480.0), ("shop", "idle", f64::NAN)]),
                ),
                (Figure::Pods, answer(&[("shop", "api", 2.0)])),
            ],
        );
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].name, "api");
        assert_eq!(rows[0].success_rate, Some(0.75));
        assert_eq!(rows[0].mtls_share, Some(1.0));
        assert_eq!(rows[0].latency_p99_ms, Some(480.0));
        assert_eq!(rows[0].pods, 2);
        assert_eq!(rows[1].success_rate, None, "no requests, no rate");
        assert_eq!(rows[1].latency_p99_ms, None);
    }
}
