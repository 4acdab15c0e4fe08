//! What a Prometheus needs to scrape the local runtime: a `file_sd`
//! target list of every running meshed pod's proxy (Istio's merged
//! `/metrics` on port 15020 at the pod's address), labelled as Istio's
//! scrape configuration labels Kubernetes pods (`namespace`, `pod`, and
//! the pod's labels), and a configuration that reads it. Pod addresses
//! live on the run's node namespace, so Prometheus runs there:
//! `ip netns exec <node namespace> prometheus --config.file=...`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::objects::Phase;
use super::store::PodRecord;

/// The port of the proxy's metrics.
pub const METRICS_PORT: u16 = 15020;

/// One `file_sd` group.
#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct Group {
    /// `ip:port`.
    pub targets: Vec<String>,
    /// Labels of its series.
    pub labels: BTreeMap<String, String>,
}

/// The directory under the state directory.
pub fn dir(state: &Path) -> PathBuf {
    state.join("prometheus")
}

/// A Prometheus label name for a Kubernetes label (Prometheus' own
/// sanitising: anything but `[a-zA-Z0-9_]` becomes `_`).
fn label_name(k: &str) -> String {
    k.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The groups of `pods`: one per running meshed pod, by name.
pub fn groups(pods: &[PodRecord]) -> Vec<Group> {
    let mut pods: Vec<&PodRecord> = pods
        .iter()
        .filter(|p| p.meshed && p.phase == Phase::Running)
        .collect();
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    pods.into_iter()
        .map(|p| {
            let mut labels: BTreeMap<String, String> = p
                .labels
                .iter()
                .map(|(k, v)| (label_name(k), v.clone()))
                .collect();
            labels.insert("namespace".into(), p.namespace.clone());
            labels.insert("pod".into(), p.name.clone());
            Group {
                targets: vec![format!("{}:{METRICS_PORT}", p.ip)],
                labels,
            }
        })
        .collect()
}

/// A Prometheus configuration that scrapes the targets every `interval`.
pub fn config(targets: &Path, interval: &str) -> String {
    format!(
        "global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\nscrape_configs:\n- job_name: mesh-proxies\n  metrics_path: /metrics\n  file_sd_configs:\n  - files: ['{}']\n    refresh_interval: 5s\n",
        targets.display()
    )
}

/// Writes the target list (atomically, when it changed) and the
/// configuration beside it; `written` keeps the last list.
pub fn write(state: &Path, pods: &[PodRecord], written: &mut String) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(&groups(pods)).map_err(std::io::Error::other)?;
    if *written == text {
        return Ok(());
    }
    let dir = dir(state);
    std::fs::create_dir_all(&dir)?;
    let targets = dir.join("targets.json");
    let tmp = dir.join(".targets.json.tmp");
    std::fs::write(&tmp, &text)?;
    std::fs::rename(&tmp, &targets)?;
    let cfg = dir.join("prometheus.yml");
    if !cfg.exists() {
        std::fs::write(&cfg, config(&targets, "5s"))?;
    }
    *written = text;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, meshed: bool, phase: Phase, ip: [u8; 4]) -> PodRecord {
        PodRecord {
            namespace: "shop".into(),
            name: name.into(),
            deployment: "orders".into(),
            template_hash: String::new(),
            labels: [
                ("app".to_string(), "orders".to_string()),
                ("app.kubernetes.io/version".into(), "v2".into()),
            ]
            .into_iter()
            .collect(),
            service_account: "default".into(),
            spec: Default::default(),
            meshed,
            seq: 1,
            ip: ip.into(),
            token: String::new(),
            phase,
            ready: true,
            restarts: 0,
            message: String::new(),
            created: std::time::SystemTime::now(),
        }
    }

    #[test]
    fn running_meshed_pods_become_targets_with_their_labels() {
        let pods = [
            pod("orders-b", true, Phase::Running, [10, 244, 0, 3]),
            pod("orders-a", true, Phase::Running, [10, 244, 0, 2]),
            pod("plain", false, Phase::Running, [10, 244, 0, 4]),
            pod("starting", true, Phase::Pending, [10, 244, 0, 5]),
        ];
        let g = groups(&pods);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].targets, vec!["10.244.0.2:15020"]);
        assert_eq!(g[0].labels["pod"], "orders-a");
        assert_eq!(g[0].labels["namespace"], "shop");
        assert_eq!(g[0].labels["app"], "orders");
        assert_eq!(g[0].labels["app_kubernetes_io_version"], "v2");
    }

    #[test]
    fn writes_only_changes_and_a_config_that_reads_them() {
        let dir = std::env::temp_dir().join(format!("mesh-scrape-{}", std::process::id()));
        let mut written = String::new();
        let pods = [pod("a", true, Phase::Running, [10, 244, 0, 2])];
        write(&dir, &pods, &mut written).unwrap();
        let targets = super::dir(&dir).join("targets.json");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&targets).unwrap()).unwrap();
        assert_eq!(v[0]["targets"][0], "10.244.0.2:15020");
        let cfg = std::fs::read_to_string(super::dir(&dir).join("prometheus.yml")).unwrap();
        assert!(cfg.contains(&targets.display().to_string()), "{cfg}");
        std::fs::remove_file(&targets).unwrap();
        write(&dir, &pods, &mut written).unwrap();
        assert!(!targets.exists(), "unchanged: not rewritten");
        write(&dir, &[], &mut written).unwrap();
        assert_eq!(std::fs::read_to_string(&targets).unwrap(), "[]");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
