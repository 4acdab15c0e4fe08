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

/// Prints the configuration of a pod's proxy.
pub async fn proxy_config(args: &ProxyConfigArgs) -> anyhow::Result<i32> {
    let state = StateDir::resolve(args.state.state_dir.clone());
    let pod = find_pod(&state, &args.namespace, &args.pod).await?;
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
    let body =
        crate::local::netns::http_get(&pod.netns, addr, "/config_dump", Duration::from_secs(3))
            .await
            .map_err(|e| anyhow::anyhow!("the proxy of {} is not answering: {e}", pod.name))?;
    let dump: ConfigDump = serde_json::from_slice(&body)
        .map_err(|e| anyhow::anyhow!("the proxy's /config_dump is not a config dump: {e}"))?;
    if print_data(args.output, &dump)? {
        return Ok(0);
    }
    print(&dump);
    Ok(0)
}

fn print(d: &ConfigDump) {
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
    let mut routes = Vec::new();
    let mut clusters = Vec::new();
    for (addr, t) in &d.targets {
        let Target::Known(k) = t else {
            continue;
        };
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
                ];
                if !clusters.contains(&row) {
                    clusters.push(row);
                }
            }
        }
    }
    println!("\nROUTES");
    table(
        &[
            "ADDRESS", "SERVICE", "ROUTE", "MATCHES", "ACTION", "TIMEOUT", "RETRIES",
        ],
        &routes,
    );
    println!("\nCLUSTERS");
    table(
        &[
            "HOST",
            "SUBSET",
            "PORT",
            "BALANCER",
            "ENDPOINTS",
            "OUTLIER DETECTION",
        ],
        &clusters,
    );
    let endpoints: Vec<Vec<String>> = d
        .endpoints
        .iter()
        .flat_map(|(host, eps)| {
            eps.iter().map(move |e| {
                vec![
                    host.clone(),
                    e.address.to_string(),
                    e.pod.clone(),
                    format!("{:?}", e.circuit).to_uppercase(),
                    e.ejections.to_string(),
                ]
            })
        })
        .collect();
    println!("\nENDPOINTS");
    table(
        &["HOST", "ADDRESS", "POD", "CIRCUIT", "EJECTIONS"],
        &endpoints,
    );
}
