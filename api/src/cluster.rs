//! A store-neutral view of what the controller needs from a cluster: pods
//! and services. The local runtime serves it as JSON; the Kubernetes
//! backend will build it from reflectors.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::istio::Resource;
use crate::istio::destination_rule::DestinationRuleSpec;
use crate::istio::security::{
    AuthorizationPolicySpec, PeerAuthenticationSpec, RequestAuthenticationSpec,
};
use crate::istio::service_entry::{ServiceEntrySpec, SidecarSpec};
use crate::istio::virtual_service::VirtualServiceSpec;
use crate::policy::LocalRateLimitSpec;

/// Whether `labels` carry every pair of `selector` (an empty selector
/// matches everything; a Service's empty selector selects no pod, which
/// its callers say).
pub fn labels_match(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Everything at one version.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Grows with every change.
    pub version: u64,
    /// All pods.
    pub pods: Vec<Pod>,
    /// All services.
    pub services: Vec<Service>,
    /// Mesh resources (VirtualService, DestinationRule, ...), as applied.
    #[serde(default)]
    pub config: MeshConfig,
}

/// The mesh resources the controller translates for proxies; Linkerd's
/// kinds arrive already translated into Istio's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MeshConfig {
    /// VirtualServices.
    #[serde(default)]
    pub virtual_services: Vec<Resource<VirtualServiceSpec>>,
    /// DestinationRules.
    #[serde(default)]
    pub destination_rules: Vec<Resource<DestinationRuleSpec>>,
    /// LocalRateLimits.
    #[serde(default)]
    pub rate_limits: Vec<Resource<LocalRateLimitSpec>>,
    /// ServiceEntries.
    #[serde(default)]
    pub service_entries: Vec<Resource<ServiceEntrySpec>>,
    /// Sidecars (for `outboundTrafficPolicy`).
    #[serde(default)]
    pub sidecars: Vec<Resource<SidecarSpec>>,
    /// PeerAuthentications.
    #[serde(default)]
    pub peer_authentications: Vec<Resource<PeerAuthenticationSpec>>,
    /// AuthorizationPolicies.
    #[serde(default)]
    pub authorization_policies: Vec<Resource<AuthorizationPolicySpec>>,
    /// RequestAuthentications.
    #[serde(default)]
    pub request_authentications: Vec<Resource<RequestAuthenticationSpec>>,
    /// Telemetries.
    #[serde(default)]
    pub telemetries: Vec<Resource<crate::istio::telemetry::TelemetrySpec>>,
    /// The JWKS the controller fetched, by source
    /// ([`jwks_source`](crate::jwt::jwks_source)): the document, or why
    /// there is none. Filled in by the controller, never stored.
    #[serde(skip)]
    pub jwks: BTreeMap<String, Result<String, String>>,
    /// The mesh configuration (the ConfigMap `istio` of a root
    /// namespace).
    #[serde(default)]
    pub mesh: crate::istio::mesh_config::MeshSettings,
}

impl MeshConfig {
    /// The native (Istio) configuration of valid objects, Linkerd's kinds
    /// translated; kinds the proxies do not read are left out.
    pub fn from_objects<'a>(
        objects: impl IntoIterator<Item = &'a crate::manifest::Object>,
    ) -> Self {
        use crate::manifest::Object;
        let mut c = Self::default();
        for o in objects.into_iter().flat_map(Object::native) {
            match o {
                Object::VirtualService(vs) => c.virtual_services.push(*vs),
                Object::DestinationRule(dr) => c.destination_rules.push(*dr),
                Object::LocalRateLimit(rl) => c.rate_limits.push(*rl),
                Object::ServiceEntry(se) => c.service_entries.push(*se),
                Object::Sidecar(sc) => c.sidecars.push(*sc),
                Object::PeerAuthentication(pa) => c.peer_authentications.push(*pa),
                Object::AuthorizationPolicy(ap) => c.authorization_policies.push(*ap),
                Object::RequestAuthentication(ra) => c.request_authentications.push(*ra),
                Object::Telemetry(t) => c.telemetries.push(*t),
                Object::ConfigMap(cm) => {
                    if let Some(settings) = crate::istio::mesh_config::from_config_map(&cm) {
                        c.mesh = settings;
                    }
                }
                _ => {}
            }
        }
        c
    }
}

