//! Talking to a Kubernetes cluster as kubectl does: the kubeconfig
//! (`--kubeconfig`, else `KUBECONFIG`, else `~/.kube/config`, else the
//! in-cluster account) and its `--context`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};

pub mod apply;
pub mod forward;
pub mod objects;

/// How a command reaches its cluster.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct KubeArgs {
    /// The kubeconfig file (default: `KUBECONFIG`, then `~/.kube/config`).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
}

impl KubeArgs {
    /// A client, with an error that says what to check.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let config = match &self.kubeconfig {
            Some(path) => {
                let kc = Kubeconfig::read_from(path)
                    .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kc, &options).await?
            }
            None if self.context.is_some() => kube::Config::from_kubeconfig(&options).await?,
            None => kube::Config::infer().await.context(
                "no cluster configured: set KUBECONFIG, pass --kubeconfig, or run in a pod",
            )?,
        };
        let url = config.cluster_url.to_string();
        let client = kube::Client::try_from(config)?;
        let version = tokio::time::timeout(Duration::from_secs(10), client.apiserver_version())
            .await
            .map_err(|_| anyhow::anyhow!("the API server at {url} did not answer in 10 s"))?;
        version.with_context(|| {
            format!(
                "the API server at {url} is not reachable: check the kubeconfig's context (--context) and that the cluster runs"
            )
        })?;
        Ok(client)
    }
}

/// The server's `major.minor`, as numbers (`1.20`, `1.29`...).
pub async fn server_minor(client: &kube::Client) -> anyhow::Result<(u32, u32)> {
    let v = client.apiserver_version().await?;
    let num = |s: &str| s.trim_end_matches('+').parse::<u32>().unwrap_or(0);
    Ok((num(&v.major), num(&v.minor)))
}

/// Where a command that works on both finds the mesh.
pub enum Target {
    /// The local runtime.
    Local,
    /// A Kubernetes cluster.
    Kubernetes(kube::Client),
}

/// The local runtime when it runs and no cluster was named (`--context`,
/// `--kubeconfig`); else the cluster of the kubeconfig.
pub async fn target(kube: &KubeArgs, state: &crate::local::StateDir) -> anyhow::Result<Target> {
    let named = kube.context.is_some() || kube.kubeconfig.is_some();
    if !named
        && tokio::net::UnixStream::connect(state.socket())
            .await
            .is_ok()
    {
        return Ok(Target::Local);
    }
    kube.client().await.map(Target::Kubernetes).map_err(|e| {
        e.context("neither the local runtime (meshctl local up) nor a cluster is reachable")
    })
}

/// A pod by name, or the first ready pod of `deploy/NAME`.
pub async fn find_pod(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<k8s_openapi::api::core::v1::Pod> {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams};
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let Some(deploy) = name
        .strip_prefix("deploy/")
        .or_else(|| name.strip_prefix("deployment/"))
    else {
        return pods.get_opt(name).await?.with_context(|| {
            format!("pod {namespace}/{name} not found (kubectl get pods -n {namespace})")
        });
    };
    let d: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), namespace);
    let dep = d
        .get_opt(deploy)
        .await?
        .with_context(|| format!("deployment {namespace}/{deploy} not found"))?;
    let selector = dep
        .spec
        .and_then(|s| s.selector.match_labels)
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let ready = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    pods.list(&ListParams::default().labels(&selector))
        .await?
        .into_iter()
        .find(ready)
        .with_context(|| format!("deployment {namespace}/{deploy} has no ready pod"))
}

/// Whether a pod carries the mesh's proxy (a container, or a native
/// sidecar among its init containers).
pub fn carries_proxy(p: &k8s_openapi::api::core::v1::Pod) -> bool {
    p.spec.as_ref().is_some_and(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| c.name == api::inject::PROXY)
    })
}

/// A Secret's `key` as text (empty when absent).
pub fn secret_text(secret: &k8s_openapi::api::core::v1::Secret, key: &str) -> String {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default()
}
