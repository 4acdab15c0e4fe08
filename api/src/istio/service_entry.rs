//! `ServiceEntry`, `WorkloadEntry` and `Sidecar`: services outside the
//! registry, workloads outside Kubernetes, and a proxy's scope.

use std::collections::BTreeMap;

use super::destination_rule::ConnectionPoolSettings;
use super::message;

message!(
    /// Labels that select workloads (ServiceEntry and Sidecar write
    /// `labels`, not `matchLabels`).
    LabelSelector { labels: BTreeMap<String, String> }
);

message!(
    /// A port of a service.
    ServicePort { number: u32, protocol: String, name: String, target_port: u32 }
);

message!(
    /// The spec of a ServiceEntry.
    ServiceEntrySpec {
        hosts: Vec<String>,
        addresses: Vec<String>,
        ports: Vec<ServicePort>,
        location: String,
        resolution: String,
        endpoints: Vec<WorkloadEntrySpec>,
        workload_selector: LabelSelector,
        export_to: Vec<String>,
        subject_alt_names: Vec<String>,
    }
);

message!(
    /// The spec of a WorkloadEntry (also a ServiceEntry endpoint).
    WorkloadEntrySpec {
        address: String,
        ports: BTreeMap<String, u32>,
        labels: BTreeMap<String, String>,
        network: String,
        locality: String,
        weight: u32,
        service_account: String,
    }
);

message!(
    /// The spec of a Sidecar.
    SidecarSpec {
        workload_selector: LabelSelector,
        ingress: Vec<IstioIngressListener>,
        egress: Vec<IstioEgressListener>,
        inbound_connection_pool: ConnectionPoolSettings,
        outbound_traffic_policy: OutboundTrafficPolicy,
    }
);

message!(
    /// An inbound listener.
    IstioIngressListener {
        port: SidecarPort,
        bind: String,
        capture_mode: String,
        default_endpoint: String,
        tls: ServerTlsSettings,
        connection_pool: ConnectionPoolSettings,
    }
);

message!(
    /// An outbound scope: the hosts this workload may reach.
    IstioEgressListener { port: SidecarPort, bind: String, capture_mode: String, hosts: Vec<String> }
);

message!(
    /// A Sidecar listener port.
    SidecarPort { number: u32, protocol: String, name: String, target_port: u32 }
);

message!(
    /// TLS for an ingress listener.
    ServerTlsSettings {
        mode: String,
        server_certificate: String,
        private_key: String,
        ca_certificates: String,
        credential_name: String,
        subject_alt_names: Vec<String>,
    }
);

message!(
    /// What happens to traffic for hosts not in the registry.
    OutboundTrafficPolicy { mode: String, egress_proxy: super::shared::Destination }
);
