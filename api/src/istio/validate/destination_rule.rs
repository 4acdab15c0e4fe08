//! Checks of `DestinationRule`: host, subsets and traffic policies
//! (balancing, connection pools, outlier detection, TLS, port-level
//! settings).

use std::collections::BTreeSet;

use super::Check;
use super::Problem;
use crate::istio::destination_rule::{
    ConnectionPoolSettings, DestinationRuleSpec, LoadBalancerSettings, OutlierDetection,
    TrafficPolicy,
};

const SIMPLE_LB: &[&str] = &[
    "UNSPECIFIED",
    "RANDOM",
    "PASSTHROUGH",
    "ROUND_ROBIN",
    "LEAST_REQUEST",
    "LEAST_CONN",
];
const TLS_MODES: &[&str] = &["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"];
const H2_UPGRADE: &[&str] = &["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"];

/// Checks a DestinationRule spec.
pub fn destination_rule(spec: &DestinationRuleSpec) -> Vec<Problem> {
    let mut c = Check::default();
    if spec.host.as_deref().is_none_or(str::is_empty) {
        c.fail("spec.host", "required: the service this rule applies to");
    }
    if let Some(tp) = &spec.traffic_policy {
        traffic_policy(&mut c, "spec.trafficPolicy", tp);
    }
    c.export_to("spec.exportTo", spec.export_to.as_ref());
    let mut names = BTreeSet::new();
    for (i, s) in spec.subsets.iter().flatten().enumerate() {
        let at = format!("spec.subsets[{i}]");
        match s.name.as_deref() {
            None | Some("") => c.fail(format!("{at}.name"), "required"),
            Some(n) if !names.insert(n.to_string()) => c.fail(
                format!("{at}.name"),
                format!("subset {n:?} is defined twice"),
            ),
            Some(_) => {}
        }
        if let Some(tp) = &s.traffic_policy {
            traffic_policy(&mut c, &format!("{at}.trafficPolicy"), tp);
        }
    }
    c.0
}

fn traffic_policy(c: &mut Check, at: &str, tp: &TrafficPolicy) {
    if let Some(lb) = &tp.load_balancer {
        load_balancer(c, &format!("{at}.loadBalancer"), lb);
    }
    if let Some(cp) = &tp.connection_pool {
        connection_pool(c, &format!("{at}.connectionPool"), cp);
    }
    if let Some(od) = &tp.outlier_detection {
        outlier(c, &format!("{at}.outlierDetection"), od);
    }
    if let Some(t) = &tp.tls {
        tls(c, &format!("{at}.tls"), t);
    }
    if let Some(rb) = &tp.retry_budget {
        if let Some(p) = rb.percent
            && !(0.0..=100.0).contains(&p)
        {
            c.fail(
                format!("{at}.retryBudget.percent"),
                format!("{p} is outside 0..100"),
            );
        }
        c.duration(
            &format!("{at}.retryBudget.budgetInterval"),
            rb.budget_interval.as_ref(),
        );
    }
    for (i, p) in tp.port_level_settings.iter().flatten().enumerate() {
        let f = format!("{at}.portLevelSettings[{i}]");
        match p.port.as_ref().and_then(|p| p.number) {
            None => c.fail(format!("{f}.port.number"), "required"),
            n => c.port(&format!("{f}.port.number"), n),
        }
        if let Some(lb) = &p.load_balancer {
            load_balancer(c, &format!("{f}.loadBalancer"), lb);
        }
        if let Some(cp) = &p.connection_pool {
            connection_pool(c, &format!("{f}.connectionPool"), cp);
        }
        if let Some(od) = &p.outlier_detection {
            outlier(c, &format!("{f}.outlierDetection"), od);
        }
        if let Some(t) = &p.tls {
            tls(c, &format!("{f}.tls"), t);
        }
    }
}

/// `tls`: a known mode; MUTUAL with its client certificate and key; the
/// files as absolute paths the proxy reads.
fn tls(c: &mut Check, at: &str, t: &crate::istio::destination_rule::ClientTlsSettings) {
    c.one_of(&format!("{at}.mode"), t.mode.as_ref(), TLS_MODES);
    if t.mode.as_deref() == Some("MUTUAL") && t.credential_name.is_none() {
        for (field, v) in [
            ("clientCertificate", &t.client_certificate),
            ("privateKey", &t.private_key),
        ] {
            if v.as_deref().is_none_or(str::is_empty) {
                c.fail(
                    format!("{at}.{field}"),
                    "required with mode MUTUAL (or give credentialName)",
                );
            }
        }
    }
    for (field, v) in [
        ("clientCertificate", &t.client_certificate),
        ("privateKey", &t.private_key),
        ("caCertificates", &t.ca_certificates),
    ] {
        if let Some(path) = v
            .as_deref()
            .filter(|p| !p.is_empty() && !p.starts_with('/'))
        {
            c.fail(
                format!("{at}.{field}"),
                format!("{path:?}: give an absolute path to a PEM file the proxy can read"),
            );
        }
    }
}

