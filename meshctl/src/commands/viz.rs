//! `meshctl stat` and `meshctl edges`, as Linkerd Viz's: read from every
//! meshed pod's proxy (`:15020/metrics`, inside the pod's network
//! namespace on the local runtime, through a port-forward on
//! Kubernetes) and computed by [`crate::viz`].

use std::net::SocketAddr;
use std::time::Duration;

use common::prom_text;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use crate::cli::{EdgesArgs, StatArgs, VizScope};
use crate::local::StateDir;
use crate::local::client::Client;
use crate::local::objects::PodStatus;
use crate::output::{print_data, table};
use crate::viz::{By, Scrape, promql};

/// The proxies' metrics port.
const METRICS_PORT: u16 = 15020;

fn by(resource: &str) -> anyhow::Result<By> {
    Ok(match resource {
        "deploy" | "deployment" | "deployments" => By::Deployment,
        "po" | "pod" | "pods" => By::Pod,
        other => anyhow::bail!("unknown resource {other:?}: use deploy or pod"),
    })
}

/// Where the pods are.
pub(crate) enum Source {
    Local(Vec<PodStatus>),
    Kubernetes(kube::Client, Vec<Pod>),
}

/// The workload of a Kubernetes pod: its ReplicaSet's Deployment, else
/// its owner, else itself.
fn k8s_workload(p: &Pod) -> String {
    let name = p.metadata.name.clone().unwrap_or_default();
    match p
        .metadata
        .owner_references
        .as_deref()
        .and_then(|o| o.first())
    {
        Some(o) if o.kind == "ReplicaSet" => o
            .name
            .rsplit_once('-')
            .map_or(o.name.clone(), |(d, _)| d.to_string()),
        Some(o) => o.name.clone(),
        None => name,
    }
}

pub(crate) async fn source(scope: &VizScope) -> anyhow::Result<Source> {
    let state = StateDir::resolve(scope.state.state_dir.clone());
    let in_scope = |ns: &str| scope.all_namespaces || ns == scope.namespace;
    Ok(match crate::k8s::target(&scope.kube, &state).await? {
        crate::k8s::Target::Local => {
            let pods: Vec<PodStatus> = Client::new(state).get("/pods").await?;
            Source::Local(
                pods.into_iter()
                    .filter(|p| p.meshed && p.ready && in_scope(&p.namespace))
                    .collect(),
            )
        }
        crate::k8s::Target::Kubernetes(client) => {
            let api: Api<Pod> = if scope.all_namespaces {
                Api::all(client.clone())
            } else {
                Api::namespaced(client.clone(), &scope.namespace)
            };
            let pods = api
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .filter(|p| {
                    crate::k8s::carries_proxy(p)
                        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                })
                .collect();
            Source::Kubernetes(client, pods)
        }
    })
}

/// One scrape of every pod; a pod that does not answer is left out.
pub(crate) async fn scrape(src: &Source) -> Vec<Scrape> {
    let mut out = Vec::new();
    match src {
        Source::Local(pods) => {
            let addr = SocketAddr::from(([127, 0, 0, 1], METRICS_PORT));
            for p in pods {
                let got = crate::local::netns::http_get(
                    &p.netns,
                    addr,
                    "/metrics",
                    Duration::from_secs(3),
                )
                .await;
                match got {
                    Ok(body) => out.push(Scrape {
                        namespace: p.namespace.clone(),
                        pod: p.name.clone(),
                        workload: p.deployment.clone(),
                        samples: prom_text::parse(&String::from_utf8_lossy(&body)),
                    }),
                    Err(e) => eprintln!("warning: {}/{}: {e}", p.namespace, p.name),
                }
            }
        }
        Source::Kubernetes(client, pods) => {
            for p in pods {
                let ns = p.metadata.namespace.clone().unwrap_or_default();
                let name = p.metadata.name.clone().unwrap_or_default();
                let got =
                    crate::k8s::forward::http_get(client, &ns, &name, METRICS_PORT, "/metrics")
                        .await;
                match got {
                    Ok(body) => out.push(Scrape {
                        workload: k8s_workload(p),
                        namespace: ns,
                        pod: name,
                        samples: prom_text::parse(&String::from_utf8_lossy(&body)),
                    }),
                    Err(e) => eprintln!("warning: {ns}/{name}: {e:#}"),
                }
            }
        }
    }
    out
}

impl Source {
    /// Only the pods of `target`: `deploy/NAME`, `pod/NAME` or a pod's
    /// name.
    pub(crate) fn select(self, target: &str) -> Self {
        let (deploy, pod) = match target.split_once('/') {
            Some(("deploy" | "deployment", d)) => (Some(d), None),
            Some(("po" | "pod", p)) => (None, Some(p)),
            _ => (None, Some(target)),
        };
        let keep = |workload: &str, name: &str| {
            deploy.is_none_or(|d| d == workload) && pod.is_none_or(|p| p == name)
        };
        match self {
            Self::Local(pods) => Self::Local(
                pods.into_iter()
                    .filter(|p| keep(&p.deployment, &p.name))
                    .collect(),
            ),
            Self::Kubernetes(c, pods) => {
                let pods = pods
                    .into_iter()
                    .filter(|p| {
                        keep(
                            &k8s_workload(p),
                            p.metadata.name.as_deref().unwrap_or_default(),
                        )
                    })
                    .collect();
                Self::Kubernetes(c, pods)
            }
        }
    }

