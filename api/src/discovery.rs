//! Domain types of what a proxy learns from discovery, converted from the
//! wire ([`crate::proto`]) at the edge. A bad resource is rejected alone,
//! with the field that is wrong.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::proto;
use crate::protocol::AppProtocol;
use crate::spiffe::SpiffeId;
use crate::traffic::{ServiceTraffic, WorkloadPolicy};

/// A resource that fails conversion: which field, and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {message}")]
pub struct InvalidResource {
    /// Field path inside the resource.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> InvalidResource {
    InvalidResource {
        field: field.into(),
        message: message.into(),
    }
}

/// A pod as seen by proxies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod IP.
    pub address: IpAddr,
    /// Identity its proxy presents; `None` when the pod has no proxy.
    pub identity: Option<SpiffeId>,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
    /// The workload (Deployment) it belongs to; empty when unknown.
    pub workload: String,
    /// What its own proxy enforces (on the pod's own resource only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Box<WorkloadPolicy>>,
}

/// A Service port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    /// Port name (may be empty).
    pub name: String,
    /// The port clients connect to.
    pub port: u16,
    /// Declared protocol.
    pub protocol: AppProtocol,
}

/// One backend of a Service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The pod.
    pub workload: Workload,
    /// Service port -> port on the pod.
    pub ports: BTreeMap<u16, u16>,
}

/// A Service with its ready endpoints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Service {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// FQDN.
    pub hostname: String,
    /// Cluster IPs.
    pub addresses: Vec<IpAddr>,
    /// Ports.
    pub ports: Vec<ServicePort>,
    /// Ready endpoints.
    pub endpoints: Vec<Endpoint>,
    /// How clients route to it; `None`: plain balancing over `endpoints`.
    pub traffic: Option<Box<ServiceTraffic>>,
}

impl Service {
    /// The declared port, if the Service has it.
    pub fn port(&self, port: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == port)
    }
}

/// What an address resolves to.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Resolved {
    /// A Service's cluster IP.
    Service(Service),
    /// A pod IP.
    Workload(Workload),
}

fn port(v: u32, field: &str) -> Result<u16, InvalidResource> {
    u16::try_from(v)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| invalid(field, format!("{v} is not a TCP port (1-65535)")))
}

fn ip(v: &str, field: &str) -> Result<IpAddr, InvalidResource> {
    v.parse()
        .map_err(|_| invalid(field, format!("{v:?} is not an IP address")))
}

impl TryFrom<&proto::Workload> for Workload {
    type Error = InvalidResource;

    fn try_from(w: &proto::Workload) -> Result<Self, Self::Error> {
        let identity = if w.identity.is_empty() {
            None
        } else {
            Some(
                w.identity
                    .parse()
                    .map_err(|e: crate::spiffe::SpiffeError| invalid("identity", e.to_string()))?,
            )
        };
        Ok(Self {
            name: w.name.clone(),
            namespace: w.namespace.clone(),
            address: ip(&w.address, "address")?,
            identity,
            labels: w
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            workload: w.workload_name.clone(),
            policy: if w.policy.is_empty() {
                None
            } else {
                Some(Box::new(serde_json::from_str(&w.policy).map_err(|e| {
                    invalid("policy", format!("not a WorkloadPolicy document: {e}"))
                })?))
            },
        })
    }
}

impl From<&Workload> for proto::Workload {
    fn from(w: &Workload) -> Self {
        Self {
            name: w.name.clone(),
            namespace: w.namespace.clone(),
            address: w.address.to_string(),
            identity: w
                .identity
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            labels: w
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            service_account: w
                .identity
                .as_ref()
                .map(|i| i.service_account().to_string())
                .unwrap_or_default(),
            workload_name: w.workload.clone(),
            policy: w
                .policy
                .as_ref()
                .and_then(|p| serde_json::to_string(p).ok())
                .unwrap_or_default(),
        }
    }
}

fn protocol_from_wire(p: i32) -> AppProtocol {
    match proto::AppProtocol::try_from(p).unwrap_or(proto::AppProtocol::Unspecified) {
        proto::AppProtocol::Unspecified => AppProtocol::Detect,
        proto::AppProtocol::Http => AppProtocol::Http,
        proto::AppProtocol::Http2 => AppProtocol::Http2,
        proto::AppProtocol::Grpc => AppProtocol::Grpc,
        proto::AppProtocol::Tcp => AppProtocol::Tcp,
    }
}

fn protocol_to_wire(p: AppProtocol) -> proto::AppProtocol {
    match p {
        AppProtocol::Detect => proto::AppProtocol::Unspecified,
        AppProtocol::Http => proto::AppProtocol::Http,
        AppProtocol::Http2 => proto::AppProtocol::Http2,
        AppProtocol::Grpc => proto::AppProtocol::Grpc,
        AppProtocol::Tcp => proto::AppProtocol::Tcp,
    }
}

impl TryFrom<&proto::Service> for Service {
    type Error = InvalidResource;

