//! What goes into an injected pod: the redirection init container, the
//! proxy (a native sidecar or a classic one that holds the app until it
//! is ready), their volumes, the status annotation and Istio's labels.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapProjection, Container, ContainerPort, EnvVar, EnvVarSource, ExecAction,
    HTTPGetAction, Lifecycle, LifecycleHandler, ObjectFieldSelector, PodSpec, Probe,
    ProjectedVolumeSource, ResourceRequirements, SecurityContext, ServiceAccountTokenProjection,
    Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::user_volumes::UserVolumes;
use super::{
    ANCHORS_DIR, HEALTH_PORT, INIT, InjectError, PROXY, PROXY_CONFIG, STATUS, Settings, TOKEN_DIR,
    probes,
};
use crate::annotations::TrafficExclusions;

/// The token's lifetime; kubelet renews it at 80%.
const TOKEN_SECONDS: i64 = 3600;

/// `proxy.istio.io/config`, as far as the mesh acts on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    /// `holdApplicationUntilProxyStarts` (default: hold, for a classic
    /// sidecar; a native one always starts first).
    pub hold: Option<bool>,
    /// `terminationDrainDuration`, as written.
    pub drain: Option<String>,
    /// Fields read and not acted on.
    pub ignored: Vec<String>,
}

impl ProxyConfig {
    /// Reads the annotation's YAML.
    pub fn parse(yaml: &str) -> Result<Self, InjectError> {
        let bad = |m: String| InjectError {
            annotation: PROXY_CONFIG.into(),
            message: m,
        };
        let v: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(yaml).map_err(|e| bad(format!("not YAML: {e}")))?;
        let mut c = Self::default();
        let Some(map) = v.as_mapping() else {
            return if v.is_null() {
                Ok(c)
            } else {
                Err(bad(
                    "expected a mapping such as holdApplicationUntilProxyStarts: true".into(),
                ))
            };
        };
        for (k, v) in map {
            let key = k.as_str().unwrap_or_default();
            match key {
                "holdApplicationUntilProxyStarts" => {
                    c.hold = Some(v.as_bool().ok_or_else(|| {
                        bad("holdApplicationUntilProxyStarts: expected true or false".into())
                    })?);
                }
                "terminationDrainDuration" => {
                    let d = v.as_str().unwrap_or_default();
                    crate::duration::parse(d).map_err(|e| {
                        bad(format!(
                            "terminationDrainDuration: {e}; write a duration such as 5s"
                        ))
                    })?;
                    c.drain = Some(d.to_string());
                }
                other => c
                    .ignored
                    .push(format!("{PROXY_CONFIG}: {other} is not supported")),
            }
        }
        Ok(c)
    }
}

/// Istio's per-pod resource annotations, and the request or limit each sets.
const RESOURCES: [(&str, &str, &str); 4] = [
    ("sidecar.istio.io/proxyCPU", "requests", "cpu"),
    ("sidecar.istio.io/proxyMemory", "requests", "memory"),
    ("sidecar.istio.io/proxyCPULimit", "limits", "cpu"),
    ("sidecar.istio.io/proxyMemoryLimit", "limits", "memory"),
];

/// `sidecar.istio.io/rewriteAppHTTPProbers`.
const REWRITE_PROBES: &str = "sidecar.istio.io/rewriteAppHTTPProbers";

/// What the pod's annotations ask for.
pub struct Plan {
    /// `mesh-proxy init` flags.
    pub init_args: Vec<String>,
    /// The proxy's settings.
    pub config: ProxyConfig,
    /// The proxy's resources.
    pub resources: ResourceRequirements,
    /// Whether the app's probes go through the proxy.
    pub rewrite_probes: bool,
    /// `sidecar.istio.io/userVolume` and `userVolumeMount`.
    pub user_volumes: UserVolumes,
}

fn is_quantity(v: &str) -> bool {
    let digits = v.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &v[digits.len()..];
    !digits.is_empty()
        && digits.parse::<f64>().is_ok_and(|n| n >= 0.0)
        && ["", "m", "k", "M", "G", "T", "Ki", "Mi", "Gi", "Ti"].contains(&suffix)
}

fn quantities(pairs: &[(&str, &str, &str)]) -> BTreeMap<String, BTreeMap<String, Quantity>> {
    let mut out: BTreeMap<String, BTreeMap<String, Quantity>> = BTreeMap::new();
    for (kind, res, v) in pairs {
        out.entry(kind.to_string())
            .or_default()
            .insert(res.to_string(), Quantity(v.to_string()));
    }
    out
}

