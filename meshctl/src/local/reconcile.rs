//! The Deployment reconciler: keeps `replicas` pods of the current
//! template. A changed template surges new pods and removes the old ones
//! once enough new ones are ready; scaling down removes unready pods first,
//! then the newest.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Read;
use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::apps::v1::Deployment;

use super::objects::Phase;
use api::inject;

use super::node::PROXY_UID_BASE;
use super::store::{Key, PodRecord, State, Store, template_labels};

/// What to do for one Deployment.
#[derive(Debug, PartialEq, Eq, Default)]
pub struct Plan {
    /// Pods to create.
    pub create: usize,
    /// Pods to delete, by name.
    pub delete: Vec<String>,
}

/// The template's hash: pods carry it to tell old from new.
pub fn template_hash(d: &Deployment) -> String {
    let mut h = DefaultHasher::new();
    serde_json::to_string(&d.spec.as_ref().map(|s| &s.template))
        .unwrap_or_default()
        .hash(&mut h);
    format!("{:08x}", h.finish() as u32)
}

/// The plan for `d` given its live (not terminating) pods.
pub fn plan(d: &Deployment, pods: &[&PodRecord]) -> Plan {
    let desired =
        usize::try_from(d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)).unwrap_or(0);
    let hash = template_hash(d);
    let (mut current, old): (Vec<&PodRecord>, Vec<&PodRecord>) =
        pods.iter().copied().partition(|p| p.template_hash == hash);
    let mut out = Plan {
        create: desired.saturating_sub(current.len()),
        delete: Vec::new(),
    };
    if current.len() > desired {
        // Unready first, then newest.
        current.sort_by_key(|p| (p.ready, std::cmp::Reverse(p.seq)));
        out.delete.extend(
            current[..current.len() - desired]
                .iter()
                .map(|p| p.name.clone()),
        );
    }
    let ready_new = current.iter().filter(|p| p.ready).count();
    if desired == 0 || ready_new >= desired {
        out.delete.extend(old.iter().map(|p| p.name.clone()));
    }
    out
}

fn random_suffix(n: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..n)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect()
}

/// An unguessable bootstrap token from the kernel's random source.
fn token() -> anyhow::Result<String> {
    let mut b = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn new_pod(s: &mut State, key: &Key, d: &Deployment) -> anyhow::Result<PodRecord> {
    let ip = s
        .pod_ips
        .allocate()
        .ok_or_else(|| anyhow::anyhow!("no pod address left"))?;
    let seq = s.next_seq;
    s.next_seq += 1;
    let hash = template_hash(d);
    let name = format!("{}-{}-{}", key.1, &hash[..6], random_suffix(5));
    let template = d
        .spec
        .as_ref()
        .map(|sp| sp.template.clone())
        .unwrap_or_default();
    let mut meta = template.metadata.unwrap_or_default();
    meta.name = Some(name.clone());
    meta.namespace = Some(key.0.clone());
    let mut spec = template.spec.unwrap_or_default();
    let mut settings = s.injection.clone();
    settings.proxy_uid = i64::from(PROXY_UID_BASE) + i64::try_from(seq).unwrap_or(0);
    let none = BTreeMap::new();
    let target = inject::Target {
        namespace: &key.0,
        namespace_labels: s.namespaces.get(&key.0).unwrap_or(&none),
        workload: &key.1,
    };
    // Annotations were validated when the Deployment was applied.
    let meshed = matches!(
        inject::inject(&mut meta, &mut spec, target, &settings),
        Ok(inject::Outcome::Injected { .. })
    );
    Ok(PodRecord {
        namespace: key.0.clone(),
        name,
        deployment: key.1.clone(),
        template_hash: hash,
        labels: template_labels(d),
        service_account: spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into()),
        spec,
        meshed,
        seq,
        ip,
        token: token()?,
        phase: Phase::Pending,
        ready: false,
        restarts: 0,
        message: String::new(),
        created: SystemTime::now(),
    })
}