    /// The pods, as `namespace/name`.
    pub(crate) fn names(&self) -> Vec<String> {
        match self {
            Self::Local(pods) => pods
                .iter()
                .map(|p| format!("{}/{}", p.namespace, p.name))
                .collect(),
            Self::Kubernetes(_, pods) => pods
                .iter()
                .map(|p| {
                    format!(
                        "{}/{}",
                        p.metadata.namespace.as_deref().unwrap_or_default(),
                        p.metadata.name.as_deref().unwrap_or_default()
                    )
                })
                .collect(),
        }
    }

    /// Streams the lines of `GET path` on the admin port of each pod into
    /// `tx`, as (pod, line), until each answer ends or `tx` closes.
    pub(crate) fn stream_admin(
        &self,
        path: &str,
        tx: &tokio::sync::mpsc::Sender<(String, String)>,
    ) {
        const ADMIN: u16 = 15000;
        match self {
            Self::Local(pods) => {
                for p in pods {
                    let (netns, name, path, tx) = (
                        p.netns.clone(),
                        p.name.clone(),
                        path.to_string(),
                        tx.clone(),
                    );
                    tokio::spawn(async move {
                        let addr = SocketAddr::from(([127, 0, 0, 1], ADMIN));
                        let r = match crate::local::netns::connect(
                            &netns,
                            addr,
                            Duration::from_secs(3),
                        )
                        .await
                        {
                            Ok(io) => stream_lines(io, &path, &name, &tx).await,
                            Err(e) => Err(e),
                        };
                        if let Err(e) = r {
                            eprintln!("warning: {name}: {e:#}");
                        }
                    });
                }
            }
            Self::Kubernetes(client, pods) => {
                for p in pods {
                    let ns = p.metadata.namespace.clone().unwrap_or_default();
                    let name = p.metadata.name.clone().unwrap_or_default();
                    let (client, path, tx) = (client.clone(), path.to_string(), tx.clone());
                    tokio::spawn(async move {
                        let r = match crate::k8s::forward::open(&client, &ns, &name, ADMIN).await {
                            Ok((io, _pf)) => stream_lines(io, &path, &name, &tx).await,
                            Err(e) => Err(e),
                        };
                        if let Err(e) = r {
                            eprintln!("warning: {ns}/{name}: {e:#}");
                        }
                    });
                }
            }
        }
    }
}

/// `GET path` over `io` (HTTP/1.0, the body until the server closes);
/// each body line goes to `tx` with `pod`.
async fn stream_lines<IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut io: IO,
    path: &str,
    pod: &str,
    tx: &tokio::sync::mpsc::Sender<(String, String)>,
) -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    io.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut lines = tokio::io::BufReader::new(io).lines();
    let status = lines.next_line().await?.unwrap_or_default();
    anyhow::ensure!(status.contains(" 200"), "the proxy answered {status:?}");
    while let Some(l) = lines.next_line().await? {
        if l.trim().is_empty() {
            break;
        }
    }
    while let Some(l) = lines.next_line().await? {
        if tx.send((pod.to_string(), l)).await.is_err() {
            break;
        }
    }
    Ok(())
}

fn percent(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2}%", v * 100.0))
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}ms"))
}

/// `meshctl stat deploy|pod`.
pub async fn stat(args: &StatArgs) -> anyhow::Result<i32> {
    if matches!(args.resource.as_str(), "route" | "routes" | "rt") {
        return stat_routes(args).await;
    }
    let by = by(&args.resource)?;
    let rows = match &args.scope.prometheus {
        Some(url) => {
            let ns = (!args.scope.all_namespaces).then_some(args.scope.namespace.as_str());
            let mut answers = Vec::new();
            for (figure, q) in promql::stat_queries(by, ns, &args.window) {
                answers.push((figure, prometheus(url, &q).await?));
            }
            promql::stat_rows(by, &answers)
        }
        None => {
            let (before, after, secs) = measure(args).await?;
            crate::viz::stat(&before, &after, secs, by)
        }
    };
    if print_data(args.scope.output, &rows)? {
        return Ok(0);
    }
    if rows.is_empty() {
        eprintln!("no meshed pods answered in the namespace");
        return Ok(0);
    }
    let name = match by {
        By::Deployment => "NAME",
        By::Pod => "POD",
    };
    let mut header = vec![name, "PODS", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95"];
    header.extend(["LATENCY_P99", "TCP_CONN", "MTLS"]);
    if args.scope.all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut c = vec![
                r.name.clone(),
                r.pods.to_string(),
                percent(r.success_rate),
                format!("{:.1}rps", r.rps),
                ms(r.latency_p50_ms),
                ms(r.latency_p95_ms),
                ms(r.latency_p99_ms),
                r.tcp_connections.to_string(),
                percent(r.mtls_share),
            ];
            if args.scope.all_namespaces {
                c.insert(0, r.namespace.clone());
            }
            c
        })
        .collect();
    table(&header, &cells);
    Ok(0)
}

