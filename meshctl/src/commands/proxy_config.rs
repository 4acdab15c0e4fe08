//! `meshctl proxy-config POD`: what one proxy holds, read from its admin
//! endpoint (`/config_dump`, inside the pod's network namespace): the
//! routes and backends it compiled, the endpoints with their circuits,
//! its certificate and config version (like `istioctl proxy-config`).

use std::net::SocketAddr;
use std::time::Duration;

use api::config_dump::{ConfigDump, Target};

use super::exec::find_pod;
use crate::cli::ProxyConfigArgs;
use crate::local::StateDir;
use crate::output::{age, print_data, table};

/// The proxy's admin address inside its pod.
const ADMIN: &str = "127.0.0.1:15000";

/// What part of the dump to show (istioctl's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Section {
    Listeners,
    Routes,
    Clusters,
    Endpoints,
    Secrets,
    All,
}

impl std::str::FromStr for Section {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "listeners" | "listener" | "l" => Self::Listeners,
            "routes" | "route" | "r" => Self::Routes,
            "clusters" | "cluster" | "c" => Self::Clusters,
            "endpoints" | "endpoint" | "ep" => Self::Endpoints,
            "secrets" | "secret" | "s" => Self::Secrets,
            "all" => Self::All,
            _ => anyhow::bail!(
                "unknown section {s:?}: use listeners, routes, clusters, endpoints, secrets or all"
            ),
        })
    }
}

/// Prints the configuration of a pod's proxy.
pub async fn proxy_config(args: &ProxyConfigArgs) -> anyhow::Result<i32> {
    let (section, pod) = match args.targets.as_slice() {
        [pod] => (Section::All, pod),
        [section, pod] => (section.parse()?, pod),
        _ => anyhow::bail!("give [SECTION] POD"),
    };
    let state = StateDir::resolve(args.state.state_dir.clone());
    let body = match crate::k8s::target(&args.kube, &state).await? {
        crate::k8s::Target::Local => local_dump(&state, &args.namespace, pod).await?,
        crate::k8s::Target::Kubernetes(client) => {
            let p = crate::k8s::find_pod(&client, &args.namespace, pod).await?;
            let name = p.metadata.name.clone().unwrap_or_default();
            let meshed = crate::k8s::carries_proxy(&p);
            anyhow::ensure!(
                meshed,
                "pod {}/{name} has no proxy (not injected)",
                args.namespace
            );
            crate::k8s::forward::http_get(&client, &args.namespace, &name, 15000, "/config_dump")
                .await
                .map_err(|e| anyhow::anyhow!("the proxy of {name} is not answering: {e:#}"))?
        }
    };
    let dump: ConfigDump = serde_json::from_slice(&body)
        .map_err(|e| anyhow::anyhow!("the proxy's /config_dump is not a config dump: {e}"))?;
    let tables = Tables::of(&dump);
    let data = match section {
        Section::All => serde_json::to_value(&dump)?,
        Section::Listeners => tables.json(&tables.listeners, LISTENERS),
        Section::Routes => tables.json(&tables.routes, ROUTES),
        Section::Clusters => tables.json(&tables.clusters, CLUSTERS),
        Section::Endpoints => tables.json(&tables.endpoints, ENDPOINTS),
        Section::Secrets => tables.json(&tables.secrets, SECRETS),
    };
    if print_data(args.output, &data)? {
        return Ok(0);
    }
    match section {
        Section::All => {
            summary(&dump);
            for (title, head, rows) in [
                ("LISTENERS", LISTENERS, &tables.listeners),
                ("ROUTES", ROUTES, &tables.routes),
                ("CLUSTERS", CLUSTERS, &tables.clusters),
                ("ENDPOINTS", ENDPOINTS, &tables.endpoints),
            ] {
                println!("\n{title}");
                table(head, rows);
            }
        }
        Section::Listeners => table(LISTENERS, &tables.listeners),
        Section::Routes => table(ROUTES, &tables.routes),
        Section::Clusters => table(CLUSTERS, &tables.clusters),
        Section::Endpoints => table(ENDPOINTS, &tables.endpoints),
        Section::Secrets => table(SECRETS, &tables.secrets),
    }
    Ok(0)
}

/// The dump of a local runtime pod's proxy, read inside its namespace.
async fn local_dump(state: &StateDir, namespace: &str, name: &str) -> anyhow::Result<Vec<u8>> {
    let pod = find_pod(state, namespace, name).await?;
    anyhow::ensure!(
        pod.meshed,
        "pod {}/{} has no proxy (not meshed)",
        pod.namespace,
        pod.name
    );
    anyhow::ensure!(
        !pod.netns.is_empty(),
        "pod {} has no network namespace yet",
        pod.name
    );
    let addr: SocketAddr = ADMIN.parse()?;
    crate::local::netns::http_get(&pod.netns, addr, "/config_dump", Duration::from_secs(3))
        .await
        .map_err(|e| anyhow::anyhow!("the proxy of {} is not answering: {e}", pod.name))
}

