//! A destination host's DestinationRule, resolved per subset and port
//! with Istio's precedence (the subset's port-level settings, the
//! subset's, the host's port-level settings, the host's) and Istio's
//! defaults filled: one wire [`proto::Subset`] per (subset, port) that has
//! settings of its own, as Envoy has one cluster for each.

use std::time::Duration;

use super::{Error, duration, duration_or};
use crate::istio::destination_rule::{
    ClientTlsSettings, ConnectionPoolSettings, LoadBalancerSettings, OutlierDetection,
    PortTrafficPolicy, TrafficPolicy,
};
use crate::proto;
use crate::traffic::Backend;

/// Envoy's default ring size for consistent hashing.
pub const DEFAULT_RING: u64 = 1024;

/// The wire backend of `host`.
pub fn backend(host: &str, b: &Backend) -> Result<proto::Backend, Error> {
    let dr = b.policy.as_ref();
    let top = dr.and_then(|d| d.traffic_policy.as_ref());
    let named = dr.and_then(|d| d.subsets.as_ref()).into_iter().flatten();
    let groups = std::iter::once((String::new(), None, None, String::from("trafficPolicy"))).chain(
        named.enumerate().map(|(i, s)| {
            (
                s.name.clone().unwrap_or_default(),
                s.labels.as_ref(),
                s.traffic_policy.as_ref(),
                format!("subsets[{i}].trafficPolicy"),
            )
        }),
    );
    let mut subsets = Vec::new();
    for (name, labels, policy, at) in groups {
        for port in std::iter::once(0).chain(tuned_ports(&[top, policy])) {
            subsets
                .push(subset(&name, labels, top, policy, port).map_err(|e| format!("{at}.{e}"))?);
        }
    }
    Ok(proto::Backend {
        host: host.to_string(),
        ports: b.ports.iter().map(Into::into).collect(),
        destination_rule: b.destination_rule.clone().unwrap_or_default(),
        subsets,
        retry_budget: top
            .and_then(|p| p.retry_budget.as_ref())
            .map(|r| proto::RetryBudget {
                percent: r.percent.unwrap_or(20.0).clamp(0.0, 100.0),
                min_retry_concurrency: r.min_retry_concurrency.unwrap_or(3),
            }),
    })
}

/// Istio's precedence for one field.
fn field<'a, T>(
    top: Option<&'a TrafficPolicy>,
    sub: Option<&'a TrafficPolicy>,
    port: u32,
    of: impl Fn(&'a TrafficPolicy) -> Option<&'a T>,
    of_port: impl Fn(&'a PortTrafficPolicy) -> Option<&'a T>,
) -> Option<&'a T> {
    let at_port = |p: Option<&'a TrafficPolicy>| {
        p.and_then(|p| p.port_level_settings.as_ref())
            .into_iter()
            .flatten()
            .find(|s| port != 0 && s.port.as_ref().and_then(|p| p.number) == Some(port))
            .and_then(&of_port)
    };
    at_port(sub)
        .or_else(|| sub.and_then(&of))
        .or_else(|| at_port(top))
        .or_else(|| top.and_then(&of))
}

