//! `meshctl local exec|logs`.

use crate::cli::{ExecArgs, LogsArgs};
use crate::local::StateDir;
use crate::local::client::Client;
use crate::local::objects::PodStatus;

/// Finds a pod by name, or a ready pod of `deploy/NAME`.
pub async fn find_pod(state: &StateDir, ns: &str, name: &str) -> anyhow::Result<PodStatus> {
    let pods: Vec<PodStatus> = Client::new(state.clone()).get("/pods").await?;
    let found = match name
        .strip_prefix("deploy/")
        .or_else(|| name.strip_prefix("deployment/"))
    {
        Some(d) => pods
            .into_iter()
            .filter(|p| p.namespace == ns && p.deployment == d)
            .max_by_key(|p| (p.ready, p.age_secs)),
        None => pods
            .into_iter()
            .find(|p| p.namespace == ns && p.name == name),
    };
    found.ok_or_else(|| {
        anyhow::anyhow!("pod {ns}/{name} not found; see `meshctl local get pods -n {ns}`")
    })
}

/// Runs the command in the pod's network namespace; its exit code is ours.
pub async fn exec(state: &StateDir, args: &ExecArgs) -> anyhow::Result<i32> {
    let pod = find_pod(state, &args.namespace, &args.pod).await?;
    anyhow::ensure!(
        !pod.netns.is_empty(),
        "pod {} has no network namespace yet",
        pod.name
    );
    // The pod's PATH, as `kubectl exec` runs with the container's
    // environment, not the caller's.
    let status = std::process::Command::new("ip")
        .env("PATH", crate::local::node::PATH)
        .args(["netns", "exec", &pod.netns])
        .args(&args.command)
        .status()
        .map_err(|e| anyhow::anyhow!("running ip netns exec: {e}"))?;
    Ok(status.code().unwrap_or(1))
}

/// Prints a container's (or the proxy's) log.
pub async fn logs(state: &StateDir, args: &LogsArgs) -> anyhow::Result<i32> {
    let pod = find_pod(state, &args.namespace, &args.pod).await?;
    let dir = state.pod_dir(&pod.namespace, &pod.name);
    let file = match &args.container {
        Some(c) => dir.join(format!("{c}.log")),
        None => {
            let mut logs: Vec<_> = std::fs::read_dir(&dir)?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "log") && !p.ends_with("proxy.log"))
                .collect();
            logs.sort();
            logs.into_iter()
                .next()
                .ok_or_else(|| anyhow::anyhow!("pod {} has no container log yet", pod.name))?
        }
    };
    let text =
        std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    print!("{text}");
    Ok(0)
}
