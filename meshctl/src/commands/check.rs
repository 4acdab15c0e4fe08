//! `meshctl check`: is the cluster ready for the mesh (`--pre`), is the
//! mesh healthy, are a namespace's proxies in sync (`--proxy`). One line
//! per check, ✓ or ✗ with what to do; exit 1 when any fails.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};

use crate::install::{NAMESPACE, render};
use crate::k8s::KubeArgs;

/// `check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Before installing: API, version, permissions, conflicting CRDs.
    #[arg(long, conflicts_with = "proxy")]
    pub pre: bool,
    /// Only the proxies (of `-n`, else every namespace).
    #[arg(long)]
    pub proxy: bool,
    /// The proxies' namespace.
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// The cluster.
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// The outcome of the checks so far.
#[derive(Default)]
struct Report {
    failed: usize,
}

impl Report {
    fn pass(&mut self, what: &str) {
        println!("✓ {what}");
    }

    fn fail(&mut self, what: &str, hint: &str) {
        println!("✗ {what}\n    {hint}");
        self.failed += 1;
    }

    fn check(&mut self, what: &str, r: Result<String, String>) {
        match r {
            Ok(detail) if detail.is_empty() => self.pass(what),
            Ok(detail) => self.pass(&format!("{what}: {detail}")),
            Err(hint) => self.fail(what, &hint),
        }
    }
}

/// Runs the checks.
pub async fn check(a: &CheckArgs) -> anyhow::Result<i32> {
    let mut r = Report::default();
    let client = match a.kube.client().await {
        Ok(c) => c,
        Err(e) => {
            r.fail("the API server answers", &format!("{e:#}"));
            return Ok(1);
        }
    };
    let (major, minor) = crate::k8s::server_minor(&client).await?;
    r.pass(&format!(
        "the API server answers (Kubernetes {major}.{minor})"
    ));
    if a.pre {
        pre(&client, (major, minor), &mut r).await?;
    } else if a.proxy {
        proxies(&client, a.namespace.as_deref(), &mut r).await;
    } else {
        installed(&client, &mut r).await?;
        proxies(&client, a.namespace.as_deref(), &mut r).await;
    }
    println!(
        "\n{}",
        if r.failed == 0 {
            "every check passed".to_string()
        } else {
            format!("{} checks failed", r.failed)
        }
    );
    Ok(i32::from(r.failed > 0))
}

async fn pre(client: &kube::Client, version: (u32, u32), r: &mut Report) -> anyhow::Result<()> {
    r.check(
        "the Kubernetes version is supported",
        if version >= (1, 20) {
            Ok(if version >= (1, 29) {
                "1.29 or later: the proxy is injected as a native sidecar".into()
            } else {
                "before 1.29: the proxy is injected as a classic sidecar".into()
            })
        } else {
            Err("the mesh needs Kubernetes 1.20 or later".into())
        },
    );
    let wanted = [
        ("apiextensions.k8s.io", "customresourcedefinitions", None),
        ("rbac.authorization.k8s.io", "clusterroles", None),
        ("rbac.authorization.k8s.io", "clusterrolebindings", None),
        (
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            None,
        ),
        (
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
            None,
        ),
        ("", "namespaces", None),
        ("apps", "deployments", Some(NAMESPACE)),
        ("", "secrets", Some(NAMESPACE)),
        ("", "services", Some(NAMESPACE)),
    ];
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut denied = Vec::new();
    for (group, resource, namespace) in wanted {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(group.into()),
                    resource: Some(resource.into()),
                    verb: Some("create".into()),
                    namespace: namespace.map(Into::into),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = reviews.create(&PostParams::default(), &review).await?;
        if !answer.status.is_some_and(|s| s.allowed) {
            denied.push(format!("create {resource}"));
        }
    }
    r.check(
        "you may create what install applies",
        if denied.is_empty() {
            Ok(String::new())
        } else {
            Err(format!(
                "denied: {}; install needs cluster-admin (kubectl auth can-i --list)",
                denied.join(", ")
            ))
        },
    );
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut foreign = Vec::new();
    for s in api::crd::served() {
        let name = format!("{}.{}", s.plural, s.group);
        if let Some(crd) = crds.get_opt(&name).await? {
            let ours = crd
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(render::PART_OF.0))
                .is_some_and(|v| v == render::PART_OF.1);
            if !ours {
                foreign.push(name);
            }
        }
    }
    r.check(
        "no other mesh's CRDs are installed",
        if foreign.is_empty() {
            Ok(String::new())
        } else {
            Err(format!(
                "{} belong to another installation (Istio? Linkerd?): remove it first, or install would take them over",
                foreign.join(", ")
            ))
        },
    );
    Ok(())
}

