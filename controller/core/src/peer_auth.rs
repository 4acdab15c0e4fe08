//! The PeerAuthentication in force for a pod, as Istio resolves it.
//!
//! Three levels: a policy of the pod's namespace whose selector picks the
//! pod (workload), the namespace's selector-less one, and the root
//! namespace's selector-less one (mesh-wide). Where a level holds
//! several, the oldest wins (then the first by name). The most specific
//! level's mode applies; `UNSET` (or no mode) inherits the next level's,
//! and PERMISSIVE is the default. `portLevelMtls`, keyed by the pod's
//! (target) port, is honoured on workload-level policies only, as in
//! Istio, and an `UNSET` port inherits the workload's mode.

use api::cluster::{self, MeshConfig};
use api::istio::Resource;
use api::istio::security::PeerAuthenticationSpec;
use api::proto::{MtlsMode, PeerAuth};

use api::istio::ROOT_NAMESPACES;

/// A mode as written; `None` for UNSET, absent or unknown (validation
/// refuses unknown modes before they get here).
fn mode(m: Option<&String>) -> Option<MtlsMode> {
    match m.map(String::as_str) {
        Some("STRICT") => Some(MtlsMode::Strict),
        Some("PERMISSIVE") => Some(MtlsMode::Permissive),
        Some("DISABLE") => Some(MtlsMode::Disable),
        _ => None,
    }
}

fn selector(
    pa: &Resource<PeerAuthenticationSpec>,
) -> Option<&std::collections::BTreeMap<String, String>> {
    pa.spec
        .selector
        .as_ref()
        .and_then(|s| s.match_labels.as_ref())
        .filter(|l| !l.is_empty())
}

/// The oldest of `candidates`, then the first by name.
fn oldest<'a>(
    candidates: impl Iterator<Item = &'a Resource<PeerAuthenticationSpec>>,
) -> Option<&'a Resource<PeerAuthenticationSpec>> {
    candidates.min_by(|a, b| {
        let key = |r: &Resource<PeerAuthenticationSpec>| {
            (
                r.metadata.creation_timestamp.as_ref().map(|t| t.0),
                r.metadata.name.clone(),
            )
        };
        let (ka, kb) = (key(a), key(b));
        // A policy without a timestamp (files, tests) sorts after dated ones.
        match (ka.0, kb.0) {
            (Some(x), Some(y)) => (x, &ka.1).cmp(&(y, &kb.1)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => ka.1.cmp(&kb.1),
        }
    })
}

/// The policy for `pod`; `None` when no PeerAuthentication concerns it
/// (PERMISSIVE everywhere).
pub fn for_pod(config: &MeshConfig, pod: &cluster::Pod) -> Option<PeerAuth> {
    let pas = &config.peer_authentications;
    let workload = oldest(pas.iter().filter(|pa| {
        pa.namespace() == pod.namespace
            && selector(pa).is_some_and(|s| cluster::labels_match(s, &pod.labels))
    }));
    let ns_wide = oldest(
        pas.iter()
            .filter(|pa| pa.namespace() == pod.namespace && selector(pa).is_none()),
    );
    let mesh_wide = oldest(
        pas.iter()
            .filter(|pa| ROOT_NAMESPACES.contains(&pa.namespace()) && selector(pa).is_none()),
    );
    let levels: Vec<_> = [workload, ns_wide, mesh_wide]
        .into_iter()
        .flatten()
        .collect();
    if levels.is_empty() {
        return None;
    }
    let inherited = levels
        .iter()
        .find_map(|pa| mode(pa.spec.mtls.as_ref().and_then(|m| m.mode.as_ref())))
        .unwrap_or(MtlsMode::Permissive);
    let ports = workload
        .into_iter()
        .flat_map(|pa| pa.spec.port_level_mtls.iter().flatten())
        .filter_map(|(port, m)| Some((*port, mode(m.mode.as_ref())? as i32)))
        .collect();
    Some(PeerAuth {
        mode: inherited as i32,
        ports,
        policies: levels.iter().map(|pa| pa.address()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::proto::mtls_mode as mode_for;

    use crate::testing::pod;

    fn config(yaml: &str) -> MeshConfig {
        MeshConfig {
            peer_authentications: yaml
                .split("---")
                .map(|d| serde_yaml_ng::from_str(d).unwrap())
                .collect(),
            ..Default::default()
        }
    }

    const POLICIES: &str = "
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: legacy}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: db, namespace: legacy}
spec:
  selector: {matchLabels: {app: db}}
  mtls: {mode: UNSET}
  portLevelMtls:
    5432: {mode: STRICT}
    9000: {mode: UNSET}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: metrics, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  portLevelMtls: {9090: {mode: DISABLE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: b-later, namespace: open}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: a-first, namespace: open}
spec: {mtls: {mode: DISABLE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ignored-ports, namespace: open}
spec: {portLevelMtls: {80: {mode: STRICT}}}
";

    #[test]
    fn the_most_specific_level_decides_and_unset_inherits() {
        let c = config(POLICIES);
        let p = |ns, app, port| mode_for(for_pod(&c, &pod(ns, app)).as_ref(), port);
        use MtlsMode::{Disable, Permissive, Strict};
        // Mesh-wide STRICT, no namespace policy.
        assert_eq!(p("shop", "api", 80), Strict);
        // A port-level DISABLE under a workload policy without a mode.
        assert_eq!(p("shop", "web", 9090), Disable);
        assert_eq!(p("shop", "web", 80), Strict);
        // The namespace's PERMISSIVE beats the mesh's STRICT.
        assert_eq!(p("legacy", "api", 80), Permissive);
        // UNSET inherits the namespace's; the port's own mode applies, its
        // UNSET inherits the workload's.
        assert_eq!(p("legacy", "db", 80), Permissive);
        assert_eq!(p("legacy", "db", 5432), Strict);
        assert_eq!(p("legacy", "db", 9000), Permissive);
        // Two namespace-wide policies: the first (no timestamps) wins, and
        // a selector-less policy's portLevelMtls is not honoured.
        assert_eq!(p("open", "x", 80), Disable);
        let d = for_pod(&c, &pod("legacy", "db")).unwrap();
        assert_eq!(
            d.policies,
            ["legacy/db", "legacy/default", "istio-system/default"]
        );
        assert!(for_pod(&MeshConfig::default(), &pod("shop", "web")).is_none());
        assert_eq!(mode_for(None, 80), Permissive);
    }
}