const LISTENERS: &[&str] = &["ADDRESS", "KIND", "NAME", "VERSION", "VIRTUAL SERVICE"];
const ROUTES: &[&str] = &[
    "ADDRESS", "SERVICE", "ROUTE", "MATCHES", "ACTION", "TIMEOUT", "RETRIES",
];
const CLUSTERS: &[&str] = &[
    "HOST",
    "SUBSET",
    "PORT",
    "BALANCER",
    "ENDPOINTS",
    "OUTLIER DETECTION",
    "TLS",
];
const ENDPOINTS: &[&str] = &["HOST", "ADDRESS", "POD", "IDENTITY", "CIRCUIT", "EJECTIONS"];
const SECRETS: &[&str] = &[
    "IDENTITY",
    "SERIAL",
    "NOT BEFORE",
    "EXPIRES IN",
    "TRUST ANCHORS",
];

/// Every section as table rows.
struct Tables {
    listeners: Vec<Vec<String>>,
    routes: Vec<Vec<String>>,
    clusters: Vec<Vec<String>>,
    endpoints: Vec<Vec<String>>,
    secrets: Vec<Vec<String>>,
}

impl Tables {
    /// A section's rows as JSON objects keyed by the column names.
    fn json(&self, rows: &[Vec<String>], head: &[&str]) -> serde_json::Value {
        rows.iter()
            .map(|r| {
                head.iter()
                    .map(|h| h.to_ascii_lowercase().replace(' ', "_"))
                    .zip(r.iter().cloned().map(serde_json::Value::String))
                    .collect::<serde_json::Map<String, serde_json::Value>>()
            })
            .map(serde_json::Value::Object)
            .collect()
    }
}

fn summary(d: &ConfigDump) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    println!("PROXY       {} ({})", d.identity, d.workload);
    match &d.certificate {
        Some(c) => println!(
            "CERTIFICATE serial {}, expires in {}",
            c.serial,
            age(c.not_after_unix.saturating_sub(now))
        ),
        None => println!("CERTIFICATE none yet"),
    }
    println!(
        "CONTROLLER  {} ({}), config version {}",
        d.controller.address,
        if d.controller.connected {
            "connected"
        } else {
            "not connected"
        },
        if d.version.is_empty() {
            "-"
        } else {
            &d.version
        }
    );
}

impl Tables {
    fn of(d: &ConfigDump) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut listeners = Vec::new();
        let mut routes = Vec::new();
        let mut clusters = Vec::new();
        for (addr, t) in &d.targets {
            let Target::Known(k) = t else {
                continue;
            };
            listeners.push(vec![
                addr.clone(),
                k.kind.clone(),
                k.name.clone(),
                k.version.clone(),
                k.virtual_service.clone().unwrap_or_else(|| "-".into()),
            ]);
            for r in &k.routes {
                routes.push(vec![
                    addr.clone(),
                    k.name.clone(),
                    r.name.clone(),
                    r.matches.to_string(),
                    r.action.clone(),
                    r.timeout_ms.map_or("-".into(), |t| format!("{t}ms")),
                    r.retries.to_string(),
                ]);
            }
            for b in &k.backends {
                for s in &b.subsets {
                    let row = vec![
                        b.host.clone(),
                        if s.name.is_empty() {
                            "-".into()
                        } else {
                            s.name.clone()
                        },
                        if s.port == 0 {
                            "-".into()
                        } else {
                            s.port.to_string()
                        },
                        s.balancer.clone(),
                        s.members.len().to_string(),
                        if s.outlier_detection { "yes" } else { "no" }.into(),
                        if s.tls.is_empty() {
                            "-".into()
                        } else {
                            s.tls.clone()
                        },
                    ];
                    if !clusters.contains(&row) {
                        clusters.push(row);
                    }
                }
            }
        }
        let endpoints: Vec<Vec<String>> = d
            .endpoints
            .iter()
            .flat_map(|(host, eps)| {
                eps.iter().map(move |e| {
                    vec![
                        host.clone(),
                        e.address.to_string(),
                        e.pod.clone(),
                        if e.identity.is_empty() {
                            "-".to_string()
                        } else {
                            e.identity.clone()
                        },
                        format!("{:?}", e.circuit).to_uppercase(),
                        e.ejections.to_string(),
                    ]
                })
            })
            .collect();
        let secrets = d
            .certificate
            .iter()
            .map(|c| {
                vec![
                    c.identity.clone(),
                    c.serial.clone(),
                    c.not_before_unix.to_string(),
                    age(c.not_after_unix.saturating_sub(now)),
                    d.trust_anchors.to_string(),
                ]
            })
            .collect();
        Self {
            listeners,
            routes,
            clusters,
            endpoints,
            secrets,
        }
    }
}
