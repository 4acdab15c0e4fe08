//! `meshctl inject -f FILE|DIR|-`: manifests in, the same with the mesh's
//! sidecar in every pod template out (Pods, Deployments, StatefulSets,
//! DaemonSets, ReplicaSets, Jobs and CronJobs), like `istioctl
//! kube-inject` and `linkerd inject`. Other kinds pass through unchanged.
//! It is idempotent; stderr says what was injected, what was skipped and
//! why. The injection itself is [`api::inject`], as the webhook's.

use std::collections::BTreeMap;

use api::inject::{self, Outcome, Settings, Target};
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_yaml_ng::Value;

use crate::cli::InjectArgs;

/// Where a kind keeps its pod template.
fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "Pod" => &[],
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => &["spec", "template"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        _ => return None,
    })
}

fn get_mut<'a>(v: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, k| v.get_mut(*k))
}

fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_str()
}

/// What happened to one document.
enum Done {
    Injected(Vec<String>),
    Skipped(String),
    Unchanged,
}

/// Injects the pod template of `doc` in place.
fn inject_doc(
    doc: &mut Value,
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    s: &Settings,
) -> Result<Done, String> {
    let kind = text(doc, &["kind"]).unwrap_or_default().to_string();
    let Some(path) = template_path(&kind) else {
        return Ok(Done::Unchanged);
    };
    let namespace = text(doc, &["metadata", "namespace"])
        .unwrap_or("default")
        .to_string();
    let name = text(doc, &["metadata", "name"])
        .unwrap_or_default()
        .to_string();
    let Some(template) = get_mut(doc, path) else {
        return Err(format!("{} has no pod template", path.join(".")));
    };
    let field = |k: &str| template.get(k).cloned().unwrap_or(Value::Null);
    let mut meta: ObjectMeta = serde_yaml_ng::from_value(field("metadata"))
        .map_err(|e| format!("{}: {e}", [path, &["metadata"]].concat().join(".")))?;
    let mut spec: PodSpec = serde_yaml_ng::from_value(field("spec"))
        .map_err(|e| format!("{}: {e}", [path, &["spec"]].concat().join(".")))?;
    let workload = if kind == "Pod" {
        inject::workload_of(&meta)
    } else {
        name
    };
    let empty = BTreeMap::new();
    let target = Target {
        namespace: &namespace,
        namespace_labels: namespaces.get(&namespace).unwrap_or(&empty),
        workload: &workload,
    };
    match inject::inject(&mut meta, &mut spec, target, s).map_err(|e| e.to_string())? {
        Outcome::Skipped(why) => Ok(Done::Skipped(why)),
        Outcome::Injected { ignored } => {
            let map = template
                .as_mapping_mut()
                .ok_or_else(|| format!("{} is not a mapping", path.join(".")))?;
            let meta = serde_yaml_ng::to_value(&meta).map_err(|e| e.to_string())?;
            let spec = serde_yaml_ng::to_value(&spec).map_err(|e| e.to_string())?;
            map.insert("metadata".into(), meta);
            map.insert("spec".into(), spec);
            Ok(Done::Injected(ignored))
        }
    }
}

/// Namespaces' labels, from the Namespace objects among `docs`.
fn namespace_labels<'a>(
    docs: impl Iterator<Item = &'a Value>,
) -> BTreeMap<String, BTreeMap<String, String>> {
    docs.filter(|d| text(d, &["kind"]) == Some("Namespace"))
        .filter_map(|d| {
            let name = text(d, &["metadata", "name"])?.to_string();
            let labels = d
                .get("metadata")?
                .get("labels")
                .and_then(|l| serde_yaml_ng::from_value(l.clone()).ok())
                .unwrap_or_default();
            Some((name, labels))
        })
        .collect()
}

/// Injects the files; prints the result; returns the exit code.
pub fn run(args: &InjectArgs) -> anyhow::Result<i32> {
    let settings = Settings {
        controller: args.controller.clone(),
        trust_domain: args.trust_domain.clone(),
        proxy_uid: args.proxy_uid,
        native_sidecars: args.native_sidecars,
        by_default: true,
        ..Settings::for_image(&args.proxy_image)
    };
    let mut docs = Vec::new();
    for f in super::apply::expand(&args.files)? {
        let name = f.display().to_string();
        let source = super::apply::read(&f)?;
        for (i, d) in serde_yaml_ng::Deserializer::from_str(&source).enumerate() {
            let v = serde::Deserialize::deserialize(d)
                .map_err(|e| anyhow::anyhow!("{name}:{}: not YAML: {e}", i + 1))?;
            if !matches!(v, Value::Null) {
                docs.push((name.clone(), i + 1, v));
            }
        }
    }
    let namespaces = namespace_labels(docs.iter().map(|d| &d.2));
    let mut failed = 0;
    let mut out = Vec::new();
    for (file, index, mut doc) in docs {
        let what = format!(
            "{}/{}",
            text(&doc, &["kind"]).unwrap_or("?").to_lowercase(),
            text(&doc, &["metadata", "name"]).unwrap_or("?")
        );
        match inject_doc(&mut doc, &namespaces, &settings) {
            Ok(Done::Injected(ignored)) => {
                eprintln!("{what}: injected");
                for i in ignored {
                    eprintln!("{what}: warning: {i}");
                }
            }
            Ok(Done::Skipped(why)) => eprintln!("{what}: skipped: {why}"),
            Ok(Done::Unchanged) => {}
            Err(e) => {
                failed += 1;
                eprintln!("error: {file}:{index} {what}: {e}; left unchanged");
            }
        }
        out.push(serde_yaml_ng::to_string(&doc)?);
    }
    println!("{}", out.join("---\n").trim_end());
    Ok(if failed == 0 { 0 } else { 1 })
}