/// A pod and its status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pod {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// ServiceAccount.
    pub service_account: String,
    /// IP once it has one.
    pub ip: Option<IpAddr>,
    /// Whether a proxy was injected.
    pub meshed: bool,
    /// Ready to serve: endpoints include only ready pods.
    pub ready: bool,
    /// Named container ports, for named targetPorts.
    pub named_ports: BTreeMap<String, u16>,
    /// The workload (Deployment) that owns it.
    #[serde(default)]
    pub owner: String,
    /// Every app container has exited and none will restart (a Job's
    /// pod): its proxy should leave.
    #[serde(default)]
    pub app_exited: bool,
}

/// A ClusterIP Service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Service {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Its cluster IP.
    pub cluster_ip: IpAddr,
    /// Label selector (empty: no endpoints).
    pub selector: BTreeMap<String, String>,
    /// Ports.
    pub ports: Vec<ServicePort>,
    /// Istio's `networking.istio.io/exportTo` annotation, split at commas
    /// (`None`: exported to every namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_to: Option<Vec<String>>,
}

impl Service {
    /// The mesh's view of a Kubernetes Service that has `cluster_ip`.
    pub fn from_k8s(svc: &k8s_openapi::api::core::v1::Service, cluster_ip: IpAddr) -> Self {
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        let spec = svc.spec.clone().unwrap_or_default();
        let port = |n: i32| u16::try_from(n).unwrap_or(0);
        Self {
            export_to: export_to_annotation(svc.metadata.annotations.as_ref()),
            name: svc.metadata.name.clone().unwrap_or_default(),
            namespace: svc.metadata.namespace.clone().unwrap_or_default(),
            cluster_ip,
            selector: spec.selector.unwrap_or_default(),
            ports: spec
                .ports
                .unwrap_or_default()
                .into_iter()
                .map(|p| ServicePort {
                    name: p.name.unwrap_or_default(),
                    port: port(p.port),
                    target_port: match p.target_port {
                        Some(IntOrString::Int(n)) => TargetPort::Number(port(n)),
                        Some(IntOrString::String(n)) => TargetPort::Name(n),
                        None => TargetPort::Number(port(p.port)),
                    },
                    app_protocol: p.app_protocol,
                })
                .collect(),
        }
    }
}

/// The named ports of a pod's app containers (the proxy's are not
/// targets).
pub fn named_ports(spec: &k8s_openapi::api::core::v1::PodSpec) -> BTreeMap<String, u16> {
    spec.containers
        .iter()
        .filter(|c| c.name != crate::inject::PROXY)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|cp| Some((cp.name.clone()?, u16::try_from(cp.container_port).ok()?)))
        .collect()
}

/// The Service annotation that limits which namespaces see a Service.
pub const EXPORT_TO_ANNOTATION: &str = "networking.istio.io/exportTo";

/// The namespaces a Service's annotations export it to.
pub fn export_to_annotation(annotations: Option<&BTreeMap<String, String>>) -> Option<Vec<String>> {
    let v = annotations?.get(EXPORT_TO_ANNOTATION)?;
    Some(
        v.split(',')
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect(),
    )
}

/// Where a Service port's traffic goes on a pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetPort {
    /// A number.
    Number(u16),
    /// A container port name.
    Name(String),
}

/// A Service port.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServicePort {
    /// Name (may be empty for a single port).
    pub name: String,
    /// Port clients use.
    pub port: u16,
    /// Port on the pods.
    pub target_port: TargetPort,
    /// `appProtocol`, if set.
    pub app_protocol: Option<String>,
}

/// The endpoints an EndpointSlice lists for a Service: the source of a
/// selector-less Service's endpoints (its selector's pods are read
/// directly, with their identities).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSlice {
    /// Namespace (the Service's).
    pub namespace: String,
    /// The Service it belongs to (`kubernetes.io/service-name`).
    pub service: String,
    /// Port name -> port on the endpoints (a Service port's name picks
    /// its target).
    pub ports: BTreeMap<String, u16>,
    /// The endpoints.
    pub endpoints: Vec<SliceEndpoint>,
}

