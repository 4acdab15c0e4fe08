//! Domain types of what a proxy learns from discovery, converted from the
//! wire ([`crate::proto`]) at the edge. A bad resource is rejected alone,
//! with the field that is wrong.
//!
//! Resources travel encoded ([`proto::Resource`] holds a type URL and the
//! bytes): the controller encodes each once per change with [`encode`] and
//! shares the bytes with every subscriber; a proxy reads them with
//! [`decode`]. Fields unknown to the decoder are skipped, so an older
//! proxy reads what a newer controller sends.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hasher};
use std::net::IpAddr;

use prost::Message;

use crate::proto;
use crate::protocol::AppProtocol;
use crate::spiffe::SpiffeId;

/// Type URL of a Service resource.
pub const SERVICE_TYPE: &str = "type.mesh.io/mesh.v1.Service";
/// Type URL of a Workload resource.
pub const WORKLOAD_TYPE: &str = "type.mesh.io/mesh.v1.Workload";
/// Type URL of an Endpoints resource.
pub const ENDPOINTS_TYPE: &str = "type.mesh.io/mesh.v1.Endpoints";

/// The resource name of `host`'s endpoints.
pub fn endpoints_name(host: &str) -> String {
    format!("endpoints/{host}")
}

/// The host an endpoints resource name is for.
pub fn endpoints_host(name: &str) -> Option<&str> {
    name.strip_prefix("endpoints/")
}

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
#[derive(Clone, Debug, PartialEq)]
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
    pub policy: Option<Box<proto::WorkloadPolicy>>,
}

/// A Service port.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServicePort {
    /// Port name (may be empty).
    pub name: String,
    /// The port clients connect to.
    pub port: u16,
    /// Declared protocol.
    pub protocol: AppProtocol,
}

/// One backend of a Service.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    /// The pod.
    pub workload: Workload,
    /// Service port -> port on the pod.
    pub ports: BTreeMap<u16, u16>,
}

/// A Service and how clients route to it (its endpoints are a resource
/// of their own).
#[derive(Clone, Debug, PartialEq)]
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
    /// How clients route to it; `None`: plain balancing over its endpoints.
    pub routing: Option<Box<proto::Routing>>,
}

impl Service {
    /// The declared port, if the Service has it.
    pub fn port(&self, port: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == port)
    }
}

/// What an address resolves to.
#[derive(Clone, Debug, PartialEq)]
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
            policy: w.policy.clone().map(Box::new),
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
            policy: w.policy.as_deref().cloned(),
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
            .map(|(i, p)| ServicePort::try_from(p).map_err(|e| at(&format!("ports[{i}]"), e)))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            name: s.name.clone(),
            namespace: s.namespace.clone(),
            hostname: s.hostname.clone(),
            addresses,
            ports,
            routing: s.routing.clone().map(Box::new),
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
            ports: s.ports.iter().map(Into::into).collect(),
            routing: s.routing.as_deref().cloned(),
        }
    }
}

impl From<&ServicePort> for proto::ServicePort {
    fn from(p: &ServicePort) -> Self {
        Self {
            name: p.name.clone(),
            port: u32::from(p.port),
            protocol: protocol_to_wire(p.protocol).into(),
        }
    }
}

impl TryFrom<&proto::ServicePort> for ServicePort {
    type Error = InvalidResource;

    fn try_from(p: &proto::ServicePort) -> Result<Self, Self::Error> {
        Ok(Self {
            name: p.name.clone(),
            port: port(p.port, "port")?,
            protocol: protocol_from_wire(p.protocol),
        })
    }
}

/// `err` as a field of the resource at `prefix`.
fn at(prefix: &str, err: InvalidResource) -> InvalidResource {
    InvalidResource {
        field: format!("{prefix}.{}", err.field),
        message: err.message,
    }
}

/// The ready endpoints of one destination host.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Endpoints {
    /// The host (FQDN).
    pub host: String,
    /// Its ready endpoints, in address order.
    pub endpoints: Vec<Endpoint>,
}

impl TryFrom<&proto::Endpoints> for Endpoints {
    type Error = InvalidResource;

    fn try_from(e: &proto::Endpoints) -> Result<Self, Self::Error> {
        let endpoints = e
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let w = e
                    .workload
                    .as_ref()
                    .ok_or_else(|| invalid(format!("endpoints[{i}].workload"), "missing"))?;
                let workload = Workload::try_from(w)
                    .map_err(|err| at(&format!("endpoints[{i}].workload"), err))?;
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
        Ok(Self {
            host: e.host.clone(),
            endpoints,
        })
    }
}

impl From<&Endpoints> for proto::Endpoints {
    fn from(e: &Endpoints) -> Self {
        Self {
            host: e.host.clone(),
            endpoints: e
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
        }
    }
}

/// A resource as read from the wire.
#[derive(Clone, Debug, PartialEq)]
pub enum Decoded {
    /// What an address resolves to.
    Address(Resolved),
    /// A host's endpoints.
    Endpoints(Endpoints),
}

/// Encodes a resource for the wire; its version is a digest of the bytes,
/// so equal content has equal versions.
pub fn encode(name: String, r: &Decoded) -> proto::Resource {
    let (type_url, body) = match r {
        Decoded::Address(Resolved::Service(s)) => {
            (SERVICE_TYPE, proto::Service::from(s).encode_to_vec())
        }
        Decoded::Address(Resolved::Workload(w)) => {
            (WORKLOAD_TYPE, proto::Workload::from(w).encode_to_vec())
        }
        Decoded::Endpoints(e) => (ENDPOINTS_TYPE, proto::Endpoints::from(e).encode_to_vec()),
    };
    let mut h = DefaultHasher::new();
    h.write(type_url.as_bytes());
    h.write(&body);
    proto::Resource {
        name,
        version: format!("{:016x}", h.finish()),
        type_url: type_url.to_string(),
        body: body.into(),
    }
}

/// Reads a resource from the wire.
pub fn decode(r: &proto::Resource) -> Result<Decoded, InvalidResource> {
    let bad = |e: prost::DecodeError| invalid("body", e.to_string());
    match r.type_url.as_str() {
        SERVICE_TYPE => Service::try_from(&proto::Service::decode(r.body.clone()).map_err(bad)?)
            .map(|s| Decoded::Address(Resolved::Service(s))),
        WORKLOAD_TYPE => Workload::try_from(&proto::Workload::decode(r.body.clone()).map_err(bad)?)
            .map(|w| Decoded::Address(Resolved::Workload(w))),
        ENDPOINTS_TYPE => {
            Endpoints::try_from(&proto::Endpoints::decode(r.body.clone()).map_err(bad)?)
                .map(Decoded::Endpoints)
        }
        t => Err(invalid("type_url", format!("unknown resource type {t:?}"))),
    }
}

#[cfg(test)]
mod tests;
