//! The store's state as the controller reads it: a [`Snapshot`] of pods,
//! Services and the mesh's configuration.

use std::net::IpAddr;

use api::cluster::{self, Snapshot, TargetPort};
use api::manifest::Object;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::super::objects::Phase;
use super::State;

pub(super) fn snapshot(s: &State) -> Snapshot {
    Snapshot {
        version: s.version,
        pods: s
            .pods
            .values()
            .map(|p| cluster::Pod {
                name: p.name.clone(),
                namespace: p.namespace.clone(),
                labels: p.labels.clone(),
                service_account: p.service_account.clone(),
                ip: Some(IpAddr::V4(p.ip)),
                meshed: p.meshed,
                ready: p.ready && p.phase == Phase::Running,
                named_ports: p
                    .spec
                    .containers
                    .iter()
                    .filter(|c| c.name != api::inject::PROXY)
                    .flat_map(|c| c.ports.iter().flatten())
                    .filter_map(|cp| {
                        Some((cp.name.clone()?, u16::try_from(cp.container_port).ok()?))
                    })
                    .collect(),
                owner: p.deployment.clone(),
            })
            .collect(),
        services: s
            .services
            .iter()
            .map(|(k, (svc, ip))| {
                let spec = svc.spec.clone().unwrap_or_default();
                cluster::Service {
                    export_to: cluster::export_to_annotation(svc.metadata.annotations.as_ref()),
                    name: k.1.clone(),
                    namespace: k.0.clone(),
                    cluster_ip: IpAddr::V4(*ip),
                    selector: spec.selector.unwrap_or_default(),
                    ports: spec
                        .ports
                        .unwrap_or_default()
                        .into_iter()
                        .map(|p| cluster::ServicePort {
                            name: p.name.unwrap_or_default(),
                            port: u16::try_from(p.port).unwrap_or(0),
                            target_port: match p.target_port {
                                Some(IntOrString::Int(n)) => {
                                    TargetPort::Number(u16::try_from(n).unwrap_or(0))
                                }
                                Some(IntOrString::String(n)) => TargetPort::Name(n),
                                None => TargetPort::Number(u16::try_from(p.port).unwrap_or(0)),
                            },
                            app_protocol: p.app_protocol,
                        })
                        .collect(),
                }
            })
            .collect(),
        config: mesh_config(s),
    }
}

/// The mesh resources in the native (Istio) model, Linkerd's translated.
fn mesh_config(s: &State) -> cluster::MeshConfig {
    let mut c = cluster::MeshConfig::default();
    for o in s.mesh.values().flat_map(Object::native) {
        match o {
            Object::VirtualService(vs) => c.virtual_services.push(*vs),
            Object::DestinationRule(dr) => c.destination_rules.push(*dr),
            Object::LocalRateLimit(rl) => c.rate_limits.push(*rl),
            Object::ServiceEntry(se) => c.service_entries.push(*se),
            Object::Sidecar(sc) => c.sidecars.push(*sc),
            _ => {}
        }
    }
    c
}
