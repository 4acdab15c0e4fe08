//! Checks across resources, as `istioctl analyze` does: what each resource
//! refers to must exist, and resources must not contradict each other.
//! Pure: the caller gathers objects (from files or a cluster) and pods.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::istio::shared::WorkloadSelector;
use crate::manifest::Object;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Traffic will fail or a reference is broken.
    Error,
    /// Probably not what was meant.
    Warning,
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// Where the object came from: `file:doc`, or `cluster`.
    pub source: String,
    /// `Kind/name`.
    pub object: String,
    /// Field path.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// A pod, by namespace and labels.
#[derive(Clone, Debug, Default)]
pub struct PodLabels {
    /// Namespace.
    pub namespace: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// An object and where it came from.
pub struct Located<'a> {
    /// `file:doc` or `cluster`.
    pub source: String,
    /// The object.
    pub object: &'a Object,
}

/// Namespaces whose mesh-wide policies apply everywhere.
use crate::istio::ROOT_NAMESPACES;

/// `host` as a FQDN, short names completed in namespace `ns`.
pub fn fqdn(host: &str, ns: &str) -> String {
    match host.matches('.').count() {
        0 => format!("{host}.{ns}.svc.cluster.local"),
        1 => format!("{host}.svc.cluster.local"),
        _ if host.ends_with(".svc") => format!("{host}.cluster.local"),
        _ => host.to_string(),
    }
}

fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix),
        None => pattern == host,
    }
}

struct Ctx<'a> {
    objects: &'a [Located<'a>],
    pods: &'a [PodLabels],
    have_pods: bool,
    out: Vec<Finding>,
}

