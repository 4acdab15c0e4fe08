//! `meshctl install`, `upgrade` and `uninstall` on Kubernetes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::Value;

use crate::cli::Output;
use crate::k8s::{KubeArgs, apply};

pub mod identity;
pub mod render;
pub mod values;

/// The mesh's namespace.
pub const NAMESPACE: &str = "mesh-system";

/// `install` and `upgrade`.
#[derive(clap::Args, Debug, Clone)]
pub struct InstallArgs {
    /// A values file (the chart's `values.yaml` keys); repeatable, later
    /// files win.
    #[arg(short = 'f', long = "values")]
    pub values: Vec<PathBuf>,
    /// One value, `key=value` with a dotted key; repeatable, wins over
    /// files.
    #[arg(long = "set")]
    pub set: Vec<String>,
    /// The trust anchors and issuer.
    #[command(flatten)]
    pub identity: identity::IdentityFiles,
    /// Print what would be applied instead of applying it.
    #[arg(long)]
    pub dry_run: bool,
    /// Format of `--dry-run`'s output.
    #[arg(short, long, value_enum, default_value = "yaml")]
    pub output: Output,
    /// How long to wait for the controller to be ready.
    #[arg(long, default_value = "5m", value_parser = api::duration::parse)]
    pub timeout: Duration,
    /// The cluster.
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// `uninstall`.
#[derive(clap::Args, Debug, Clone)]
pub struct UninstallArgs {
    /// Print what would be deleted instead of deleting it.
    #[arg(long)]
    pub dry_run: bool,
    /// How long to wait for everything to be gone.
    #[arg(long, default_value = "3m", value_parser = api::duration::parse)]
    pub timeout: Duration,
    /// The cluster.
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// Prints every document, as `kubectl get -o yaml|json` would a list.
pub fn print(objects: &[Value], output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "apiVersion": "v1", "kind": "List", "items": objects,
            }))?
        ),
        _ => {
            for o in objects {
                print!("---\n{}", serde_yaml_ng::to_string(o)?);
            }
        }
    }
    Ok(())
}

/// Renders, then applies (or prints) the installation.
pub async fn install(a: &InstallArgs, upgrade: bool) -> anyhow::Result<i32> {
    let mut values = values::Values::layered(&a.values, &a.set)?;
    let client = match a.kube.client().await {
        Ok(c) => Some(c),
        Err(e) if a.dry_run => {
            eprintln!("note: no cluster ({e:#}); rendering for a new installation");
            None
        }
        Err(e) => return Err(e),
    };
    if let Some(c) = &client {
        let deployments: Api<Deployment> = Api::namespaced(c.clone(), NAMESPACE);
        let installed = deployments.get_opt(render::CONTROLLER).await?.is_some();
        if upgrade && !installed {
            anyhow::bail!("the mesh is not installed in {NAMESPACE}: run meshctl install");
        }
        if values.native_sidecars.is_none() {
            let (major, minor) = crate::k8s::server_minor(c).await?;
            values.native_sidecars = Some((major, minor) >= (1, 29));
        }
    }
    let source = identity::resolve(&mut values, &a.identity, client.as_ref(), NAMESPACE).await?;
    let objects = render::render(&values, NAMESPACE)?;
    if a.dry_run {
        print(&objects, a.output)?;
        return Ok(0);
    }
    let Some(client) = client else {
        unreachable!("a client unless dry-run")
    };
    eprintln!(
        "identity: {}",
        match source {
            identity::Source::Given => "the trust anchors and issuer given",
            identity::Source::Kept => "kept from the cluster",
            identity::Source::Generated => "a new trust anchor and issuer, generated",
        }
    );
    let mut applied = Vec::new();
    for o in &objects {
        if let Err(e) = apply::apply(&client, o).await {
            eprintln!("✗ {e:#}");
            half_applied(&applied);
            return Ok(1);
        }
        applied.push(apply::describe(o));
    }
    eprintln!("✓ applied {} objects", applied.len());
    wait_ready(&client, a.timeout).await?;
    eprintln!(
        "✓ the mesh is {}; next: meshctl check",
        if upgrade { "upgraded" } else { "installed" }
    );
    Ok(0)
}

fn half_applied(applied: &[String]) {
    if applied.is_empty() {
        eprintln!("nothing was applied; the cluster is as it was");
        return;
    }
    eprintln!("applied before the failure:");
    for d in applied {
        eprintln!("  {d}");
    }
    eprintln!(
        "to finish, fix the cause and run meshctl install again (it applies the same objects); to undo, run meshctl uninstall"
    );
}