async fn installed(client: &kube::Client, r: &mut Report) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut missing = Vec::new();
    for s in api::crd::served() {
        let name = format!("{}.{}", s.plural, s.group);
        let established = crds.get_opt(&name).await?.is_some_and(|c| {
            c.status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
        if !established {
            missing.push(name);
        }
    }
    r.check(
        "the mesh's CRDs are established",
        if missing.is_empty() {
            Ok(String::new())
        } else {
            Err(format!(
                "missing: {}; run meshctl install",
                missing.join(", ")
            ))
        },
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let controller = deployments.get_opt(render::CONTROLLER).await?;
    r.check(
        "the controller is ready",
        match &controller {
            None => Err(format!(
                "no deployment {NAMESPACE}/{}: run meshctl install",
                render::CONTROLLER
            )),
            Some(d) => {
                let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let ready = d
                    .status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0);
                if ready >= want {
                    Ok(format!("{ready}/{want} replicas"))
                } else {
                    Err(format!(
                        "{ready}/{want} replicas ready: kubectl -n {NAMESPACE} describe deploy/{}",
                        render::CONTROLLER
                    ))
                }
            }
        },
    );
    let anchors = identity(client, controller.as_ref(), r).await?;
    webhooks(client, anchors.as_deref(), r).await?;
    Ok(())
}

/// Checks the trust anchors and issuer, from the Secret the controller's
/// Deployment mounts; returns the anchors' PEM.
async fn identity(
    client: &kube::Client,
    controller: Option<&Deployment>,
    r: &mut Report,
) -> anyhow::Result<Option<String>> {
    let secret_name = controller
        .and_then(|d| d.spec.as_ref()?.template.spec.as_ref()?.volumes.as_ref())
        .into_iter()
        .flatten()
        .find_map(|v| v.secret.as_ref()?.secret_name.clone())
        .unwrap_or_else(|| render::IDENTITY_SECRET.into());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let Some(secret) = secrets.get_opt(&secret_name).await? else {
        r.fail(
            "the trust anchors and issuer",
            &format!("Secret {NAMESPACE}/{secret_name} does not exist: run meshctl install, or create it (tls.crt, tls.key, ca.crt)"),
        );
        return Ok(None);
    };
    let field = |k: &str| crate::k8s::secret_text(&secret, k);
    let (anchors, issuer) = (field("ca.crt"), field("tls.crt"));
    r.check("the trust anchors are valid", valid_for(&anchors, None));
    r.check(
        "the issuer is valid and signed by a trust anchor",
        valid_for(&issuer, Some(&anchors)),
    );
    Ok(Some(anchors))
}

/// The first certificate of `pem` is a CA valid now (and, with
/// `anchors`, issued by one of them); how long it has left.
fn valid_for(pem: &str, anchors: Option<&str>) -> Result<String, String> {
    let ders = common::pki::pem_certs(pem).map_err(|e| e.to_string())?;
    let der = ders.first().ok_or("no certificate in the PEM")?;
    let v = common::pki::validity(der).map_err(|e| e.to_string())?;
    let now = SystemTime::now();
    if !v.is_ca {
        return Err(format!("{} is not a CA certificate", v.subject));
    }
    if v.not_before > now {
        return Err(format!("{} is not valid yet", v.subject));
    }
    let left = v.not_after.duration_since(now).map_err(|_| {
        format!(
            "{} has expired: rotate it (meshctl upgrade with new identity files)",
            v.subject
        )
    })?;
    if let Some(anchors) = anchors {
        let subjects: Vec<String> = common::pki::pem_certs(anchors)
            .unwrap_or_default()
            .iter()
            .filter_map(|d| common::pki::validity(d).ok())
            .map(|a| a.subject)
            .collect();
        if !subjects.contains(&v.issuer) {
            return Err(format!(
                "{} was issued by {}, which is not a trust anchor",
                v.subject, v.issuer
            ));
        }
    }
    let days = left.as_secs() / 86_400;
    if left < Duration::from_secs(7 * 86_400) {
        return Err(format!(
            "{} expires in {days} days: rotate it soon",
            v.subject
        ));
    }
    Ok(format!("{}, {days} days left", v.subject))
}

/// The webhooks exist, trust the anchors, and answer through the API
/// server (a server-side dry run of an invalid resource).
async fn webhooks(
    client: &kube::Client,
    anchors: Option<&str>,
    r: &mut Report,
) -> anyhow::Result<()> {
    use k8s_openapi::api::admissionregistration::v1::{
        MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
    };
    let bundle = anchors.map(|a| a.as_bytes().to_vec());
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let m = mutating.get_opt(render::INJECTOR).await?;
    let v = validating.get_opt(render::VALIDATOR).await?;
    let bundles: Option<Vec<Vec<u8>>> = m.zip(v).map(|(m, v)| {
        m.webhooks
            .into_iter()
            .flatten()
            .map(|w| w.client_config)
            .chain(v.webhooks.into_iter().flatten().map(|w| w.client_config))
            .map(|c| c.ca_bundle.map(|b| b.0).unwrap_or_default())
            .collect()
    });
    r.check(
        "the webhooks trust the mesh's CA",
        match bundles {
            None => Err(format!(
                "{} or {} is missing: run meshctl install",
                render::INJECTOR,
                render::VALIDATOR
            )),
            Some(b) if bundle.as_ref().is_some_and(|want| b.iter().all(|x| x == want)) => {
                Ok(String::new())
            }
            Some(_) => Err(
                "a caBundle differs from the trust anchors: the controller's leader rewrites it within seconds; if not, see its logs".into(),
            ),
        },
    );
    let probe = serde_json::json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "meshctl-check", "namespace": "default"},
        "spec": {"hosts": ["meshctl-check"], "http": [{"route": [{"destination": {"host": "meshctl-check"}, "weight": -1}]}]},
    });
    let (api, _) = crate::k8s::apply::api_for(client, &probe).await?;
    let object: kube::api::DynamicObject = serde_json::from_value(probe)?;
    let answer = api
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &object,
        )
        .await;
    r.check(
        "the validating webhook answers",
        match answer {
            Err(kube::Error::Api(e)) if e.message.contains("weight") => Ok(String::new()),
            Err(e) => Err(format!("{e}: kubectl -n {NAMESPACE} logs deploy/{}", render::CONTROLLER)),
            Ok(_) => Err("an invalid VirtualService was accepted: the webhook is not called (kubectl get validatingwebhookconfiguration mesh-validator -o yaml)".into()),
        },
    );
    Ok(())
}

/// Every proxy (of `namespace`) holds a stream and is in sync.
async fn proxies(client: &kube::Client, namespace: Option<&str>, r: &mut Report) {
    let what = match namespace {
        Some(ns) => format!("the proxies of {ns} are connected and in sync"),
        None => "every proxy is connected and in sync".to_string(),
    };
    match super::proxy_status::kubernetes_rows(client, namespace).await {
        Err(e) => r.fail(&what, &format!("{e:#}")),
        Ok(rows) => {
            let bad: Vec<String> = rows
                .iter()
                .filter(|(_, status)| status != "SYNCED")
                .map(|(name, status)| format!("{name} {status}"))
                .collect();
            if bad.is_empty() {
                r.pass(&format!("{what}: {} proxies", rows.len()));
            } else {
                r.fail(
                    &what,
                    &format!("{}: meshctl proxy-status shows why", bad.join(", ")),
                );
            }
        }
    }
}
