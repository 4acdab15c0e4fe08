//! `/config_dump`: what the proxy holds, as [`ConfigDump`] (shared with
//! `meshctl proxy-config`): the compiled routes and backends of every
//! address it knows, the endpoints of every destination host with their
//! circuits, its certificate and the config version.

use std::time::{SystemTime, UNIX_EPOCH};

use api::config_dump::{
    Backend, Certificate, Circuit, ConfigDump, Controller, EndpointState, Known, Route, Subset,
    Target,
};
use api::discovery::Resolved;

use super::{State, circuits};
use crate::discovery::Slot;
use crate::traffic::{Action, Router};

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn place(host: &str, subset: &Option<String>) -> String {
    match subset {
        Some(s) => format!("{host}:{s}"),
        None => host.to_string(),
    }
}

fn route(r: &crate::traffic::Route) -> Route {
    let action = match &r.action {
        Action::Forward(ds) => ds
            .iter()
            .map(|d| format!("{} {}%", place(&d.host, &d.subset), d.weight))
            .collect::<Vec<_>>()
            .join(", "),
        Action::Redirect(rd) => format!(
            "redirect {} {}",
            rd.code.as_u16(),
            rd.uri.as_deref().unwrap_or("")
        )
        .trim_end()
        .to_string(),
        Action::Direct { status, .. } => format!("direct {}", status.as_u16()),
    };
    let mut fault = Vec::new();
    if let Some((d, pct)) = r.fault.delay {
        fault.push(format!("delay {}ms {pct}%", millis(d)));
    }
    if let Some((a, pct)) = r.fault.abort {
        fault.push(match a {
            crate::traffic::Abort::Http(s) => format!("abort {} {pct}%", s.as_u16()),
            crate::traffic::Abort::Grpc(c) => format!("abort grpc {c} {pct}%"),
        });
    }
    Route {
        name: r.name.clone().unwrap_or_else(|| "default".into()),
        matches: r.matches.len(),
        action,
        timeout_ms: r.timeout.map(millis),
        retries: r.retry.retries,
        fault: (!fault.is_empty()).then(|| fault.join(", ")),
        mirrors: r
            .mirrors
            .iter()
            .map(|m| format!("{} {}%", place(&m.host, &m.subset), m.percent))
            .collect(),
    }
}

fn backends(router: &Router) -> Vec<Backend> {
    let mut out: Vec<Backend> = router
        .backends
        .iter()
        .map(|(host, b)| {
            let mut subsets: Vec<Subset> = b
                .subsets()
                .map(|(name, port, s)| Subset {
                    name: name.clone().unwrap_or_default(),
                    port,
                    balancer: s.balancer.name().into(),
                    members: s
                        .members
                        .iter()
                        .map(|i| b.endpoints[*i].workload.address)
                        .collect(),
                    outlier_detection: s.outlier.is_some(),
                    tls: s.tls.name().into(),
                })
                .collect();
            subsets.sort_by(|a, b| (&a.name, a.port).cmp(&(&b.name, b.port)));
            Backend {
                host: host.clone(),
                subsets,
            }
        })
        .collect();
    out.sort_by(|a, b| a.host.cmp(&b.host));
    out
}

fn target(slot: &Slot) -> Target {
    let t = match slot {
        Slot::Pending => return Target::Pending,
        Slot::Absent => return Target::Absent,
        Slot::Known { target } => target,
    };
    let (kind, name, virtual_service, rate_limits) = match &t.resolved {
        Resolved::Service(s) => (
            "service",
            s.hostname.clone(),
            s.routing
                .as_ref()
                .map(|r| r.virtual_service.clone())
                .filter(|v| !v.is_empty()),
            Vec::new(),
        ),
        Resolved::Workload(w) => (
            "workload",
            format!("{}/{}", w.namespace, w.name),
            None,
            w.policy
                .iter()
                .flat_map(|p| &p.rate_limits)
                .map(|r| r.name.clone())
                .collect(),
        ),
    };
    Target::Known(Box::new(Known {
        kind: kind.into(),
        name,
        version: t.version.clone(),
        virtual_service,
        routes: t.router.routes.iter().map(route).collect(),
        backends: backends(&t.router),
        rate_limits,
    }))
}

/// What the proxy holds now.
pub(super) fn config_dump(st: &State) -> ConfigDump {
    let cache = st.discovery.dump();
    let circuits = circuits(st);
    let endpoints = cache
        .endpoints
        .iter()
        .map(|(host, eps)| {
            let states = circuits.get(host);
            let list = eps
                .iter()
                .map(|e| {
                    let w = &e.workload;
                    let known = states.and_then(|s| s.iter().find(|s| s.address == w.address));
                    EndpointState {
                        address: w.address,
                        pod: format!("{}/{}", w.namespace, w.name),
                        identity: w
                            .identity
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                        circuit: known.map_or(Circuit::Closed, |s| s.circuit),
                        ejections: known.map_or(0, |s| s.ejections),
                        ejected_for_secs: known.map_or(0.0, |s| s.ejected_for_secs),
                    }
                })
                .collect();
            (host.clone(), list)
        })
        .collect();
    ConfigDump {
        identity: st.pod.identity.id().to_string(),
        workload: st.pod.workload.clone(),
        certificate: st.pod.identity.credentials().map(|c| Certificate {
            identity: c.info.identity.to_string(),
            serial: c.info.serial.clone(),
            not_before_unix: secs(c.info.not_before),
            not_after_unix: secs(c.info.not_after),
        }),
        trust_anchors: st.pod.identity.anchors_der().len(),
        controller: Controller {
            address: st.controller.addr.to_string(),
            identity: st.controller.identity.to_string(),
            connected: st.discovery.connected(),
        },
        version: st.discovery.version(),
        targets: cache
            .addresses
            .iter()
            .map(|(ip, slot)| (ip.to_string(), target(slot)))
            .collect(),
        endpoints,
        denials: st.telemetry.denials.latest(),
    }
}