/// Waits until the controller's Deployment is ready, saying so as it goes.
async fn wait_ready(client: &kube::Client, timeout: Duration) -> anyhow::Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let start = Instant::now();
    let mut said = String::new();
    loop {
        let d = api.get(render::CONTROLLER).await?;
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let status = d.status.unwrap_or_default();
        let ready = status.ready_replicas.unwrap_or(0);
        let updated = status.updated_replicas.unwrap_or(0);
        let current = d.metadata.generation == status.observed_generation;
        if current && ready >= want && updated >= want {
            eprintln!(
                "✓ deployment {NAMESPACE}/{}: {ready}/{want} ready",
                render::CONTROLLER
            );
            return Ok(());
        }
        let line = format!(
            "… deployment {NAMESPACE}/{}: {ready}/{want} ready",
            render::CONTROLLER
        );
        if line != said {
            eprintln!("{line}");
            said = line;
        }
        if start.elapsed() > timeout {
            anyhow::bail!(
                "the controller was not ready after {}s: see kubectl -n {NAMESPACE} describe deploy/{} and kubectl -n {NAMESPACE} logs deploy/{}",
                timeout.as_secs(),
                render::CONTROLLER,
                render::CONTROLLER
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Every object an installation owns, as references (the issuer given
/// in values does not change which objects there are).
pub fn inventory() -> anyhow::Result<Vec<Value>> {
    let mut v = values::Values::default();
    v.identity.trust_anchors_pem = "-".into();
    v.identity.issuer.cert_pem = "-".into();
    v.identity.issuer.key_pem = "-".into();
    Ok(render::render(&v, NAMESPACE)?
        .into_iter()
        .map(|o| {
            serde_json::json!({
                "apiVersion": o["apiVersion"], "kind": o["kind"],
                "metadata": {"name": o["metadata"]["name"], "namespace": o["metadata"]["namespace"]},
            })
        })
        .map(|mut o| {
            if o["metadata"]["namespace"].is_null() {
                o["metadata"].as_object_mut().map(|m| m.remove("namespace"));
            }
            o
        })
        .collect())
}

/// Removes the installation: webhooks first (so that nothing is blocked
/// on a controller that is going away), then the rest in reverse order,
/// the anchors' ConfigMaps in every namespace, the Lease, the Namespace
/// and the CRDs (and with them every mesh resource).
pub async fn uninstall(a: &UninstallArgs) -> anyhow::Result<i32> {
    let client = a.kube.client().await?;
    let mut objects = inventory()?;
    objects.reverse();
    // The webhooks were applied last: they are first now.
    let anchors = anchors_config_maps(&client).await?;
    objects.extend(anchors);
    objects.push(serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": render::CONTROLLER, "namespace": NAMESPACE},
    }));
    // The Namespace and CRDs go last: deleting them takes the rest along.
    objects.sort_by_key(slow_to_go);
    if a.dry_run {
        for o in &objects {
            println!("would delete {}", apply::describe(o));
        }
        return Ok(0);
    }
    let mut deleted = 0;
    for o in &objects {
        if apply::delete(&client, o).await? {
            eprintln!("✓ deleted {}", apply::describe(o));
            deleted += 1;
        }
    }
    if deleted == 0 {
        eprintln!("nothing to delete: the mesh is not installed");
    }
    wait_gone(&client, &objects, a.timeout).await?;
    sidecars_left(&client).await?;
    Ok(0)
}

async fn anchors_config_maps(client: &kube::Client) -> anyhow::Result<Vec<Value>> {
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::all(client.clone());
    let lp = ListParams::default().labels(&format!("{}={}", render::PART_OF.0, render::PART_OF.1));
    Ok(api
        .list(&lp)
        .await?
        .into_iter()
        .map(|c| {
            serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": c.metadata.name, "namespace": c.metadata.namespace},
            })
        })
        .collect())
}

/// The Namespace and the CRDs: deleting them takes what they hold along,
/// so they go last and are waited for.
fn slow_to_go(o: &Value) -> bool {
    matches!(
        o["kind"].as_str(),
        Some("Namespace" | "CustomResourceDefinition")
    )
}

/// Waits until the Namespace and the CRDs are gone.
async fn wait_gone(
    client: &kube::Client,
    objects: &[Value],
    timeout: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    // Their APIs are found once: the Namespace and CRD kinds stay served.
    let mut slow = Vec::new();
    for o in objects.iter().filter(|o| slow_to_go(o)) {
        if let Ok((api, name)) = apply::api_for(client, o).await {
            slow.push((api, name, apply::describe(o)));
        }
    }
    let mut said = 0;
    loop {
        let mut left = Vec::new();
        for (api, name, what) in &slow {
            if api.get_opt(name).await?.is_some() {
                left.push(what.clone());
            }
        }
        if left.is_empty() {
            eprintln!("✓ the mesh is uninstalled");
            return Ok(());
        }
        if left.len() != said {
            eprintln!("… waiting for {} to go: {}", left.len(), left.join(", "));
            said = left.len();
        }
        if start.elapsed() > timeout {
            anyhow::bail!(
                "still there after {}s: {}",
                timeout.as_secs(),
                left.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Says which pods still carry the proxy: uninstall leaves workloads.
async fn sidecars_left(client: &kube::Client) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::all(client.clone());
    let carrying: Vec<String> = pods
        .list(&ListParams::default())
        .await
        .context("listing pods")?
        .into_iter()
        .filter(crate::k8s::carries_proxy)
        .map(|p| {
            format!(
                "{}/{}",
                p.metadata.namespace.unwrap_or_default(),
                p.metadata.name.unwrap_or_default()
            )
        })
        .collect();
    if !carrying.is_empty() {
        eprintln!(
            "{} pods still carry the mesh's sidecar, which cannot renew its certificate now: {}",
            carrying.len(),
            carrying.join(", ")
        );
        eprintln!(
            "restart their workloads to remove it, e.g. kubectl rollout restart deployment -n NAMESPACE NAME"
        );
    }
    Ok(())
}