impl Plan {
    /// Reads `annotations`; an error names the annotation.
    pub fn read(annotations: &BTreeMap<String, String>) -> Result<Self, InjectError> {
        let t =
            TrafficExclusions::from_annotations(annotations).map_err(|(annotation, message)| {
                InjectError {
                    annotation,
                    message,
                }
            })?;
        let config = match annotations.get(PROXY_CONFIG) {
            Some(y) => ProxyConfig::parse(y)?,
            None => ProxyConfig::default(),
        };
        let mut set = vec![
            ("requests", "cpu", "100m"),
            ("requests", "memory", "32Mi"),
            ("limits", "memory", "256Mi"),
        ];
        for (key, kind, res) in RESOURCES {
            if let Some(v) = annotations.get(key) {
                if !is_quantity(v) {
                    return Err(InjectError {
                        annotation: key.into(),
                        message: format!("{v:?} is not a quantity; write e.g. 200m or 64Mi"),
                    });
                }
                set.retain(|(k, r, _)| !(*k == kind && *r == res));
                set.push((kind, res, v.as_str()));
            }
        }
        let mut q = quantities(&set);
        let resources = ResourceRequirements {
            requests: q.remove("requests"),
            limits: q.remove("limits"),
            ..Default::default()
        };
        Ok(Self {
            init_args: t.init_args(),
            config,
            resources,
            rewrite_probes: annotations.get(REWRITE_PROBES).is_none_or(|v| v != "false"),
            user_volumes: UserVolumes::read(annotations)?,
        })
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn strings(v: &[&str]) -> Option<Vec<String>> {
    Some(v.iter().map(ToString::to_string).collect())
}

fn init_container(plan: &Plan, s: &Settings) -> Container {
    let mut args = vec!["init".to_string(), format!("--proxy-uid={}", s.proxy_uid)];
    args.extend(plan.init_args.iter().cloned());
    Container {
        name: INIT.into(),
        image: Some(s.image.clone()),
        image_pull_policy: s.pull_policy.clone(),
        args: Some(args),
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_group: Some(0),
            run_as_non_root: Some(false),
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                add: strings(&["NET_ADMIN", "NET_RAW"]),
                drop: strings(&["ALL"]),
            }),
            ..Default::default()
        }),
        resources: Some(ResourceRequirements {
            requests: quantities(&[("requests", "cpu", "10m"), ("requests", "memory", "16Mi")])
                .remove("requests"),
            limits: quantities(&[("limits", "memory", "64Mi")]).remove("limits"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ready_probe(failure_threshold: Option<i32>) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/ready".into()),
            port: IntOrString::Int(HEALTH_PORT),
            ..Default::default()
        }),
        period_seconds: Some(if failure_threshold.is_some() { 1 } else { 2 }),
        failure_threshold,
        ..Default::default()
    }
}

