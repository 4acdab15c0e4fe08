//! Checks of `ServiceEntry`, `WorkloadEntry` and `Sidecar`.

use std::collections::BTreeSet;

use super::Check;
use super::Problem;
use crate::istio::service_entry::{ServiceEntrySpec, SidecarSpec, WorkloadEntrySpec};

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
