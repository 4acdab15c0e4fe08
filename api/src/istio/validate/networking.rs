//! Checks of `networking.istio.io` resources.

use std::collections::BTreeSet;

use super::Problem;
use super::{Check, did_you_mean};
use crate::istio::destination_rule::{
    ConnectionPoolSettings, DestinationRuleSpec, LoadBalancerSettings, OutlierDetection,
    TrafficPolicy,
};
use crate::istio::service_entry::{ServiceEntrySpec, SidecarSpec, WorkloadEntrySpec};
use crate::istio::virtual_service::{HttpRoute, RouteDestination, VirtualServiceSpec};
use crate::routing::RETRY_ON;

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

/// Checks a VirtualService spec.
pub fn virtual_service(spec: &VirtualServiceSpec) -> Vec<Problem> {
    let mut c = Check::default();
    let delegate_only = spec.hosts.as_ref().is_none_or(Vec::is_empty);
    if delegate_only && spec.http.as_ref().is_none_or(Vec::is_empty) {
        c.fail("spec.hosts", "at least one host is required");
    }
    for (i, h) in spec.hosts.iter().flatten().enumerate() {
        if h.is_empty() {
            c.fail(format!("spec.hosts[{i}]"), "empty host");
        }
    }
    if [
        &spec.http.as_ref().map(Vec::len),
        &spec.tcp.as_ref().map(Vec::len),
        &spec.tls.as_ref().map(Vec::len),
    ]
    .iter()
    .all(|n| n.unwrap_or(0) == 0)
    {
        c.fail(
            "spec",
            "at least one of http, tcp or tls routes is required",
        );
    }
    for (i, r) in spec.http.iter().flatten().enumerate() {
        http_route(&mut c, &format!("spec.http[{i}]"), r);
    }
    c.export_to("spec.exportTo", spec.export_to.as_ref());
    for (kind, routes) in [
        (
            "tcp",
            spec.tcp
                .iter()
                .flatten()
                .map(|r| r.route.as_deref().unwrap_or_default())
                .collect::<Vec<_>>(),
        ),
        (
            "tls",
            spec.tls
                .iter()
                .flatten()
                .map(|r| r.route.as_deref().unwrap_or_default())
                .collect(),
        ),
    ] {
        for (i, route) in routes.iter().enumerate() {
            l4_routes(&mut c, &format!("spec.{kind}[{i}]"), route);
        }
    }
    for (i, t) in spec.tls.iter().flatten().enumerate() {
        for (j, m) in t.r#match.iter().flatten().enumerate() {
            if m.sni_hosts.as_ref().is_none_or(Vec::is_empty) {
                c.fail(
                    format!("spec.tls[{i}].match[{j}].sniHosts"),
                    "required: the SNI names this route takes",
                );
            }
            c.port(&format!("spec.tls[{i}].match[{j}].port"), m.port);
        }
    }
    for (i, t) in spec.tcp.iter().flatten().enumerate() {
        for (j, m) in t.r#match.iter().flatten().enumerate() {
            c.port(&format!("spec.tcp[{i}].match[{j}].port"), m.port);
        }
    }
    c.0
}

fn l4_routes(c: &mut Check, at: &str, route: &[RouteDestination]) {
    if route.is_empty() {
        c.fail(
            format!("{at}.route"),
            "at least one destination is required",
        );
    }
    let mut weights = Vec::new();
    for (j, d) in route.iter().enumerate() {
        let f = format!("{at}.route[{j}]");
        c.destination(&format!("{f}.destination"), d.destination.as_ref());
        weights.push((d.weight, f));
    }
    c.weights(&format!("{at}.route"), &weights);
}