/// Ports with port-level settings in `policies`.
fn tuned_ports(policies: &[Option<&TrafficPolicy>]) -> Vec<u32> {
    let mut ports: Vec<u32> = policies
        .iter()
        .flatten()
        .flat_map(|p| p.port_level_settings.iter().flatten())
        .filter_map(|s| s.port.as_ref()?.number)
        .filter(|n| *n != 0)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

fn subset(
    name: &str,
    labels: Option<&std::collections::BTreeMap<String, String>>,
    top: Option<&TrafficPolicy>,
    policy: Option<&TrafficPolicy>,
    port: u32,
) -> Result<proto::Subset, Error> {
    let lb = field(
        top,
        policy,
        port,
        |p| p.load_balancer.as_ref(),
        |p| p.load_balancer.as_ref(),
    );
    let pool = field(
        top,
        policy,
        port,
        |p| p.connection_pool.as_ref(),
        |p| p.connection_pool.as_ref(),
    );
    let od = field(
        top,
        policy,
        port,
        |p| p.outlier_detection.as_ref(),
        |p| p.outlier_detection.as_ref(),
    );
    let tls = field(top, policy, port, |p| p.tls.as_ref(), |p| p.tls.as_ref());
    Ok(proto::Subset {
        name: name.to_string(),
        labels: labels.cloned().unwrap_or_default(),
        port,
        load_balancer: lb
            .map(|lb| load_balancer(lb).map_err(|e| format!("loadBalancer.{e}")))
            .transpose()?,
        connection_pool: pool
            .map(|p| connection_pool(p).map_err(|e| format!("connectionPool.{e}")))
            .transpose()?,
        outlier_detection: od
            .map(|od| outlier_detection(od).map_err(|e| format!("outlierDetection.{e}")))
            .transpose()?,
        tls: tls.map(upstream_tls),
    })
}

/// `tls` on the wire.
pub fn upstream_tls(t: &ClientTlsSettings) -> proto::UpstreamTls {
    let text = |s: &Option<String>| s.clone().unwrap_or_default();
    proto::UpstreamTls {
        mode: match t.mode.as_deref() {
            Some("DISABLE") => proto::TlsMode::Disable,
            Some("SIMPLE") => proto::TlsMode::Simple,
            Some("MUTUAL") => proto::TlsMode::Mutual,
            Some("ISTIO_MUTUAL") => proto::TlsMode::IstioMutual,
            _ => proto::TlsMode::Auto,
        } as i32,
        ca_certificates: text(&t.ca_certificates),
        client_certificate: text(&t.client_certificate),
        private_key: text(&t.private_key),
        sni: text(&t.sni),
        subject_alt_names: t.subject_alt_names.clone().unwrap_or_default(),
        insecure_skip_verify: t.insecure_skip_verify.unwrap_or(false),
    }
}

/// `loadBalancer` on the wire.
pub fn load_balancer(lb: &LoadBalancerSettings) -> Result<proto::LoadBalancer, Error> {
    use proto::consistent_hash::Key;
    use proto::load_balancer::Policy;
    if let Some(ch) = &lb.consistent_hash {
        let key = if let Some(h) = &ch.http_header_name {
            Key::Header(h.to_ascii_lowercase())
        } else if let Some(c) = &ch.http_cookie {
            Key::Cookie(proto::HashCookie {
                name: c.name.clone().unwrap_or_default(),
                path: c.path.clone().unwrap_or_default(),
                ttl: duration(c.ttl.as_ref(), "consistentHash.httpCookie.ttl")?,
            })
        } else if ch.use_source_ip == Some(true) {
            Key::SourceIp(true)
        } else if let Some(q) = &ch.http_query_parameter_name {
            Key::QueryParameter(q.clone())
        } else {
            return Err(
                "consistentHash: give a header, cookie, source IP or query parameter".into(),
            );
        };
        let ring_size = ch
            .ring_hash
            .as_ref()
            .and_then(|r| r.minimum_ring_size)
            .or(ch.minimum_ring_size)
            .or_else(|| ch.maglev.as_ref().and_then(|m| m.table_size))
            .unwrap_or(DEFAULT_RING);
        return Ok(proto::LoadBalancer {
            policy: Some(Policy::ConsistentHash(proto::ConsistentHash {
                key: Some(key),
                ring_size,
            })),
        });
    }
    let simple = match lb.simple.as_deref() {
        Some("RANDOM") => proto::SimpleLb::Random,
        Some("LEAST_REQUEST" | "LEAST_CONN") => proto::SimpleLb::LeastRequest,
        _ => proto::SimpleLb::RoundRobin,
    };
    Ok(proto::LoadBalancer {
        policy: Some(Policy::Simple(simple as i32)),
    })
}

fn positive(v: Option<i32>) -> u32 {
    v.and_then(|v| u32::try_from(v).ok()).unwrap_or(0)
}

/// `connectionPool` on the wire.
pub fn connection_pool(pool: &ConnectionPoolSettings) -> Result<proto::ConnectionPool, Error> {
    let tcp = pool.tcp.as_ref();
    let http = pool.http.as_ref();
    Ok(proto::ConnectionPool {
        max_connections: positive(tcp.and_then(|t| t.max_connections)),
        max_requests: positive(http.and_then(|h| h.http2_max_requests)),
        max_pending_requests: positive(http.and_then(|h| h.http1_max_pending_requests)),
        max_requests_per_connection: positive(http.and_then(|h| h.max_requests_per_connection)),
        connect_timeout: duration(
            tcp.and_then(|t| t.connect_timeout.as_ref()),
            "tcp.connectTimeout",
        )?,
        idle_timeout: duration(
            http.and_then(|h| h.idle_timeout.as_ref())
                .or(tcp.and_then(|t| t.idle_timeout.as_ref())),
            "http.idleTimeout",
        )?,
    })
}

/// `outlierDetection` on the wire, with Istio's defaults.
pub fn outlier_detection(od: &OutlierDetection) -> Result<proto::OutlierDetection, Error> {
    let pct = |v: Option<i32>, default: u32| {
        v.and_then(|v| u32::try_from(v).ok())
            .unwrap_or(default)
            .min(100)
    };
    Ok(proto::OutlierDetection {
        consecutive_5xx: od.consecutive_5xx_errors.unwrap_or(5),
        consecutive_gateway: od
            .consecutive_gateway_errors
            .or(od.consecutive_errors.and_then(|v| u32::try_from(v).ok()))
            .unwrap_or(0),
        consecutive_local_origin: od.consecutive_local_origin_failures.unwrap_or(5),
        split_local_origin: od.split_external_local_origin_errors.unwrap_or(false),
        interval: Some(duration_or(
            od.interval.as_ref(),
            "interval",
            Duration::from_secs(10),
        )?),
        base_ejection_time: Some(duration_or(
            od.base_ejection_time.as_ref(),
            "baseEjectionTime",
            Duration::from_secs(30),
        )?),
        max_ejection_percent: pct(od.max_ejection_percent, 10),
        min_health_percent: pct(od.min_health_percent, 0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_takes_istios_precedence_and_goes_on_the_wire() {
        let policy: TrafficPolicy = serde_yaml_ng::from_str(
            "tls: {mode: ISTIO_MUTUAL}
portLevelSettings:
- port: {number: 443}
  tls: {mode: SIMPLE, caCertificates: /etc/ca.pem, sni: api.example, subjectAltNames: [api.example]}
",
        )
        .unwrap();
        let at_443 = subset("", None, Some(&policy), None, 443)
            .unwrap()
            .tls
            .unwrap();
        assert_eq!(at_443.mode(), proto::TlsMode::Simple);
        assert_eq!(
            (at_443.ca_certificates.as_str(), at_443.sni.as_str()),
            ("/etc/ca.pem", "api.example")
        );
        assert_eq!(at_443.subject_alt_names, ["api.example"]);
        let other = subset("", None, Some(&policy), None, 0)
            .unwrap()
            .tls
            .unwrap();
        assert_eq!(other.mode(), proto::TlsMode::IstioMutual);
        let sub: TrafficPolicy = serde_yaml_ng::from_str("tls: {mode: DISABLE}").unwrap();
        let v1 = subset("v1", None, Some(&policy), Some(&sub), 443)
            .unwrap()
            .tls
            .unwrap();
        assert_eq!(
            v1.mode(),
            proto::TlsMode::Disable,
            "a subset's own tls comes before the host's port-level"
        );
        assert!(subset("", None, None, None, 0).unwrap().tls.is_none());
    }
}