fn proxy_container(
    workload: &str,
    plan: &Plan,
    probers: Option<String>,
    s: &Settings,
) -> Container {
    let mut env = vec![
        env("MESH_CONTROLLER", &s.controller),
        env("MESH_TRUST_DOMAIN", &s.trust_domain),
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("POD_IP", "status.podIP"),
        field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        env("MESH_WORKLOAD", workload),
        env("MESH_TOKEN_FILE", &format!("{TOKEN_DIR}/token")),
        env("MESH_TRUST_ANCHORS", &format!("{ANCHORS_DIR}/ca.crt")),
    ];
    if let Some(d) = &plan.config.drain {
        env.push(self::env("MESH_DRAIN_GRACE", d));
    }
    if let Some(p) = probers {
        env.push(self::env("MESH_APP_PROBERS", &p));
    }
    Container {
        name: PROXY.into(),
        image: Some(s.image.clone()),
        image_pull_policy: s.pull_policy.clone(),
        args: strings(&["run"]),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("mesh-health".into()),
            container_port: HEALTH_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        readiness_probe: Some(ready_probe(None)),
        resources: Some(plan.resources.clone()),
        security_context: Some(SecurityContext {
            run_as_user: Some(s.proxy_uid),
            run_as_group: Some(s.proxy_uid),
            run_as_non_root: Some(true),
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: strings(&["ALL"]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "mesh-token".into(),
                mount_path: TOKEN_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "mesh-anchors".into(),
                mount_path: ANCHORS_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
        ]),
        ..Default::default()
    }
}

fn volumes(s: &Settings) -> [Volume; 2] {
    let projected = |p: VolumeProjection| Volume {
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![p]),
            ..Default::default()
        }),
        ..Default::default()
    };
    [
        Volume {
            name: "mesh-token".into(),
            ..projected(VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(s.token_audience.clone()),
                    expiration_seconds: Some(TOKEN_SECONDS),
                    path: "token".into(),
                }),
                ..Default::default()
            })
        },
        Volume {
            name: "mesh-anchors".into(),
            ..projected(VolumeProjection {
                config_map: Some(ConfigMapProjection {
                    name: s.anchors_config_map.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
        },
    ]
}

/// Istio's canonical service labels, when the pod lacks them.
fn labels(meta: &mut ObjectMeta, workload: &str) {
    let labels = meta.labels.get_or_insert_with(Default::default);
    let name = crate::peer::canonical_service(labels, workload);
    let revision = crate::peer::canonical_revision(labels);
    labels
        .entry("service.istio.io/canonical-name".into())
        .or_insert(name);
    labels
        .entry("service.istio.io/canonical-revision".into())
        .or_insert(revision);
    labels
        .entry("security.istio.io/tlsMode".into())
        .or_insert_with(|| "istio".into());
}

/// Adds the sidecar to `meta`/`spec` as `plan` says.
pub fn add(meta: &mut ObjectMeta, spec: &mut PodSpec, workload: &str, plan: &Plan, s: &Settings) {
    let probers = if plan.rewrite_probes {
        probes::rewrite(&mut spec.containers)
    } else {
        None
    };
    let mut proxy = proxy_container(workload, plan, probers, s);
    let init = init_container(plan, s);
    let inits = spec.init_containers.get_or_insert_with(Vec::new);
    // The redirection first: every later container's traffic is meshed.
    inits.insert(0, init);
    let mut status_inits = vec![INIT];
    let mut status_containers = vec![];
    if s.native_sidecars {
        // Kubelet starts the app once the proxy's startup probe passes,
        // and ends the proxy after the app: Jobs complete.
        proxy.restart_policy = Some("Always".into());
        proxy.startup_probe = Some(ready_probe(Some(120)));
        inits.insert(1, proxy);
        status_inits.push(PROXY);
    } else {
        if plan.config.hold != Some(false) {
            // Kubelet starts containers in order and waits for a
            // postStart hook: the app starts once the proxy is ready.
            proxy.lifecycle = Some(Lifecycle {
                post_start: Some(LifecycleHandler {
                    exec: Some(ExecAction {
                        command: strings(&["mesh-proxy", "wait", "--timeout=120s"]),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        spec.containers.insert(0, proxy);
        status_containers.push(PROXY);
    }
    let pod_volumes = spec.volumes.get_or_insert_with(Vec::new);
    pod_volumes.extend(volumes(s));
    let proxy_mounts = spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
        .find(|c| c.name == PROXY)
        .and_then(|c| c.volume_mounts.as_mut());
    if let Some(mounts) = proxy_mounts {
        plan.user_volumes.add_to(pod_volumes, mounts);
    }
    labels(meta, workload);
    let status = serde_json::json!({
        "initContainers": status_inits,
        "containers": status_containers,
        "volumes": ["mesh-token", "mesh-anchors"],
    });
    let annotations = meta.annotations.get_or_insert_with(Default::default);
    annotations.insert(STATUS.into(), status.to_string());
    prometheus(annotations);
}

/// Istio's scrape annotations, pointing Prometheus at the proxy's metrics
/// (`/stats/prometheus` on the health port, as Istio's). A pod that
/// carries its own `prometheus.io/*` keeps them (Istio would merge the
/// app's metrics into the proxy's; this mesh does not, so the app's stay
/// scraped and the proxy's are not).
fn prometheus(annotations: &mut BTreeMap<String, String>) {
    if annotations.keys().any(|k| k.starts_with("prometheus.io/")) {
        return;
    }
    for (k, v) in [
        ("prometheus.io/scrape", "true".to_string()),
        ("prometheus.io/port", HEALTH_PORT.to_string()),
        ("prometheus.io/path", "/stats/prometheus".to_string()),
    ] {
        annotations.insert(k.into(), v);
    }
}