/// A live workload kind: (`apiVersion`, `Kind`) from kubectl's names.
fn live_kind(word: &str) -> anyhow::Result<(&'static str, &'static str)> {
    Ok(match word {
        "deploy" | "deployment" | "deployments" => ("apps/v1", "Deployment"),
        "sts" | "statefulset" | "statefulsets" => ("apps/v1", "StatefulSet"),
        "ds" | "daemonset" | "daemonsets" => ("apps/v1", "DaemonSet"),
        "cj" | "cronjob" | "cronjobs" => ("batch/v1", "CronJob"),
        "job" | "jobs" | "pod" | "pods" | "po" => anyhow::bail!(
            "a {word}'s pod template cannot change once created: inject its manifest (meshctl inject -f FILE | kubectl apply -f -) and create it again"
        ),
        _ => anyhow::bail!("{word:?}: give deploy/NAME, sts/NAME, ds/NAME or cronjob/NAME"),
    })
}

/// The installation's injection settings, read from the controller's
/// Deployment (its `--proxy-image`, `--trust-domain`... arguments).
async fn installed_settings(client: &kube::Client) -> anyhow::Result<Settings> {
    use k8s_openapi::api::apps::v1::Deployment;
    let deployments: kube::Api<Deployment> =
        kube::Api::namespaced(client.clone(), crate::install::NAMESPACE);
    let d = deployments
        .get_opt(crate::install::render::CONTROLLER)
        .await?
        .ok_or_else(|| {
            anyhow::anyhow!("the mesh is not installed on this cluster: run meshctl install")
        })?;
    let args: Vec<String> = d
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers.into_iter().next())
        .and_then(|c| c.args)
        .unwrap_or_default();
    let flag = |name: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("--{name}=")).map(str::to_string))
    };
    let mut s =
        Settings::for_image(&flag("proxy-image").unwrap_or_else(|| inject::DEFAULT_IMAGE.into()));
    s.pull_policy = flag("proxy-image-pull-policy").or(s.pull_policy);
    if let Some(td) = flag("trust-domain") {
        s.trust_domain = td;
    }
    s.native_sidecars = args.iter().any(|a| a == "--native-sidecars");
    s.controller = format!(
        "{}.{}.svc:15012",
        crate::install::render::CONTROLLER,
        crate::install::NAMESPACE
    );
    // Asked for by name: injected unless the workload or its namespace
    // says no.
    s.by_default = true;
    Ok(s)
}

/// Injects a live workload: reads it, injects its pod template, replaces
/// it (the resourceVersion read makes a concurrent change fail, not be
/// lost).
pub async fn live(args: &InjectArgs) -> anyhow::Result<i32> {
    let target = args.workload.as_deref().unwrap_or_default();
    let (word, name) = target
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("{target:?}: give KIND/NAME, e.g. deploy/web"))?;
    let (mut api_version, kind) = live_kind(word)?;
    let client = args.kube.client().await?;
    let settings = installed_settings(&client).await?;
    let reference = |v: &str| {
        serde_json::json!({
            "apiVersion": v, "kind": kind,
            "metadata": {"name": name, "namespace": args.namespace},
        })
    };
    let api = match crate::k8s::apply::api_for(&client, &reference(api_version)).await {
        Ok((api, _)) => api,
        // CronJobs are batch/v1beta1 before Kubernetes 1.21.
        Err(_) if kind == "CronJob" => {
            api_version = "batch/v1beta1";
            crate::k8s::apply::api_for(&client, &reference(api_version))
                .await?
                .0
        }
        Err(e) => return Err(e),
    };
    let object = api.get_opt(name).await?.ok_or_else(|| {
        anyhow::anyhow!(
            "{} {}/{name} not found",
            kind.to_lowercase(),
            args.namespace
        )
    })?;
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(client.clone());
    let labels = namespaces
        .get_opt(&args.namespace)
        .await?
        .and_then(|n| n.metadata.labels)
        .unwrap_or_default();
    let mut json = serde_json::to_value(&object)?;
    json["apiVersion"] = api_version.into();
    json["kind"] = kind.into();
    let mut doc: Value = serde_json::from_value(json)?;
    let what = format!("{}/{name}", kind.to_lowercase());
    let ns_labels = BTreeMap::from([(args.namespace.clone(), labels)]);
    match inject_doc(&mut doc, &ns_labels, &settings).map_err(|e| anyhow::anyhow!("{what}: {e}"))? {
        Done::Skipped(why) => {
            eprintln!("{what}: skipped: {why}");
            return Ok(0);
        }
        Done::Unchanged => return Ok(0),
        Done::Injected(ignored) => {
            for i in ignored {
                eprintln!("{what}: warning: {i}");
            }
        }
    }
    if args.dry_run {
        print!("{}", serde_yaml_ng::to_string(&doc)?);
        return Ok(0);
    }
    let updated: kube::api::DynamicObject = serde_yaml_ng::from_value(doc)?;
    api.replace(name, &kube::api::PostParams::default(), &updated)
        .await
        .map_err(|e| anyhow::anyhow!("{what}: not patched: {e}; run the command again"))?;
    eprintln!("{what}: injected; its pods are replaced by a rollout");
    Ok(0)
}