    fn try_from(s: &proto::Service) -> Result<Self, Self::Error> {
        let addresses = s
            .addresses
            .iter()
            .enumerate()
            .map(|(i, a)| ip(a, &format!("addresses[{i}]")))
            .collect::<Result<_, _>>()?;
        let ports = s
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Ok(ServicePort {
                    name: p.name.clone(),
                    port: port(p.port, &format!("ports[{i}].port"))?,
                    protocol: protocol_from_wire(p.protocol),
                })
            })
            .collect::<Result<_, _>>()?;
        let endpoints = s
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let w = e
                    .workload
                    .as_ref()
                    .ok_or_else(|| invalid(format!("endpoints[{i}].workload"), "missing"))?;
                let workload = Workload::try_from(w).map_err(|err| InvalidResource {
                    field: format!("endpoints[{i}].workload.{}", err.field),
                    message: err.message,
                })?;
                let ports = e
                    .ports
                    .iter()
                    .map(|(sp, tp)| {
                        let f = format!("endpoints[{i}].ports[{sp}]");
                        Ok((port(*sp, &f)?, port(*tp, &f)?))
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Endpoint { workload, ports })
            })
            .collect::<Result<_, _>>()?;
        let traffic = if s.traffic.is_empty() {
            None
        } else {
            Some(Box::new(serde_json::from_str(&s.traffic).map_err(|e| {
                invalid("traffic", format!("not a ServiceTraffic document: {e}"))
            })?))
        };
        Ok(Self {
            name: s.name.clone(),
            namespace: s.namespace.clone(),
            hostname: s.hostname.clone(),
            addresses,
            ports,
            endpoints,
            traffic,
        })
    }
}

impl From<&Service> for proto::Service {
    fn from(s: &Service) -> Self {
        Self {
            name: s.name.clone(),
            namespace: s.namespace.clone(),
            hostname: s.hostname.clone(),
            addresses: s.addresses.iter().map(ToString::to_string).collect(),
            ports: s
                .ports
                .iter()
                .map(|p| proto::ServicePort {
                    name: p.name.clone(),
                    port: u32::from(p.port),
                    protocol: protocol_to_wire(p.protocol).into(),
                })
                .collect(),
            endpoints: s
                .endpoints
                .iter()
                .map(|e| proto::Endpoint {
                    workload: Some((&e.workload).into()),
                    ports: e
                        .ports
                        .iter()
                        .map(|(a, b)| (u32::from(*a), u32::from(*b)))
                        .collect(),
                })
                .collect(),
            traffic: s
                .traffic
                .as_ref()
                .and_then(|t| serde_json::to_string(t).ok())
                .unwrap_or_default(),
        }
    }
}

impl TryFrom<&proto::Resource> for Resolved {
    type Error = InvalidResource;

    fn try_from(r: &proto::Resource) -> Result<Self, Self::Error> {
        match &r.kind {
            Some(proto::resource::Kind::Service(s)) => Service::try_from(s).map(Resolved::Service),
            Some(proto::resource::Kind::Workload(w)) => {
                Workload::try_from(w).map(Resolved::Workload)
            }
            None => Err(invalid("kind", "missing: expected service or workload")),
        }
    }
}

impl From<&Resolved> for proto::resource::Kind {
    fn from(r: &Resolved) -> Self {
        match r {
            Resolved::Service(s) => Self::Service(s.into()),
            Resolved::Workload(w) => Self::Workload(w.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload() -> Workload {
        Workload {
            name: "orders-1".into(),
            namespace: "shop".into(),
            address: "10.244.0.7".parse().unwrap(),
            identity: Some("spiffe://cluster.local/ns/shop/sa/orders".parse().unwrap()),
            labels: [("app".to_string(), "orders".to_string())].into(),
            workload: "orders".into(),
            policy: None,
        }
    }

    fn service() -> Service {
        Service {
            name: "orders".into(),
            namespace: "shop".into(),
            hostname: "orders.shop.svc.cluster.local".into(),
            addresses: vec!["10.96.0.3".parse().unwrap()],
            ports: vec![ServicePort {
                name: "http".into(),
                port: 8080,
                protocol: AppProtocol::Http,
            }],
            endpoints: vec![Endpoint {
                workload: workload(),
                ports: [(8080, 9090)].into(),
            }],
            traffic: None,
        }
    }

    #[test]
    fn round_trips_through_the_wire() {
        for r in [Resolved::Service(service()), Resolved::Workload(workload())] {
            let wire = proto::Resource {
                name: "x".into(),
                version: "1".into(),
                kind: Some((&r).into()),
            };
            assert_eq!(Resolved::try_from(&wire).unwrap(), r);
        }
    }

    #[test]
    fn rejects_bad_fields_with_their_path() {
        let mut s = proto::Service::from(&service());
        s.endpoints[0].workload.as_mut().unwrap().identity = "spiffe://x/bad".into();
        let err = Service::try_from(&s).unwrap_err();
        assert_eq!(err.field, "endpoints[0].workload.identity");

        let mut s = proto::Service::from(&service());
        s.ports[0].port = 70000;
        assert_eq!(Service::try_from(&s).unwrap_err().field, "ports[0].port");

        let mut s = proto::Service::from(&service());
        s.addresses[0] = "nope".into();
        assert_eq!(Service::try_from(&s).unwrap_err().field, "addresses[0]");

        let empty = proto::Resource::default();
        assert_eq!(Resolved::try_from(&empty).unwrap_err().field, "kind");
    }
}
