//! `meshctl local get pods|services`.

use crate::cli::{GetArgs, Resource};
use crate::local::StateDir;
use crate::local::client::Client;
use crate::local::objects::{PodStatus, ServiceStatus};
use crate::output::{age, print_data, table};

/// Lists pods or services.
pub async fn get(state: &StateDir, args: &GetArgs) -> anyhow::Result<i32> {
    let client = Client::new(state.clone());
    let all = args.all_namespaces;
    let in_ns = |ns: &str| all || args.namespace == ns;
    // As kubectl: the NAMESPACE column only across namespaces.
    let table = |head: &[&str], rows: &[Vec<String>]| {
        if all {
            table(head, rows);
        } else {
            let rows: Vec<Vec<String>> = rows.iter().map(|r| r[1..].to_vec()).collect();
            table(&head[1..], &rows);
        }
    };
    match args.resource {
        Resource::Pods => {
            let mut pods: Vec<PodStatus> = client.get("/pods").await?;
            pods.retain(|p| in_ns(&p.namespace));
            pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
            if print_data(args.output, &pods)? {
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = pods
                .iter()
                .map(|p| {
                    vec![
                        p.namespace.clone(),
                        p.name.clone(),
                        if p.ready { "1/1" } else { "0/1" }.into(),
                        format!("{:?}", p.phase),
                        p.restarts.to_string(),
                        p.ip.map(|i| i.to_string())
                            .unwrap_or_else(|| "<none>".into()),
                        if p.meshed { "yes" } else { "no" }.into(),
                        age(p.age_secs),
                    ]
                })
                .collect();
            table(
                &[
                    "NAMESPACE",
                    "NAME",
                    "READY",
                    "STATUS",
                    "RESTARTS",
                    "IP",
                    "MESHED",
                    "AGE",
                ],
                &rows,
            );
        }
        Resource::Services => {
            let mut svcs: Vec<ServiceStatus> = client.get("/services").await?;
            svcs.retain(|s| in_ns(&s.namespace));
            svcs.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
            if print_data(args.output, &svcs)? {
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = svcs
                .iter()
                .map(|s| {
                    vec![
                        s.namespace.clone(),
                        s.name.clone(),
                        s.cluster_ip.to_string(),
                        s.ports.join(","),
                        if s.endpoints.is_empty() {
                            "<none>".into()
                        } else {
                            s.endpoints.join(",")
                        },
                    ]
                })
                .collect();
            table(
                &["NAMESPACE", "NAME", "CLUSTER-IP", "PORTS", "ENDPOINTS"],
                &rows,
            );
        }
    }
    Ok(0)
}
