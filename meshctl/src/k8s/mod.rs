//! Talking to a Kubernetes cluster as kubectl does: the kubeconfig
//! (`--kubeconfig`, else `KUBECONFIG`, else `~/.kube/config`, else the
//! in-cluster account) and its `--context`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};

pub mod apply;

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