fn http_route(c: &mut Check, at: &str, r: &HttpRoute) {
    let has_route = r.route.as_ref().is_some_and(|v| !v.is_empty());
    let actions = [
        has_route,
        r.redirect.is_some(),
        r.direct_response.is_some(),
        r.delegate.is_some(),
    ];
    match actions.iter().filter(|a| **a).count() {
        0 => c.fail(
            at,
            "needs one of route, redirect, directResponse or delegate",
        ),
        1 => {}
        _ => c.fail(
            at,
            "set only one of route, redirect, directResponse and delegate",
        ),
    }
    for (j, m) in r.r#match.iter().flatten().enumerate() {
        let f = format!("{at}.match[{j}]");
        for (name, sm) in [
            ("uri", &m.uri),
            ("scheme", &m.scheme),
            ("method", &m.method),
            ("authority", &m.authority),
        ] {
            if let Some(sm) = sm {
                c.string_match(&format!("{f}.{name}"), sm, false);
            }
        }
        for (name, map) in [
            ("headers", &m.headers),
            ("queryParams", &m.query_params),
            ("withoutHeaders", &m.without_headers),
        ] {
            for (k, sm) in map.iter().flatten() {
                c.string_match(&format!("{f}.{name}.{k}"), sm, true);
            }
        }
        c.port(&format!("{f}.port"), m.port);
    }
    let mut weights = Vec::new();
    for (j, d) in r.route.iter().flatten().enumerate() {
        let f = format!("{at}.route[{j}]");
        c.destination(&format!("{f}.destination"), d.destination.as_ref());
        weights.push((d.weight, f));
    }
    c.weights(&format!("{at}.route"), &weights);
    if let Some(d) = &r.direct_response {
        match d.status {
            Some(s) if (200..=599).contains(&s) => {}
            Some(s) => c.fail(
                format!("{at}.directResponse.status"),
                format!("{s} is not an HTTP status (200-599)"),
            ),
            None => c.fail(format!("{at}.directResponse.status"), "required"),
        }
    }
    if let Some(rw) = &r.rewrite {
        if rw.uri.is_some() && rw.uri_regex_rewrite.is_some() {
            c.fail(
                format!("{at}.rewrite"),
                "set only one of uri and uriRegexRewrite",
            );
        }
        if let Some(re) = rw
            .uri_regex_rewrite
            .as_ref()
            .and_then(|x| x.r#match.as_ref())
        {
            c.regex(&format!("{at}.rewrite.uriRegexRewrite.match"), re);
        }
    }
    c.duration(&format!("{at}.timeout"), r.timeout.as_ref());
    if let Some(rt) = &r.retries {
        if rt.attempts.is_some_and(|a| a < 0) {
            c.fail(format!("{at}.retries.attempts"), "must be 0 or more");
        }
        c.duration(
            &format!("{at}.retries.perTryTimeout"),
            rt.per_try_timeout.as_ref(),
        );
        if let Some(on) = &rt.retry_on
            && let Err(e) = crate::routing::retry_on(on)
        {
            let cond = e
                .trim_start_matches("unknown retry condition ")
                .trim_matches('"');
            let hint = did_you_mean(cond, RETRY_ON)
                .map(|h| format!(" (did you mean {h:?}?)"))
                .unwrap_or_default();
            c.fail(
                format!("{at}.retries.retryOn"),
                format!(
                    "{e}{hint}; use a status code or one of {}",
                    RETRY_ON.join(", ")
                ),
            );
        }
    }
    if let Some(f) = &r.fault {
        if let Some(d) = &f.delay {
            c.duration(
                &format!("{at}.fault.delay.fixedDelay"),
                d.fixed_delay.as_ref(),
            );
            c.percent(
                &format!("{at}.fault.delay.percentage"),
                d.percentage.as_ref(),
            );
            if d.fixed_delay.is_none() && d.exponential_delay.is_none() {
                c.fail(
                    format!("{at}.fault.delay.fixedDelay"),
                    "required: how long to delay",
                );
            }
        }
        if let Some(a) = &f.abort {
            c.percent(
                &format!("{at}.fault.abort.percentage"),
                a.percentage.as_ref(),
            );
            match (a.http_status, &a.grpc_status) {
                (Some(s), None) if !(200..=599).contains(&s) => {
                    c.fail(
                        format!("{at}.fault.abort.httpStatus"),
                        format!("{s} is not an HTTP status (200-599)"),
                    );
                }
                (Some(_), Some(_)) => c.fail(
                    format!("{at}.fault.abort"),
                    "set only one of httpStatus and grpcStatus",
                ),
                (None, None) if a.http2_error.is_none() => {
                    c.fail(
                        format!("{at}.fault.abort"),
                        "needs httpStatus or grpcStatus",
                    );
                }
                _ => {}
            }
        }
    }
    if r.mirror.is_some() {
        c.destination(&format!("{at}.mirror"), r.mirror.as_ref());
        if r.mirrors.as_ref().is_some_and(|m| !m.is_empty()) {
            c.fail(
                format!("{at}.mirrors"),
                "set only one of mirror and mirrors",
            );
        }
    }
    c.percent(
        &format!("{at}.mirrorPercentage"),
        r.mirror_percentage.as_ref(),
    );
    for (j, m) in r.mirrors.iter().flatten().enumerate() {
        c.destination(
            &format!("{at}.mirrors[{j}].destination"),
            m.destination.as_ref(),
        );
        c.percent(
            &format!("{at}.mirrors[{j}].percentage"),
            m.percentage.as_ref(),
        );
    }
    if let Some(cors) = &r.cors_policy {
        c.duration(&format!("{at}.corsPolicy.maxAge"), cors.max_age.as_ref());
        for (j, o) in cors.allow_origins.iter().flatten().enumerate() {
            c.string_match(&format!("{at}.corsPolicy.allowOrigins[{j}]"), o, false);
        }
    }
}

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
    if let Some(tls) = &tp.tls {
        c.one_of(&format!("{at}.tls.mode"), tls.mode.as_ref(), TLS_MODES);
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
        if let Some(tls) = &p.tls {
            c.one_of(&format!("{f}.tls.mode"), tls.mode.as_ref(), TLS_MODES);
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

const SE_PROTOCOLS: &[&str] = &["HTTP", "HTTPS", "GRPC", "HTTP2", "MONGO", "TCP", "TLS"];
const RESOLUTIONS: &[&str] = &["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"];
const LOCATIONS: &[&str] = &["MESH_EXTERNAL", "MESH_INTERNAL"];
const OUTBOUND_MODES: &[&str] = &["REGISTRY_ONLY", "ALLOW_ANY"];

/// Checks a ServiceEntry spec.
pub fn service_entry(spec: &ServiceEntrySpec) -> Vec<Problem> {
    let mut c = Check::default();
    let hosts = spec.hosts.as_deref().unwrap_or_default();
    if hosts.is_empty() {
        c.fail("spec.hosts", "at least one host is required");
    }
    c.one_of("spec.location", spec.location.as_ref(), LOCATIONS);
    c.one_of("spec.resolution", spec.resolution.as_ref(), RESOLUTIONS);
    let resolution = spec.resolution.as_deref().unwrap_or("NONE");
    if resolution.starts_with("DNS") {
        for (i, h) in hosts.iter().enumerate() {
            if h.starts_with('*') {
                c.fail(
                    format!("spec.hosts[{i}]"),
                    format!("{h:?}: a wildcard host cannot be resolved with {resolution}"),
                );
            }
        }
    }
    if resolution == "STATIC"
        && spec.endpoints.as_ref().is_none_or(Vec::is_empty)
        && spec.workload_selector.is_none()
    {
        c.fail(
            "spec.endpoints",
            "STATIC resolution needs endpoints or a workloadSelector",
        );
    }
    if spec.ports.as_ref().is_none_or(Vec::is_empty) {
        c.fail("spec.ports", "at least one port is required");
    }
    let mut names = BTreeSet::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let at = format!("spec.ports[{i}]");
        match p.number {
            None => c.fail(format!("{at}.number"), "required"),
            n => c.port(&format!("{at}.number"), n),
        }
        c.port(&format!("{at}.targetPort"), p.target_port);
        c.one_of(&format!("{at}.protocol"), p.protocol.as_ref(), SE_PROTOCOLS);
        if let Some(n) = &p.name
            && !names.insert(n.clone())
        {
            c.fail(
                format!("{at}.name"),
                format!("port name {n:?} is used twice"),
            );
        }
    }
    for (i, a) in spec.addresses.iter().flatten().enumerate() {
        if a.split('/')
            .next()
            .is_none_or(|ip| ip.parse::<std::net::IpAddr>().is_err())
        {
            c.fail(
                format!("spec.addresses[{i}]"),
                format!("{a:?} is not an IP address or CIDR"),
            );
        }
    }
    for (i, e) in spec.endpoints.iter().flatten().enumerate() {
        workload_entry_into(&mut c, &format!("spec.endpoints[{i}]"), e);
    }
    c.0
}

fn workload_entry_into(c: &mut Check, at: &str, e: &WorkloadEntrySpec) {
    if e.address.as_deref().is_none_or(str::is_empty) {
        c.fail(
            format!("{at}.address"),
            "required: an IP address, a hostname or a unix:// socket",
        );
    }
    for (name, p) in e.ports.iter().flatten() {
        c.port(&format!("{at}.ports.{name}"), Some(*p));
    }
}

/// Checks a WorkloadEntry spec.
pub fn workload_entry(spec: &WorkloadEntrySpec) -> Vec<Problem> {
    let mut c = Check::default();
    workload_entry_into(&mut c, "spec", spec);
    c.0
}

/// Checks a Sidecar spec.
pub fn sidecar(spec: &SidecarSpec) -> Vec<Problem> {
    let mut c = Check::default();
    for (i, e) in spec.egress.iter().flatten().enumerate() {
        let hosts = e.hosts.as_deref().unwrap_or_default();
        if hosts.is_empty() {
            c.fail(
                format!("spec.egress[{i}].hosts"),
                "at least one host is required",
            );
        }
        for (j, h) in hosts.iter().enumerate() {
            let ok = h
                .split_once('/')
                .is_some_and(|(ns, host)| !ns.is_empty() && !host.is_empty());
            if !ok {
                c.fail(
                    format!("spec.egress[{i}].hosts[{j}]"),
                    format!("{h:?} is not namespace/host; e.g. \"./*\", \"istio-system/*\", \"*/reviews.default.svc.cluster.local\""),
                );
            }
        }
        c.port(
            &format!("spec.egress[{i}].port.number"),
            e.port.as_ref().and_then(|p| p.number),
        );
    }
    for (i, l) in spec.ingress.iter().flatten().enumerate() {
        match l.port.as_ref().and_then(|p| p.number) {
            None => c.fail(format!("spec.ingress[{i}].port.number"), "required"),
            n => c.port(&format!("spec.ingress[{i}].port.number"), n),
        }
    }
    c.one_of(
        "spec.outboundTrafficPolicy.mode",
        spec.outbound_traffic_policy
            .as_ref()
            .and_then(|o| o.mode.as_ref()),
        OUTBOUND_MODES,
    );
    c.0
}
