//! SPIFFE identities of workloads: `spiffe://<trust domain>/ns/<ns>/sa/<sa>`.

use std::fmt;
use std::str::FromStr;

/// The trust domain of a default installation.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// A workload identity in the Istio/Linkerd form
/// `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

/// Why a text is not a workload SPIFFE ID.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpiffeError {
    /// The scheme is not `spiffe://`.
    #[error("{0:?} does not start with spiffe://")]
    Scheme(String),
    /// The trust domain is empty or has characters SPIFFE forbids.
    #[error("{0:?} has an invalid trust domain (lowercase letters, digits, '.', '-', '_')")]
    TrustDomain(String),
    /// The path is not `/ns/<ns>/sa/<sa>`.
    #[error("{0:?} has a path that is not /ns/<namespace>/sa/<service account>")]
    Path(String),
}

impl SpiffeId {
    /// Builds an ID, checking each part.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeError> {
        format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}").parse()
    }

    /// The trust domain, e.g. `cluster.local`.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The Kubernetes namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The ServiceAccount name.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

impl FromStr for SpiffeId {
    type Err = SpiffeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or_else(|| SpiffeError::Scheme(s.to_string()))?;
        let (td, path) = rest.split_once('/').unwrap_or((rest, ""));
        let td_ok = !td.is_empty()
            && td.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_')
            });
        if !td_ok {
            return Err(SpiffeError::TrustDomain(s.to_string()));
        }
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            ["ns", ns, "sa", sa] if valid_segment(ns) && valid_segment(sa) => Ok(Self {
                trust_domain: td.to_string(),
                namespace: (*ns).to_string(),
                service_account: (*sa).to_string(),
            }),
            _ => Err(SpiffeError::Path(s.to_string())),
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl serde::Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SpiffeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_workload_id() {
        let id: SpiffeId = "spiffe://cluster.local/ns/shop/sa/orders".parse().unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "shop");
        assert_eq!(id.service_account(), "orders");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/orders");
        assert_eq!(
            SpiffeId::new("cluster.local", "shop", "orders").unwrap(),
            id
        );
    }

    #[test]
    fn rejects_bad_ids() {
        let bad = [
            ("http://cluster.local/ns/a/sa/b", "spiffe://"),
            ("spiffe:///ns/a/sa/b", "trust domain"),
            ("spiffe://Cluster.local/ns/a/sa/b", "trust domain"),
            ("spiffe://cluster.local/ns/a", "path"),
            ("spiffe://cluster.local/ns/a/sa/", "path"),
            ("spiffe://cluster.local/ns/../sa/b", "path"),
            ("spiffe://cluster.local/ns/a/sa/b/extra", "path"),
            ("spiffe://cluster.local/sa/b/ns/a", "path"),
        ];
        for (text, why) in bad {
            let err = text.parse::<SpiffeId>().unwrap_err().to_string();
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
