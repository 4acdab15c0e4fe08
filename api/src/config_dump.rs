//! What a proxy holds, as its admin endpoint `/config_dump` serves it and
//! `meshctl proxy-config` reads it: one type for both sides. The compiled
//! routes and backends (not the resources they came from), the endpoints
//! with their circuit state, the certificate and the config version.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// A proxy's configuration and state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigDump {
    /// Its SPIFFE ID.
    pub identity: String,
    /// Its workload (Deployment).
    pub workload: String,
    /// The certificate it presents, once issued.
    pub certificate: Option<Certificate>,
    /// Trust anchors it accepts.
    pub trust_anchors: usize,
    /// The controller it talks to.
    pub controller: Controller,
    /// The controller's system version of the last response applied.
    pub version: String,
    /// By subscribed address.
    pub targets: BTreeMap<String, Target>,
    /// By destination host: its endpoints with their circuits.
    pub endpoints: BTreeMap<String, Vec<EndpointState>>,
    /// The requests this proxy refused last (a policy's denials), oldest
    /// first.
    #[serde(default)]
    pub denials: Vec<crate::explain::Denial>,
}

/// A certificate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Certificate {
    /// The SPIFFE ID in it.
    pub identity: String,
    /// Serial number, hex.
    pub serial: String,
    /// Valid from (Unix seconds).
    pub not_before_unix: u64,
    /// Valid until (Unix seconds).
    pub not_after_unix: u64,
}

/// The controller connection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Controller {
    /// Its address.
    pub address: String,
    /// The identity it must present.
    pub identity: String,
    /// Whether the discovery stream is up.
    pub connected: bool,
}

/// What an address resolved to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Target {
    /// Asked for, no answer yet.
    Pending,
    /// Not in the mesh: passed through.
    Absent,
    /// Known to the mesh.
    Known(Box<Known>),
}

/// A known address and its compiled routing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Known {
    /// `service` or `workload`.
    pub kind: String,
    /// The Service's hostname, or the pod's `namespace/name`.
    pub name: String,
    /// The resource's content version.
    pub version: String,
    /// The VirtualService whose routes these are, if any.
    pub virtual_service: Option<String>,
    /// HTTP routes, in order.
    pub routes: Vec<Route>,
    /// Destination hosts.
    pub backends: Vec<Backend>,
    /// The LocalRateLimits a workload's own resource carries.
    pub rate_limits: Vec<String>,
}

/// A compiled HTTP route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Route {
    /// Its name (`default` when unnamed).
    pub name: String,
    /// How many matches it has (0: always).
    pub matches: usize,
    /// What it does: `host[:subset] weight%`, `redirect ...`, `direct 503`.
    pub action: String,
    /// Its timeout, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Retries after the first try.
    pub retries: u32,
    /// Injected faults, as text.
    pub fault: Option<String>,
    /// Mirror hosts with their share.
    pub mirrors: Vec<String>,
}

/// A destination host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Backend {
    /// Its FQDN.
    pub host: String,
    /// Its subsets, each at a port (0: any port).
    pub subsets: Vec<Subset>,
}

/// One subset of a host at one port.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Subset {
    /// Its name (empty: every endpoint).
    pub name: String,
    /// The service port (0: any without settings of its own).
    pub port: u16,
    /// The balancer.
    pub balancer: String,
    /// Its endpoints' addresses.
    pub members: Vec<IpAddr>,
    /// Whether outlier detection is on.
    pub outlier_detection: bool,
    /// How its endpoints are connected to (`trafficPolicy.tls`: auto,
    /// DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL; broken when origination is
    /// impossible).
    #[serde(default)]
    pub tls: String,
}

/// An endpoint's circuit under outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Circuit {
    /// In rotation.
    Closed,
    /// Ejected.
    Open,
    /// Back after an ejection, on probation.
    HalfOpen,
}

/// An endpoint and its circuit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointState {
    /// Address.
    pub address: IpAddr,
    /// The pod's `namespace/name`.
    #[serde(default)]
    pub pod: String,
    /// The identity it is dialed with over mTLS (empty: plaintext, not
    /// in the mesh).
    #[serde(default)]
    pub identity: String,
    /// Circuit.
    pub circuit: Circuit,
    /// Times ejected (the multiplier).
    pub ejections: u32,
    /// Seconds left in the current ejection.
    pub ejected_for_secs: f64,
}