fn load_balancer(c: &mut Check, at: &str, lb: &LoadBalancerSettings) {
    c.one_of(&format!("{at}.simple"), lb.simple.as_ref(), SIMPLE_LB);
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        c.fail(at, "set only one of simple and consistentHash");
    }
    if let Some(ch) = &lb.consistent_hash {
        let keys = [
            ch.http_header_name.is_some(),
            ch.http_cookie.is_some(),
            ch.use_source_ip.is_some(),
            ch.http_query_parameter_name.is_some(),
        ];
        if keys.iter().filter(|k| **k).count() != 1 {
            c.fail(
                format!("{at}.consistentHash"),
                "set exactly one of httpHeaderName, httpCookie, useSourceIp and httpQueryParameterName",
            );
        }
        if ch.ring_hash.is_some() && ch.maglev.is_some() {
            c.fail(
                format!("{at}.consistentHash"),
                "set only one of ringHash and maglev",
            );
        }
        if let Some(cookie) = &ch.http_cookie {
            if cookie.name.as_deref().is_none_or(str::is_empty) {
                c.fail(format!("{at}.consistentHash.httpCookie.name"), "required");
            }
            c.duration(
                &format!("{at}.consistentHash.httpCookie.ttl"),
                cookie.ttl.as_ref(),
            );
        }
    }
    if let Some(d) = &lb.warmup_duration_secs {
        c.duration(&format!("{at}.warmupDurationSecs"), Some(d));
    }
    if let Some(w) = &lb.warmup {
        c.duration(&format!("{at}.warmup.duration"), w.duration.as_ref());
        if let Some(p) = w.minimum_percent
            && !(0.0..=100.0).contains(&p)
        {
            c.fail(
                format!("{at}.warmup.minimumPercent"),
                format!("{p} is outside 0..100"),
            );
        }
    }
}

fn non_negative(c: &mut Check, field: String, v: Option<i32>) {
    if let Some(v) = v
        && v < 0
    {
        c.fail(field, format!("{v} is negative"));
    }
}

fn connection_pool(c: &mut Check, at: &str, cp: &ConnectionPoolSettings) {
    if let Some(tcp) = &cp.tcp {
        non_negative(c, format!("{at}.tcp.maxConnections"), tcp.max_connections);
        c.duration(
            &format!("{at}.tcp.connectTimeout"),
            tcp.connect_timeout.as_ref(),
        );
        c.duration(
            &format!("{at}.tcp.maxConnectionDuration"),
            tcp.max_connection_duration.as_ref(),
        );
        c.duration(&format!("{at}.tcp.idleTimeout"), tcp.idle_timeout.as_ref());
        if let Some(k) = &tcp.tcp_keepalive {
            c.duration(&format!("{at}.tcp.tcpKeepalive.time"), k.time.as_ref());
            c.duration(
                &format!("{at}.tcp.tcpKeepalive.interval"),
                k.interval.as_ref(),
            );
        }
    }
    if let Some(h) = &cp.http {
        for (name, v) in [
            ("http1MaxPendingRequests", h.http1_max_pending_requests),
            ("http2MaxRequests", h.http2_max_requests),
            ("maxRequestsPerConnection", h.max_requests_per_connection),
            ("maxRetries", h.max_retries),
            ("maxConcurrentStreams", h.max_concurrent_streams),
        ] {
            non_negative(c, format!("{at}.http.{name}"), v);
        }
        c.duration(&format!("{at}.http.idleTimeout"), h.idle_timeout.as_ref());
        c.one_of(
            &format!("{at}.http.h2UpgradePolicy"),
            h.h2_upgrade_policy.as_ref(),
            H2_UPGRADE,
        );
    }
}

fn outlier(c: &mut Check, at: &str, od: &OutlierDetection) {
    c.duration(&format!("{at}.interval"), od.interval.as_ref());
    c.duration(
        &format!("{at}.baseEjectionTime"),
        od.base_ejection_time.as_ref(),
    );
    for (name, v) in [
        ("maxEjectionPercent", od.max_ejection_percent),
        ("minHealthPercent", od.min_health_percent),
    ] {
        if let Some(v) = v
            && !(0..=100).contains(&v)
        {
            c.fail(format!("{at}.{name}"), format!("{v} is outside 0..100"));
        }
    }
    if od.consecutive_local_origin_failures.is_some()
        && od.split_external_local_origin_errors != Some(true)
    {
        c.fail(
            format!("{at}.consecutiveLocalOriginFailures"),
            "only counted with splitExternalLocalOriginErrors: true; set it",
        );
    }
}
