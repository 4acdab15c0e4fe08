//! Checks that typed objects carry what the runtime needs, naming the
//! field path of the first problem found.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Object;

type Problem = (String, String);

fn problem(field: impl Into<String>, message: impl Into<String>) -> Problem {
    (field.into(), message.into())
}

/// RFC 1123 label: what Kubernetes requires of namespace and service names.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn meta(m: &ObjectMeta, label_only: bool) -> Result<(), Problem> {
    let name = m
        .name
        .as_deref()
        .ok_or_else(|| problem("metadata.name", "required"))?;
    let ok = if label_only {
        is_dns_label(name)
    } else {
        is_dns_subdomain(name)
    };
    if !ok {
        return Err(problem(
            "metadata.name",
            format!("{name:?} must be lowercase letters, digits and '-' (RFC 1123)"),
        ));
    }
    if let Some(ns) = &m.namespace
        && !is_dns_label(ns)
    {
        return Err(problem(
            "metadata.namespace",
            format!("{ns:?} is not a valid namespace name"),
        ));
    }
    Ok(())
}

/// Where an object is headed: the local runtime runs a container's
/// `command` and ignores its image, and takes a subset of Kubernetes
/// (ClusterIP Services, matchLabels, env values); a cluster takes it all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum For {
    /// Files, which may be applied to the local runtime.
    Files,
    /// An object a cluster already holds.
    Cluster,
}

/// Every problem of an object (empty: valid).
pub(super) fn object(o: &Object, target: For) -> Vec<Problem> {
    let first = |r: Result<(), Problem>| r.err().into_iter().collect::<Vec<_>>();
    let istio = |m: &ObjectMeta, problems: Vec<crate::istio::validate::Problem>| {
        let mut out = first(meta(m, false));
        out.extend(problems.into_iter().map(|p| (p.field, p.message)));
        out
    };
    match o {
        Object::Namespace(n) => first(meta(&n.metadata, true)),
        Object::ServiceAccount(s) => first(meta(&s.metadata, false)),
        Object::Deployment(d) => first(deployment(d, target)),
        Object::ConfigMap(cm) => {
            let mut out = first(meta(&cm.metadata, false));
            let ns = cm.metadata.namespace.as_deref().unwrap_or("default");
            let name = cm.metadata.name.as_deref().unwrap_or_default();
            if crate::istio::mesh_config::is_mesh_config(ns, name) {
                let yaml = cm
                    .data
                    .as_ref()
                    .and_then(|d| d.get(crate::istio::mesh_config::KEY));
                if let Some(Err(ps)) = yaml.map(|y| crate::istio::mesh_config::parse(y)) {
                    out.extend(ps.into_iter().map(|p| (p.field, p.message)));
                }
            }
            out
        }
        Object::Service(s) => first(service(s, target)),
        Object::VirtualService(v) => istio(
            &v.metadata,
            crate::istio::validate::virtual_service(&v.spec),
        ),
        Object::DestinationRule(d) => istio(
            &d.metadata,
            crate::istio::validate::destination_rule(&d.spec),
        ),
        Object::ServiceEntry(o) => {
            istio(&o.metadata, crate::istio::validate::service_entry(&o.spec))
        }
        Object::WorkloadEntry(o) => {
            istio(&o.metadata, crate::istio::validate::workload_entry(&o.spec))
        }
        Object::Sidecar(o) => istio(&o.metadata, crate::istio::validate::sidecar(&o.spec)),
        Object::PeerAuthentication(p) => istio(
            &p.metadata,
            crate::istio::validate::peer_authentication(&p.spec),
        ),
        Object::AuthorizationPolicy(p) => istio(
            &p.metadata,
            crate::istio::validate::authorization_policy(&p.spec),
        ),
        Object::RequestAuthentication(p) => istio(
            &p.metadata,
            crate::istio::validate::request_authentication(&p.spec),
        ),
        Object::Telemetry(t) => istio(&t.metadata, crate::istio::validate::telemetry(&t.spec)),
        Object::ServiceProfile(sp) => {
            let mut out = first(meta(&sp.metadata, false));
            if let Err(ps) = crate::linkerd::translate_service_profile(sp) {
                out.extend(ps.into_iter().map(|p| (p.field, p.message)));
            }
            out
        }
        Object::LocalRateLimit(r) => istio(&r.metadata, crate::policy::validate(&r.spec)),
        Object::TrafficSplit(ts) => {
            let mut out = first(meta(&ts.metadata, false));
            match crate::linkerd::translate_traffic_split(ts) {
                Err(ps) => out.extend(ps.into_iter().map(|p| (p.field, p.message))),
                // The translation must itself be valid.
                Ok(vs) => out.extend(
                    crate::istio::validate::virtual_service(&vs.spec)
                        .into_iter()
                        .map(|p| (p.field, p.message)),
                ),
            }
            out
        }
    }
}