/// One pass over every Deployment; orphaned pods are deleted too.
pub fn reconcile(store: &Store) {
    store.write(|s| {
        let mut changed = false;
        let mut to_delete: Vec<Key> = Vec::new();
        let mut to_create: Vec<(Key, usize)> = Vec::new();
        for (key, d) in &s.deployments {
            let pods: Vec<&PodRecord> = s
                .pods
                .values()
                .filter(|p| {
                    p.namespace == key.0 && p.deployment == key.1 && p.phase != Phase::Terminating
                })
                .collect();
            let p = plan(d, &pods);
            to_delete.extend(p.delete.into_iter().map(|n| (key.0.clone(), n)));
            if p.create > 0 {
                to_create.push((key.clone(), p.create));
            }
        }
        for p in s.pods.values() {
            let owner = (p.namespace.clone(), p.deployment.clone());
            if p.phase != Phase::Terminating && !s.deployments.contains_key(&owner) {
                to_delete.push((p.namespace.clone(), p.name.clone()));
            }
        }
        for k in to_delete {
            if let Some(p) = s.pods.get_mut(&k) {
                p.phase = Phase::Terminating;
                p.ready = false;
                changed = true;
            }
        }
        for (key, n) in to_create {
            let Some(d) = s.deployments.get(&key).cloned() else {
                continue;
            };
            for _ in 0..n {
                match new_pod(s, &key, &d) {
                    Ok(p) => {
                        tracing::info!(pod = %p.name, ns = %p.namespace, ip = %p.ip, "pod created");
                        s.pods.insert((p.namespace.clone(), p.name.clone()), p);
                        changed = true;
                    }
                    Err(e) => tracing::error!(deployment = %key.1, error = %e, "cannot create pod"),
                }
            }
        }
        ((), changed)
    });
}

/// Runs [`reconcile`] on every store change.
pub async fn run(store: Arc<Store>) {
    let mut changes = store.changes();
    loop {
        reconcile(&store);
        if changes.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(replicas: i32, version: &str) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web", "version": version}},
                    "spec": {"containers": [{"name": "c", "command": ["true"]}]}
                }
            }
        }))
        .unwrap()
    }

    fn pod(name: &str, hash: &str, seq: u64, ready: bool) -> PodRecord {
        PodRecord {
            namespace: "ns".into(),
            name: name.into(),
            deployment: "web".into(),
            template_hash: hash.into(),
            labels: BTreeMap::new(),
            service_account: "default".into(),
            spec: Default::default(),
            meshed: true,
            seq,
            ip: "10.244.0.2".parse().unwrap(),
            token: String::new(),
            phase: Phase::Running,
            ready,
            restarts: 0,
            message: String::new(),
            created: SystemTime::now(),
        }
    }

    #[test]
    fn scales_up_and_down() {
        let d = deployment(3, "v1");
        let h = template_hash(&d);
        let a = pod("a", &h, 1, true);
        assert_eq!(
            plan(&d, &[&a]),
            Plan {
                create: 2,
                delete: vec![]
            }
        );
        let d1 = deployment(1, "v1");
        let (b, c) = (pod("b", &h, 2, true), pod("c", &h, 3, false));
        // Unready first, then the newest.
        assert_eq!(plan(&d1, &[&a, &b, &c]).delete, ["c", "b"]);
    }

    #[test]
    fn a_new_template_replaces_old_pods_once_ready() {
        let old = deployment(1, "v1");
        let new = deployment(1, "v2");
        assert_ne!(template_hash(&old), template_hash(&new));
        let a = pod("a", &template_hash(&old), 1, true);
        assert_eq!(
            plan(&new, &[&a]),
            Plan {
                create: 1,
                delete: vec![]
            }
        );
        let b = pod("b", &template_hash(&new), 2, false);
        assert_eq!(plan(&new, &[&a, &b]), Plan::default());
        let b = pod("b", &template_hash(&new), 2, true);
        assert_eq!(plan(&new, &[&a, &b]).delete, ["a"]);
    }

    #[test]
    fn injection_follows_annotation_and_namespace_label() {
        let store = Store::new();
        let key: Key = ("ns".into(), "web".into());
        let meshed = |d: &Deployment, ns_labels: &[(&str, &str)]| {
            store.write(|s| {
                let labels = ns_labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                s.namespaces.insert("ns".into(), labels);
                let p = new_pod(s, &key, d).unwrap();
                let proxy = p
                    .spec
                    .init_containers
                    .iter()
                    .flatten()
                    .any(|c| c.name == inject::PROXY);
                assert_eq!(proxy, p.meshed, "{:?}", p.spec);
                (p.meshed, false)
            })
        };
        let mut d = deployment(1, "v1");
        assert!(meshed(&d, &[]));
        assert!(!meshed(&d, &[("istio-injection", "disabled")]));
        if let Some(m) = d.spec.as_mut().and_then(|s| s.template.metadata.as_mut()) {
            m.annotations =
                Some([("sidecar.istio.io/inject".to_string(), "false".to_string())].into());
        }
        assert!(!meshed(&d, &[]));
    }
}