/// The series Prometheus at `url` answers to the instant query `q`.
async fn prometheus(url: &str, q: &str) -> anyhow::Result<Vec<promql::Series>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("--prometheus {url}: give http://HOST:PORT"))?;
    let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let prefix = prefix.trim_end_matches('/');
    let query = serde_urlencoded::to_string([("query", q)])?;
    let path = if prefix.is_empty() {
        format!("/api/v1/query?{query}")
    } else {
        format!("/{prefix}/api/v1/query?{query}")
    };
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(authority).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").as_bytes())
            .await?;
        let mut all = Vec::new();
        s.read_to_end(&mut all).await?;
        anyhow::Ok(all)
    };
    let all = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| anyhow::anyhow!("--prometheus {url}: no answer within 30s"))?
        .map_err(|e| anyhow::anyhow!("--prometheus {url}: {e}"))?;
    let body = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| &all[i + 4..])
        .ok_or_else(|| anyhow::anyhow!("--prometheus {url}: not an HTTP answer"))?;
    let answer: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        anyhow::anyhow!("--prometheus {url}: {e}: {}", String::from_utf8_lossy(body))
    })?;
    promql::series(&answer).map_err(|e| anyhow::anyhow!("{q}: {e}"))
}

/// Two scrapes `--window` apart, and the seconds between them.
async fn measure(args: &StatArgs) -> anyhow::Result<(Vec<Scrape>, Vec<Scrape>, f64)> {
    let window = api::duration::parse(&args.window)
        .map_err(|e| anyhow::anyhow!("--window {}: {e}", args.window))?;
    anyhow::ensure!(
        window >= Duration::from_secs(1),
        "--window must be at least 1s"
    );
    let src = source(&args.scope).await?;
    let before = scrape(&src).await;
    let started = tokio::time::Instant::now();
    tokio::time::sleep(window).await;
    let after = scrape(&src).await;
    Ok((before, after, started.elapsed().as_secs_f64()))
}

/// `meshctl stat route`: the routes of the services the pods in scope
/// call.
async fn stat_routes(args: &StatArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        args.scope.prometheus.is_none(),
        "--prometheus: stat route reads the route metrics from the proxies; with a Prometheus, query mesh_route_requests_total there"
    );
    let (before, after, secs) = measure(args).await?;
    let rows = crate::viz::routes::routes(&before, &after, secs);
    if print_data(args.scope.output, &rows)? {
        return Ok(0);
    }
    if rows.is_empty() {
        eprintln!("no routed requests from meshed pods in the namespace");
        return Ok(0);
    }
    let header = ["SERVICE", "ROUTE", "SUCCESS", "RPS", "LATENCY_P50"];
    let header = [&header[..], &["LATENCY_P95", "LATENCY_P99"]].concat();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.service.clone(),
                r.route.clone(),
                percent(r.success_rate),
                format!("{:.1}rps", r.rps),
                ms(r.latency_p50_ms),
                ms(r.latency_p95_ms),
                ms(r.latency_p99_ms),
            ]
        })
        .collect();
    table(&header, &cells);
    Ok(0)
}

/// `meshctl edges deploy|pod`.
pub async fn edges(args: &EdgesArgs) -> anyhow::Result<i32> {
    let by = by(&args.resource)?;
    let rows = match &args.scope.prometheus {
        Some(url) => {
            anyhow::ensure!(
                by == By::Deployment,
                "with --prometheus, edges are by deploy (Istio's metrics name workloads, not pods)"
            );
            let ns = (!args.scope.all_namespaces).then_some(args.scope.namespace.as_str());
            promql::edge_rows(&prometheus(url, &promql::edges_query(ns)).await?)
        }
        None => {
            let src = source(&args.scope).await?;
            crate::viz::edges(&scrape(&src).await, by)
        }
    };
    if print_data(args.scope.output, &rows)? {
        return Ok(0);
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|e| {
            vec![
                e.src.clone(),
                e.dst.clone(),
                e.src_namespace.clone(),
                e.dst_namespace.clone(),
                e.client_id.clone(),
                e.server_id.clone(),
                if e.secured { "√" } else { "-" }.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "SRC",
            "DST",
            "SRC_NS",
            "DST_NS",
            "CLIENT_ID",
            "SERVER_ID",
            "SECURED",
        ],
        &cells,
    );
    Ok(0)
}
