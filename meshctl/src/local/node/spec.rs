//! From a pod's spec to the processes the node agent runs, as kubelet
//! reads it: init containers in order (one with `restartPolicy: Always`
//! is a sidecar that keeps running), then the containers; command and
//! args (an image with no command that the runtime knows, the proxy's,
//! stands for its binary); the environment, with the downward API's
//! `fieldRef`s; the user from `securityContext`; and volumes, which are
//! directories of the pod here (there is no mount namespace per pod): a
//! mount path in an environment value points into the volume's directory.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, PodSpec, Volume};

/// What the downward API can tell about the pod.
pub struct PodFacts<'a> {
    /// `metadata.name`.
    pub name: &'a str,
    /// `metadata.namespace`.
    pub namespace: &'a str,
    /// `status.podIP`.
    pub ip: Ipv4Addr,
    /// `spec.serviceAccountName`.
    pub service_account: &'a str,
}

/// One container, ready to start.
#[derive(Debug, Clone, PartialEq)]
pub struct Runnable {
    /// The container's name.
    pub name: String,
    /// What to execute.
    pub argv: Vec<String>,
    /// Its environment.
    pub env: Vec<(String, String)>,
    /// UID and GID (root when unset).
    pub run_as: Option<(u32, u32)>,
    /// Its declared ports.
    pub ports: Vec<u16>,
    /// An init container that runs to completion before the next.
    pub init: bool,
}

/// The kinds of volume the runtime provides, by what they hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeKind {
    /// A projected ServiceAccount token (the pod's bootstrap token).
    Token,
    /// The trust anchors' ConfigMap.
    Anchors,
}

/// What a volume of the spec is, when the runtime provides it.
pub fn volume_kind(v: &Volume) -> Option<VolumeKind> {
    let sources = v.projected.as_ref()?.sources.as_ref()?;
    sources.iter().find_map(|s| {
        if s.service_account_token.is_some() {
            Some(VolumeKind::Token)
        } else if s
            .config_map
            .as_ref()
            .is_some_and(|c| c.name == api::inject::ANCHORS_CONFIG_MAP)
        {
            Some(VolumeKind::Anchors)
        } else {
            None
        }
    })
}

fn field(path: &str, pod: &PodFacts<'_>) -> Option<String> {
    Some(match path {
        "metadata.name" => pod.name.to_string(),
        "metadata.namespace" => pod.namespace.to_string(),
        "status.podIP" => pod.ip.to_string(),
        "spec.serviceAccountName" => pod.service_account.to_string(),
        _ => return None,
    })
}

/// `value` with a mount path of `c` replaced by its volume's directory.
fn mounted(value: &str, c: &Container, volumes: &BTreeMap<String, PathBuf>) -> String {
    for m in c.volume_mounts.iter().flatten() {
        let Some(dir) = volumes.get(&m.name) else {
            continue;
        };
        if let Some(rest) = value.strip_prefix(&m.mount_path)
            && (rest.is_empty() || rest.starts_with('/'))
        {
            return format!("{}{rest}", dir.display());
        }
    }
    value.to_string()
}

fn run_as(c: &Container, spec: &PodSpec) -> Option<(u32, u32)> {
    let pod = spec.security_context.as_ref();
    let sc = c.security_context.as_ref();
    let uid = sc
        .and_then(|s| s.run_as_user)
        .or(pod.and_then(|s| s.run_as_user))?;
    let gid = sc
        .and_then(|s| s.run_as_group)
        .or(pod.and_then(|s| s.run_as_group))
        .unwrap_or(uid);
    let id = |v: i64| u32::try_from(v).unwrap_or(0);
    Some((id(uid), id(gid)))
}

