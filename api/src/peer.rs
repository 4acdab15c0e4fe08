//! What one proxy tells the other about its workload, for the labels of
//! Istio's metrics on the far side (Istio's metadata exchange): the
//! workload's name, app, version, canonical service and revision, and
//! cluster. The namespace and principal are never taken from it: they
//! come from the peer's certificate.
//!
//! It rides in the `x-mesh-peer` header of each request between proxies
//! (HPACK keeps it to a few bytes after the first) and in the transport
//! header of an opaque stream. The text form is `key=value` pairs joined
//! by `,`; Kubernetes names and label values never hold `,` or `=`.

use std::collections::BTreeMap;

use crate::discovery::Workload;

/// Istio's default cluster ID, which its metrics carry as
/// `source_cluster` and `destination_cluster`.
pub const DEFAULT_CLUSTER: &str = "Kubernetes";

/// What a label of Istio's metrics says when it is not known.
pub const UNKNOWN: &str = "unknown";

/// A workload as metric labels name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The workload (Deployment) name.
    pub workload: String,
    /// Its namespace.
    pub namespace: String,
    /// The `app` label.
    pub app: String,
    /// The `version` label.
    pub version: String,
    /// Istio's canonical service.
    pub canonical_service: String,
    /// Istio's canonical revision.
    pub canonical_revision: String,
    /// The cluster it runs in.
    pub cluster: String,
}

impl Default for Peer {
    fn default() -> Self {
        Self::unknown()
    }
}

/// Istio's canonical service of a workload with `labels`: the
/// `service.istio.io/canonical-name` label, else `app.kubernetes.io/name`,
/// else `app`, else the workload's name.
pub fn canonical_service(labels: &BTreeMap<String, String>, workload: &str) -> String {
    [
        "service.istio.io/canonical-name",
        "app.kubernetes.io/name",
        "app",
    ]
    .iter()
    .find_map(|k| labels.get(*k).cloned())
    .unwrap_or_else(|| workload.to_string())
}

/// Istio's canonical revision: `service.istio.io/canonical-revision`,
/// else `app.kubernetes.io/version`, else `version`, else `latest`.
pub fn canonical_revision(labels: &BTreeMap<String, String>) -> String {
    [
        "service.istio.io/canonical-revision",
        "app.kubernetes.io/version",
        "version",
    ]
    .iter()
    .find_map(|k| labels.get(*k).cloned())
    .unwrap_or_else(|| "latest".into())
}

impl Peer {
    /// Nothing known (a client outside the mesh).
    pub fn unknown() -> Self {
        Self {
            workload: UNKNOWN.into(),
            namespace: UNKNOWN.into(),
            app: UNKNOWN.into(),
            version: UNKNOWN.into(),
            canonical_service: UNKNOWN.into(),
            canonical_revision: UNKNOWN.into(),
            cluster: UNKNOWN.into(),
        }
    }

    /// The labels of `w` (its workload name, else its pod's name).
    pub fn of(w: &Workload) -> Self {
        let workload = if w.workload.is_empty() {
            &w.name
        } else {
            &w.workload
        };
        Self::from_labels(workload, &w.namespace, &w.labels)
    }

    /// The labels of workload `workload` in `namespace`, with pod labels
    /// `labels`.
    pub fn from_labels(workload: &str, namespace: &str, labels: &BTreeMap<String, String>) -> Self {
        let label = |k: &str| labels.get(k).cloned().unwrap_or_else(|| UNKNOWN.into());
        Self {
            workload: workload.to_string(),
            namespace: namespace.to_string(),
            app: label("app"),
            version: label("version"),
            canonical_service: canonical_service(labels, workload),
            canonical_revision: canonical_revision(labels),
            cluster: DEFAULT_CLUSTER.into(),
        }
    }

    /// The text form.
    pub fn encode(&self) -> String {
        format!(
            "w={},n={},a={},v={},cs={},cr={},c={}",
            self.workload,
            self.namespace,
            self.app,
            self.version,
            self.canonical_service,
            self.canonical_revision,
            self.cluster
        )
    }