impl Ctx<'_> {
    fn add(
        &mut self,
        severity: Severity,
        at: &Located<'_>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.out.push(Finding {
            severity,
            source: at.source.clone(),
            object: crate::manifest::address(at.object),
            field: field.into(),
            message: message.into(),
        });
    }

    /// Services by FQDN: (namespace, selector).
    fn services(&self) -> BTreeMap<String, (String, BTreeMap<String, String>)> {
        self.objects
            .iter()
            .filter_map(|l| match l.object {
                Object::Service(s) => Some((
                    fqdn(l.object.name(), l.object.namespace()),
                    (
                        l.object.namespace().to_string(),
                        s.spec
                            .as_ref()
                            .and_then(|sp| sp.selector.clone())
                            .unwrap_or_default(),
                    ),
                )),
                _ => None,
            })
            .collect()
    }

    fn service_entry_hosts(&self) -> Vec<String> {
        self.objects
            .iter()
            .filter_map(|l| match l.object {
                Object::ServiceEntry(se) => se.spec.hosts.clone(),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn pods_of(&self, ns: &str, selector: &BTreeMap<String, String>) -> Vec<&PodLabels> {
        self.pods
            .iter()
            .filter(|p| p.namespace == ns && crate::cluster::labels_match(selector, &p.labels))
            .collect()
    }
}

/// Analyzes `objects` with `pods` (`None`: pods unknown, so checks that
/// need them are skipped).
pub fn analyze(objects: &[Located<'_>], pods: Option<&[PodLabels]>) -> Vec<Finding> {
    let mut c = Ctx {
        objects,
        pods: pods.unwrap_or_default(),
        have_pods: pods.is_some(),
        out: Vec::new(),
    };
    for l in objects {
        for (field, note) in crate::enforcement::not_enforced(l.object) {
            c.add(Severity::Warning, l, field, note);
        }
    }
    let services = c.services();
    let se_hosts = c.service_entry_hosts();
    // Subsets by host FQDN.
    let mut subsets: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in objects {
        if let Object::DestinationRule(dr) = l.object {
            let host = fqdn(
                dr.spec.host.as_deref().unwrap_or_default(),
                l.object.namespace(),
            );
            let names = dr
                .spec
                .subsets
                .iter()
                .flatten()
                .filter_map(|s| s.name.clone());
            subsets.entry(host).or_default().extend(names);
        }
    }
    let mut vs_hosts: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (idx, l) in objects.iter().enumerate() {
        match l.object {
            Object::VirtualService(vs) => {
                let ns = l.object.namespace();
                for (i, h) in vs.spec.hosts.iter().flatten().enumerate() {
                    let f = fqdn(h, ns);
                    vs_hosts.entry(f.clone()).or_default().push(idx);
                    let known = services.contains_key(&f)
                        || se_hosts
                            .iter()
                            .any(|p| host_matches(p, h) || host_matches(p, &f));
                    if !known && !h.contains('*') {
                        c.add(
                            Severity::Warning,
                            l,
                            format!("spec.hosts[{i}]"),
                            format!("no Service or ServiceEntry has host {h:?} ({f})"),
                        );
                    }
                }
                let dests = vs
                    .spec
                    .http
                    .iter()
                    .flatten()
                    .enumerate()
                    .flat_map(|(i, r)| {
                        r.route.iter().flatten().enumerate().map(move |(j, d)| {
                            (
                                format!("spec.http[{i}].route[{j}].destination"),
                                d.destination.as_ref(),
                            )
                        })
                    });
                for (field, d) in dests.collect::<Vec<_>>() {
                    let Some(d) = d else { continue };
                    let (Some(host), Some(subset)) = (&d.host, &d.subset) else {
                        continue;
                    };
                    let f = fqdn(host, ns);
                    if !subsets.get(&f).is_some_and(|s| s.contains(subset)) {
                        c.add(
                            Severity::Error,
                            l,
                            format!("{field}.subset"),
                            format!("subset {subset:?} of {f} is defined by no DestinationRule; requests to it fail"),
                        );
                    }
                }
            }
            Object::DestinationRule(dr) => destination_rule(&mut c, l, dr, &services),
            _ => {}
        }
        policy_selects_something(&mut c, l);
    }
    for (host, idxs) in vs_hosts {
        if idxs.len() > 1 {
            let names: Vec<String> = idxs
                .iter()
                .map(|i| crate::manifest::address(objects[*i].object))
                .collect();
            for i in &idxs {
                c.add(
                    Severity::Error,
                    &objects[*i],
                    "spec.hosts",
                    format!(
                        "host {host} is also routed by {}: merge them into one",
                        names.join(", ")
                    ),
                );
            }
        }
    }
    c.out
        .sort_by(|a, b| (a.severity, &a.source).cmp(&(b.severity, &b.source)));
    c.out
}

fn destination_rule(
    c: &mut Ctx<'_>,
    l: &Located<'_>,
    dr: &crate::istio::Resource<crate::istio::destination_rule::DestinationRuleSpec>,
    services: &BTreeMap<String, (String, BTreeMap<String, String>)>,
) {
    let host = fqdn(
        dr.spec.host.as_deref().unwrap_or_default(),
        l.object.namespace(),
    );
    let Some((svc_ns, svc_selector)) = services.get(&host) else {
        return;
    };
    if c.have_pods {
        for (i, s) in dr.spec.subsets.iter().flatten().enumerate() {
            let mut sel = svc_selector.clone();
            sel.extend(s.labels.clone().unwrap_or_default());
            if c.pods_of(svc_ns, &sel).is_empty() {
                c.add(
                    Severity::Warning,
                    l,
                    format!("spec.subsets[{i}].labels"),
                    format!(
                        "subset {:?} matches no pod of {host}",
                        s.name.as_deref().unwrap_or("")
                    ),
                );
            }
        }
    }
    // The DestinationRule's TLS against the PeerAuthentication in force.
    let Some(mode) = dr
        .spec
        .traffic_policy
        .as_ref()
        .and_then(|t| t.tls.as_ref())
        .and_then(|t| t.mode.as_deref())
    else {
        return;
    };
    let Some((pa_addr, pa_mode)) = peer_authentication_for(c, svc_ns, svc_selector) else {
        return;
    };
    let conflict = match (mode, pa_mode.as_str()) {
        ("DISABLE" | "SIMPLE" | "MUTUAL", "STRICT") => Some("the server accepts only mesh mTLS"),
        ("ISTIO_MUTUAL", "DISABLE") => Some("the server does not accept mesh mTLS"),
        _ => None,
    };
    if let Some(why) = conflict {
        c.add(
            Severity::Error,
            l,
            "spec.trafficPolicy.tls.mode",
            format!("{mode} conflicts with {pa_addr} (mtls.mode {pa_mode}) for {host}: {why}"),
        );
    }
}

/// The PeerAuthentication mode in force for the pods `selector` picks in
/// `ns`: a selecting one in the namespace, else the namespace's, else the
/// mesh-wide one.
fn peer_authentication_for(
    c: &Ctx<'_>,
    ns: &str,
    selector: &BTreeMap<String, String>,
) -> Option<(String, String)> {
    let pas = c.objects.iter().filter_map(|l| match l.object {
        Object::PeerAuthentication(pa) => Some((l.object, pa)),
        _ => None,
    });
    let mut best: Option<(u8, String, String)> = None;
    for (o, pa) in pas {
        let Some(mode) = pa
            .spec
            .mtls
            .as_ref()
            .and_then(|m| m.mode.clone())
            .filter(|m| m != "UNSET")
        else {
            continue;
        };
        let sel = pa
            .spec
            .selector
            .as_ref()
            .and_then(|s| s.match_labels.clone())
            .unwrap_or_default();
        let rank = if o.namespace() == ns && !sel.is_empty() {
            // Applies if it selects the service's pods.
            let applies = if c.have_pods {
                c.pods_of(ns, selector)
                    .iter()
                    .any(|p| crate::cluster::labels_match(&sel, &p.labels))
            } else {
                crate::cluster::labels_match(&sel, selector)
            };
            if !applies {
                continue;
            }
            3
        } else if o.namespace() == ns && sel.is_empty() {
            2
        } else if ROOT_NAMESPACES.contains(&o.namespace()) && sel.is_empty() {
            1
        } else {
            continue;
        };
        if best.as_ref().is_none_or(|b| rank > b.0) {
            best = Some((rank, crate::manifest::address(o), mode));
        }
    }
    best.map(|(_, a, m)| (a, m))
}

fn policy_selects_something(c: &mut Ctx<'_>, l: &Located<'_>) {
    if !c.have_pods {
        return;
    }
    let selector: Option<BTreeMap<String, String>> = match l.object {
        Object::PeerAuthentication(p) => match_labels(p.spec.selector.as_ref()),
        Object::AuthorizationPolicy(p) => match_labels(p.spec.selector.as_ref()),
        Object::RequestAuthentication(p) => match_labels(p.spec.selector.as_ref()),
        Object::Telemetry(p) => match_labels(p.spec.selector.as_ref()),
        Object::Sidecar(s) => s
            .spec
            .workload_selector
            .as_ref()
            .and_then(|w| w.labels.clone()),
        _ => None,
    };
    if let Some(sel) = selector.filter(|s| !s.is_empty()) {
        let ns = l.object.namespace();
        let everywhere = ROOT_NAMESPACES.contains(&ns);
        let any = c.pods.iter().any(|p| {
            (everywhere || p.namespace == ns) && crate::cluster::labels_match(&sel, &p.labels)
        });
        if !any {
            let labels = sel
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            c.add(
                Severity::Warning,
                l,
                "spec.selector",
                format!("{labels} selects no workload in namespace {ns:?}"),
            );
        }
    }
}

fn match_labels(s: Option<&WorkloadSelector>) -> Option<BTreeMap<String, String>> {
    s.and_then(|s| s.match_labels.clone())
}

#[cfg(test)]
mod tests;