fn runnable(
    c: &Container,
    init: bool,
    spec: &PodSpec,
    pod: &PodFacts<'_>,
    volumes: &BTreeMap<String, PathBuf>,
    proxy_bin: &Path,
) -> Runnable {
    let mut argv: Vec<String> = c.command.iter().flatten().cloned().collect();
    if argv.is_empty() && c.image.as_deref() == Some(super::PROXY_IMAGE) {
        argv.push(proxy_bin.display().to_string());
    }
    argv.extend(c.args.iter().flatten().cloned());
    let env = c
        .env
        .iter()
        .flatten()
        .filter_map(|e| {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) => mounted(v, c, volumes),
                (None, Some(from)) => field(&from.field_ref.as_ref()?.field_path, pod)?,
                (None, None) => String::new(),
            };
            Some((e.name.clone(), value))
        })
        .collect();
    Runnable {
        name: c.name.clone(),
        argv,
        env,
        run_as: run_as(c, spec),
        ports: c
            .ports
            .iter()
            .flatten()
            .filter_map(|p| u16::try_from(p.container_port).ok())
            .collect(),
        init: init && c.restart_policy.as_deref() != Some("Always"),
    }
}

/// The pod's containers in the order they start.
pub fn runnables(
    spec: &PodSpec,
    pod: &PodFacts<'_>,
    volumes: &BTreeMap<String, PathBuf>,
    proxy_bin: &Path,
) -> Vec<Runnable> {
    let inits = spec.init_containers.iter().flatten().map(|c| (c, true));
    let mains = spec.containers.iter().map(|c| (c, false));
    inits
        .chain(mains)
        .map(|(c, init)| runnable(c, init, spec, pod, volumes, proxy_bin))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_injected_pod_runs_as_kubelet_would_run_it() {
        let mut meta = Default::default();
        let mut spec: PodSpec = serde_json::from_value(serde_json::json!({
            "serviceAccountName": "web",
            "securityContext": {"runAsUser": 1000},
            "containers": [{"name": "main", "command": ["python3", "-m", "http.server"],
                            "args": ["8080"], "ports": [{"containerPort": 8080}],
                            "env": [{"name": "MODE", "value": "fast"}]}]
        }))
        .unwrap();
        let mut settings = crate::local::store::Store::new().read(|s| s.injection.clone());
        settings.proxy_uid = 100_007;
        settings.controller = "10.244.0.1:15012".into();
        let none = BTreeMap::new();
        let target = api::inject::Target {
            namespace: "shop",
            namespace_labels: &none,
            workload: "web",
        };
        api::inject::inject(&mut meta, &mut spec, target, &settings).unwrap();
        let volumes: BTreeMap<String, PathBuf> = spec
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| {
                let dir = match volume_kind(v)? {
                    VolumeKind::Token => "/state/pods/shop/web-1/proxy",
                    VolumeKind::Anchors => "/state/pods/shop/web-1/anchors",
                };
                Some((v.name.clone(), PathBuf::from(dir)))
            })
            .collect();
        assert_eq!(volumes.len(), 2);
        let pod = PodFacts {
            name: "web-1",
            namespace: "shop",
            ip: "10.244.0.9".parse().unwrap(),
            service_account: "web",
        };
        let run = runnables(&spec, &pod, &volumes, Path::new("/bin/mesh-proxy"));
        let names: Vec<(&str, bool)> = run.iter().map(|r| (r.name.as_str(), r.init)).collect();
        assert_eq!(
            names,
            [("mesh-init", true), ("mesh-proxy", false), ("main", false)]
        );
        assert_eq!(run[0].argv[..2], ["/bin/mesh-proxy", "init"]);
        assert_eq!(run[0].run_as, Some((0, 0)));
        let proxy = &run[1];
        assert_eq!(proxy.argv, ["/bin/mesh-proxy", "run"]);
        assert_eq!(proxy.run_as, Some((100_007, 100_007)));
        let env: BTreeMap<&str, &str> = proxy
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(env["POD_IP"], "10.244.0.9");
        assert_eq!(env["POD_NAME"], "web-1");
        assert_eq!(env["SERVICE_ACCOUNT"], "web");
        assert_eq!(env["MESH_CONTROLLER"], "10.244.0.1:15012");
        assert_eq!(env["MESH_TOKEN_FILE"], "/state/pods/shop/web-1/proxy/token");
        assert_eq!(
            env["MESH_TRUST_ANCHORS"],
            "/state/pods/shop/web-1/anchors/ca.crt"
        );
        let main = &run[2];
        assert_eq!(main.argv, ["python3", "-m", "http.server", "8080"]);
        assert_eq!(main.run_as, Some((1000, 1000)));
        assert_eq!(main.env, [("MODE".to_string(), "fast".to_string())]);
        assert_eq!(main.ports, [8080]);
    }
}