/// One address of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceEndpoint {
    /// The address.
    pub address: IpAddr,
    /// `conditions.ready` (absent: ready, as Kubernetes reads it).
    pub ready: bool,
    /// The pod it is, when `targetRef` names one.
    pub pod: Option<String>,
}

impl EndpointSlice {
    /// An EndpointSlice's JSON as served by `discovery.k8s.io` `v1` or
    /// `v1beta1` (the fields read here are the same in both); `None` when
    /// it belongs to no Service or lists no IP addresses (FQDN slices).
    pub fn from_json(v: &serde_json::Value) -> Option<Self> {
        let meta = v.get("metadata")?;
        let namespace = meta.get("namespace")?.as_str()?.to_string();
        let service = meta
            .get("labels")?
            .get("kubernetes.io/service-name")?
            .as_str()?
            .to_string();
        if v.get("addressType").and_then(|t| t.as_str()) == Some("FQDN") {
            return None;
        }
        let ports = v
            .get("ports")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let name = p.get("name").and_then(|n| n.as_str()).unwrap_or_default();
                let port = u16::try_from(p.get("port")?.as_u64()?).ok()?;
                Some((name.to_string(), port))
            })
            .collect();
        let endpoints = v
            .get("endpoints")
            .and_then(|e| e.as_array())
            .into_iter()
            .flatten()
            .flat_map(|e| {
                let ready = e
                    .pointer("/conditions/ready")
                    .and_then(|r| r.as_bool())
                    .unwrap_or(true);
                let pod = e
                    .get("targetRef")
                    .filter(|t| t.get("kind").and_then(|k| k.as_str()) == Some("Pod"))
                    .and_then(|t| t.get("name")?.as_str())
                    .map(str::to_string);
                e.get("addresses")
                    .and_then(|a| a.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str()?.parse().ok())
                    .map(move |address| SliceEndpoint {
                        address,
                        ready,
                        pod: pod.clone(),
                    })
            })
            .collect();
        Some(Self {
            namespace,
            service,
            ports,
            endpoints,
        })
    }
}

/// What a token proves: the pod that holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenReview {
    /// Pod name.
    pub pod: String,
    /// Namespace.
    pub namespace: String,
    /// ServiceAccount.
    pub service_account: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_read_alike_in_v1_and_v1beta1_and_fqdn_or_orphan_ones_are_skipped() {
        let slice = |api: &str, extra: serde_json::Value| {
            let mut v = serde_json::json!({
                "apiVersion": api,
                "kind": "EndpointSlice",
                "metadata": {"name": "legacy-x1", "namespace": "shop",
                             "labels": {"kubernetes.io/service-name": "legacy"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": [
                    {"addresses": ["10.244.0.7"], "conditions": {"ready": true},
                     "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "shop"}},
                    {"addresses": ["10.244.0.8"], "conditions": {"ready": false}},
                    {"addresses": ["192.0.2.1"]}
                ]
            });
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            v
        };
        let expected = EndpointSlice {
            namespace: "shop".into(),
            service: "legacy".into(),
            ports: [("http".to_string(), 8080)].into(),
            endpoints: vec![
                SliceEndpoint {
                    address: "10.244.0.7".parse().unwrap(),
                    ready: true,
                    pod: Some("web-1".into()),
                },
                SliceEndpoint {
                    address: "10.244.0.8".parse().unwrap(),
                    ready: false,
                    pod: None,
                },
                SliceEndpoint {
                    address: "192.0.2.1".parse().unwrap(),
                    ready: true,
                    pod: None,
                },
            ],
        };
        let none = serde_json::json!({});
        for api in ["discovery.k8s.io/v1", "discovery.k8s.io/v1beta1"] {
            assert_eq!(
                EndpointSlice::from_json(&slice(api, none.clone())).as_ref(),
                Some(&expected)
            );
        }
        let fqdn = serde_json::json!({"addressType": "FQDN"});
        assert_eq!(
            EndpointSlice::from_json(&slice("discovery.k8s.io/v1", fqdn)),
            None
        );
        let orphan = serde_json::json!({"metadata": {"name": "x", "namespace": "shop"}});
        assert_eq!(
            EndpointSlice::from_json(&slice("discovery.k8s.io/v1", orphan)),
            None
        );
    }
}