    /// Reads the text form; unknown keys are skipped (a newer peer),
    /// missing ones stay `unknown`.
    pub fn decode(text: &str) -> Self {
        let mut p = Self::unknown();
        for (k, v) in text.split(',').filter_map(|kv| kv.split_once('=')) {
            let slot = match k {
                "w" => &mut p.workload,
                "n" => &mut p.namespace,
                "a" => &mut p.app,
                "v" => &mut p.version,
                "cs" => &mut p.canonical_service,
                "cr" => &mut p.canonical_revision,
                "c" => &mut p.cluster,
                _ => continue,
            };
            if !v.is_empty() {
                *slot = v.to_string();
            }
        }
        p
    }
}

/// The service a client asked for, as the server's metrics name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRef {
    /// Its hostname.
    pub host: String,
    /// Its short name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
}

impl ServiceRef {
    /// The service of `host`: a Kubernetes Service's name and namespace
    /// read from `NAME.NAMESPACE.svc.DOMAIN`, any other host (a
    /// ServiceEntry's) named by itself.
    pub fn from_host(host: &str) -> Self {
        let mut parts = host.splitn(4, '.');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(name), Some(ns), Some("svc")) => Self {
                host: host.to_string(),
                name: name.to_string(),
                namespace: ns.to_string(),
            },
            _ => Self {
                host: host.to_string(),
                name: host.to_string(),
                namespace: UNKNOWN.into(),
            },
        }
    }

    /// The text form (`s=`, `sn=`, `sns=`), which can follow a
    /// [`Peer`]'s.
    pub fn encode(&self) -> String {
        format!("s={},sn={},sns={}", self.host, self.name, self.namespace)
    }

    /// Reads the text form; `None` without a host.
    pub fn decode(text: &str) -> Option<Self> {
        let mut r = Self {
            host: String::new(),
            name: UNKNOWN.into(),
            namespace: UNKNOWN.into(),
        };
        for (k, v) in text.split(',').filter_map(|kv| kv.split_once('=')) {
            match k {
                "s" => r.host = v.to_string(),
                "sn" if !v.is_empty() => r.name = v.to_string(),
                "sns" if !v.is_empty() => r.namespace = v.to_string(),
                _ => {}
            }
        }
        (!r.host.is_empty()).then_some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn canonical_names_fall_back_as_istio_does() {
        let l = labels(&[("app", "orders"), ("version", "v2")]);
        assert_eq!(canonical_service(&l, "orders-v2"), "orders");
        assert_eq!(canonical_revision(&l), "v2");
        let l = labels(&[
            ("app", "orders"),
            ("app.kubernetes.io/name", "shop-orders"),
            ("service.istio.io/canonical-revision", "r7"),
            ("version", "v2"),
        ]);
        assert_eq!(canonical_service(&l, "x"), "shop-orders");
        assert_eq!(canonical_revision(&l), "r7");
        assert_eq!(
            canonical_service(&BTreeMap::new(), "orders-v2"),
            "orders-v2"
        );
        assert_eq!(canonical_revision(&BTreeMap::new()), "latest");
    }

    #[test]
    fn round_trips_and_tolerates_what_it_does_not_know() {
        let p = Peer::from_labels(
            "orders-v1",
            "shop",
            &labels(&[("app", "orders"), ("version", "v1")]),
        );
        assert_eq!(p.app, "orders");
        assert_eq!(p.cluster, DEFAULT_CLUSTER);
        assert_eq!(Peer::decode(&p.encode()), p);
        let partial = Peer::decode("w=web,zz=1,a=,garbage");
        assert_eq!(partial.workload, "web");
        assert_eq!(partial.app, UNKNOWN);
        assert_eq!(Peer::decode(""), Peer::unknown());
        let s = ServiceRef {
            host: "orders.shop.svc.cluster.local".into(),
            name: "orders".into(),
            namespace: "shop".into(),
        };
        let both = format!("{},{}", p.encode(), s.encode());
        assert_eq!(Peer::decode(&both), p);
        assert_eq!(ServiceRef::decode(&both), Some(s.clone()));
        assert_eq!(ServiceRef::decode(&p.encode()), None);
        assert_eq!(ServiceRef::from_host("orders.shop.svc.cluster.local"), s);
        let se = ServiceRef::from_host("api.example.com");
        assert_eq!(
            (se.name.as_str(), se.namespace.as_str()),
            ("api.example.com", UNKNOWN)
        );
        let p = Peer::from_labels("db", "data", &BTreeMap::new());
        assert_eq!((p.app.as_str(), p.version.as_str()), (UNKNOWN, UNKNOWN));
        assert_eq!(p.canonical_service, "db");
    }
}