fn deployment(d: &Deployment, target: For) -> Result<(), Problem> {
    meta(&d.metadata, true)?;
    let spec = d.spec.as_ref().ok_or_else(|| problem("spec", "required"))?;
    if spec.replicas.is_some_and(|r| r < 0) {
        return Err(problem("spec.replicas", "must be 0 or more"));
    }
    let selector = spec
        .selector
        .match_labels
        .as_ref()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| {
            problem(
                "spec.selector.matchLabels",
                "required: the labels that pick this Deployment's pods",
            )
        })?;
    if target == For::Files
        && spec
            .selector
            .match_expressions
            .as_ref()
            .is_some_and(|e| !e.is_empty())
    {
        return Err(problem(
            "spec.selector.matchExpressions",
            "not supported by the local runtime; use matchLabels",
        ));
    }
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref());
    for (k, v) in selector {
        if labels.and_then(|l| l.get(k)) != Some(v) {
            return Err(problem(
                "spec.template.metadata.labels",
                format!(
                    "selector {k}={v} does not match the template's labels; add it to the template"
                ),
            ));
        }
    }
    let annotations = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    crate::annotations::TrafficExclusions::from_annotations(&annotations).map_err(
        |(key, msg)| problem(format!("spec.template.metadata.annotations[{key:?}]"), msg),
    )?;
    let pod = spec
        .template
        .spec
        .as_ref()
        .ok_or_else(|| problem("spec.template.spec", "required"))?;
    if pod.containers.is_empty() {
        return Err(problem(
            "spec.template.spec.containers",
            "at least one container is required",
        ));
    }
    for (i, c) in pod.containers.iter().enumerate() {
        let at = format!("spec.template.spec.containers[{i}]");
        if target == For::Files && c.command.as_ref().is_none_or(|c| c.is_empty()) {
            return Err(problem(
                format!("{at}.command"),
                "required in the local runtime, which runs the command and ignores the image",
            ));
        }
        for (j, p) in c.ports.iter().flatten().enumerate() {
            if !(1..=65535).contains(&p.container_port) {
                return Err(problem(
                    format!("{at}.ports[{j}].containerPort"),
                    "must be 1-65535",
                ));
            }
        }
        for (j, e) in c.env.iter().flatten().enumerate() {
            if target == For::Files && e.value_from.is_some() {
                return Err(problem(
                    format!("{at}.env[{j}].valueFrom"),
                    "not supported by the local runtime; use value",
                ));
            }
        }
    }
    Ok(())
}

fn service(s: &Service, target: For) -> Result<(), Problem> {
    meta(&s.metadata, true)?;
    let spec = s.spec.as_ref().ok_or_else(|| problem("spec", "required"))?;
    if let Some(t) = spec.type_.as_deref()
        && t != "ClusterIP"
        && target == For::Files
    {
        return Err(problem(
            "spec.type",
            format!("{t:?} is not supported by the local runtime; use ClusterIP"),
        ));
    }
    let ports = spec
        .ports
        .as_ref()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| problem("spec.ports", "at least one port is required"))?;
    for (i, p) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        if !(1..=65535).contains(&p.port) {
            return Err(problem(format!("{at}.port"), "must be 1-65535"));
        }
        if p.protocol.as_deref().is_some_and(|proto| proto != "TCP") {
            return Err(problem(format!("{at}.protocol"), "only TCP is supported"));
        }
        if ports.len() > 1 && p.name.as_deref().is_none_or(str::is_empty) {
            return Err(problem(
                format!("{at}.name"),
                "required when a Service has more than one port",
            ));
        }
        match &p.target_port {
            Some(IntOrString::Int(t)) if !(1..=65535).contains(t) => {
                return Err(problem(
                    format!("{at}.targetPort"),
                    "must be 1-65535 or a port name",
                ));
            }
            Some(IntOrString::String(n)) if !is_dns_label(n) => {
                return Err(problem(
                    format!("{at}.targetPort"),
                    format!("{n:?} is not a port name"),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}
