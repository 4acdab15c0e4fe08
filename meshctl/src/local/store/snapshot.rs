//! The store's state as the controller reads it: a [`Snapshot`] of pods,
//! Services and the mesh's configuration.

use std::net::IpAddr;

use api::cluster::{self, Snapshot};

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
                named_ports: cluster::named_ports(&p.spec),
                owner: p.deployment.clone(),
                app_exited: false,
            })
            .collect(),
        services: s
            .services
            .iter()
            .map(|(k, (svc, ip))| cluster::Service {
                name: k.1.clone(),
                namespace: k.0.clone(),
                ..cluster::Service::from_k8s(svc, IpAddr::V4(*ip))
            })
            .collect(),
        config: cluster::MeshConfig::from_objects(s.mesh.values()),
    }
}
