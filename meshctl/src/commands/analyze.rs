//! `meshctl analyze`: checks across resources, on files, on the local
//! runtime's state or a cluster's objects, or on both (files override
//! what the runtime or cluster holds under the same kind, namespace and
//! name). Document errors count too.

use std::collections::BTreeMap;

use api::analyze::{self, Finding, Located, PodLabels, Severity};
use api::manifest::Object;

use crate::cli::{AnalyzeArgs, Output};
use crate::local::StateDir;
use crate::local::client::Client;
use crate::local::objects::PodStatus;

/// Runs the analysis; returns 0 (clean), 1 (errors) or 2 (warnings only).
pub async fn analyze(args: &AnalyzeArgs) -> anyhow::Result<i32> {
    let client = Client::new(StateDir::resolve(args.state.state_dir.clone()));
    let named = args.kube.context.is_some() || args.kube.kubeconfig.is_some();
    let runtime = !args.no_runtime && !named && client.alive().await;
    let kube = if args.no_runtime || runtime {
        None
    } else if named || args.files.is_empty() {
        Some(args.kube.client().await.map_err(|e| {
            e.context("nothing to analyze: give files with -f, start the local runtime (meshctl local up), or point at a cluster")
        })?)
    } else {
        // Files alone, unless a cluster answers.
        args.kube.client().await.ok()
    };
    anyhow::ensure!(
        runtime || kube.is_some() || !args.files.is_empty(),
        "nothing to analyze: give files with -f, or start the local runtime (meshctl local up)"
    );
    let mut findings: Vec<Finding> = Vec::new();
    let (docs, errors) = if args.files.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        super::apply::read_all(&args.files)?
    };
    findings.extend(errors.into_iter().map(|e| Finding {
        severity: Severity::Error,
        source: format!("{}:{}", e.source, e.document),
        object: e.object.unwrap_or_default(),
        field: e.field,
        message: e.message,
    }));
    let (cluster, pods): (Vec<Object>, Option<Vec<PodLabels>>) = if runtime {
        let objects = client.get("/objects").await?;
        let pods: Vec<PodStatus> = client.get("/pods").await?;
        (
            objects,
            Some(
                pods.into_iter()
                    .map(|p| PodLabels {
                        namespace: p.namespace,
                        labels: p.labels,
                    })
                    .collect(),
            ),
        )
    } else if let Some(k) = &kube {
        let read = crate::k8s::objects::read(k).await?;
        findings.extend(
            read.refused
                .into_iter()
                .map(|(object, field, message)| Finding {
                    severity: Severity::Error,
                    source: "cluster".into(),
                    object,
                    field,
                    message,
                }),
        );
        let pods = read
            .pods
            .into_iter()
            .map(|(namespace, labels)| PodLabels { namespace, labels })
            .collect();
        (read.objects, Some(pods))
    } else {
        (Vec::new(), None)
    };
    // Files win over the runtime's copy of the same object.
    let key = |o: &Object| (o.kind(), o.namespace().to_string(), o.name().to_string());
    let mut all: BTreeMap<_, Located<'_>> = BTreeMap::new();
    for o in &cluster {
        all.insert(
            key(o),
            Located {
                source: "cluster".into(),
                object: o,
            },
        );
    }
    for (file, d) in &docs {
        all.insert(
            key(&d.object),
            Located {
                source: format!("{file}:{}", d.index),
                object: &d.object,
            },
        );
    }
    let located: Vec<Located<'_>> = all.into_values().collect();
    findings.extend(analyze::analyze(&located, pods.as_deref()));

    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&findings)?),
        Output::Yaml => print!("{}", serde_yaml_ng::to_string(&findings)?),
        Output::Table => {
            for f in &findings {
                let level = if f.severity == Severity::Error {
                    "error"
                } else {
                    "warning"
                };
                let field = if f.field.is_empty() {
                    String::new()
                } else {
                    format!("{}: ", f.field)
                };
                println!("{level}: {} {}: {field}{}", f.source, f.object, f.message);
            }
            let errors = findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .count();
            eprintln!(
                "analyzed {} objects{}: {errors} errors, {} warnings",
                located.len(),
                if runtime {
                    " (with the local runtime's state)"
                } else if kube.is_some() {
                    " (with the cluster's objects)"
                } else {
                    ""
                },
                findings.len() - errors
            );
        }
    }
    Ok(match findings.iter().map(|f| f.severity).min() {
        Some(Severity::Error) => 1,
        Some(Severity::Warning) => 2,
        None => 0,
    })
}
