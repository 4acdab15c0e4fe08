//! `meshctl explain --from deploy/A URL`: why a request from a pod goes
//! where it goes and is let in or refused, from the live configuration
//! the proxies hold. The client's proxy answers which route matches and
//! which destinations, subsets and endpoints it sends to
//! (`/explain/outbound`); each meshed endpoint's proxy answers which
//! PeerAuthentication mode applies, what becomes of the token and which
//! AuthorizationPolicy and rule decide (`/explain/inbound`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use api::explain::{Explanation, Inbound, Outbound, Query};

use crate::cli::ExplainArgs;
use crate::k8s::Target;
use crate::local::StateDir;

/// The proxy's admin address inside its pod.
const ADMIN: &str = "127.0.0.1:15000";

/// Explains at most this many endpoints' verdicts.
const SERVERS: usize = 8;

/// Where the proxies are.
enum Proxies {
    Local(StateDir),
    Kubernetes(kube::Client),
}

impl Proxies {
    /// `GET path` on the admin endpoint of pod `namespace/name`'s proxy
    /// (`deploy/NAME`: a ready pod of it); the pod's `namespace/name` and
    /// the answer.
    async fn get(&self, namespace: &str, name: &str, path: &str) -> anyhow::Result<Vec<u8>> {
        match self {
            Proxies::Local(state) => {
                let pod = super::exec::find_pod(state, namespace, name).await?;
                anyhow::ensure!(
                    pod.meshed && !pod.netns.is_empty(),
                    "pod {namespace}/{} has no proxy",
                    pod.name
                );
                let addr: SocketAddr = ADMIN.parse()?;
                crate::local::netns::http_get(&pod.netns, addr, path, Duration::from_secs(5))
                    .await
                    .map_err(|e| anyhow::anyhow!("the proxy of {} answered: {e}", pod.name))
            }
            Proxies::Kubernetes(client) => {
                let p = crate::k8s::find_pod(client, namespace, name).await?;
                let pod = p.metadata.name.clone().unwrap_or_default();
                anyhow::ensure!(
                    crate::k8s::carries_proxy(&p),
                    "pod {namespace}/{pod} has no proxy (not injected)"
                );
                crate::k8s::forward::http_get(client, namespace, &pod, 15000, path)
                    .await
                    .map_err(|e| anyhow::anyhow!("the proxy of {pod} answered: {e:#}"))
            }
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        namespace: &str,
        name: &str,
        path: &str,
    ) -> anyhow::Result<T> {
        let body = self.get(namespace, name, path).await?;
        serde_json::from_slice(&body)
            .map_err(|e| anyhow::anyhow!("{path} of {namespace}/{name}: not an explanation: {e}"))
    }
}

/// The URL the user gave, with `http://` when no scheme was.
fn url(given: &str) -> String {
    if given.contains("://") {
        given.to_string()
    } else {
        format!("http://{given}")
    }
}

/// Explains the request.
pub async fn explain(args: &ExplainArgs) -> anyhow::Result<i32> {
    let state = StateDir::resolve(args.state.state_dir.clone());
    let proxies = match crate::k8s::target(&args.kube, &state).await? {
        Target::Local => Proxies::Local(state),
        Target::Kubernetes(c) => Proxies::Kubernetes(c),
    };
    let ns = &args.namespace;
    let mut q = Query {
        method: args.method.to_ascii_uppercase(),
        url: url(&args.url),
        headers: args.headers.join("\n"),
        ..Query::default()
    };
    q.header_pairs().map_err(|e| anyhow::anyhow!("-H: {e}"))?;
    let path = format!("/explain/outbound?{}", serde_urlencoded::to_string(&q)?);
    let outbound: Outbound = proxies.json(ns, &args.from, &path).await?;
    let mut inbound = Vec::new();
    let mut seen = BTreeSet::new();
    let endpoints = outbound
        .route
        .iter()
        .flat_map(|r| &r.destinations)
        .flat_map(|d| &d.endpoints)
        .filter(|e| e.identity.is_some());
    for e in endpoints {
        if !seen.insert((e.pod.clone(), e.port)) || inbound.len() == SERVERS {
            continue;
        }
        let Some((pod_ns, pod)) = e.pod.split_once('/') else {
            continue;
        };
        q.port = Some(e.port);
        q.principal = Some(outbound.identity.clone());
        q.source = outbound.source_address;
        let path = format!("/explain/inbound?{}", serde_urlencoded::to_string(&q)?);
        match proxies.json::<Inbound>(pod_ns, pod, &path).await {
            Ok(i) => inbound.push(i),
            Err(err) => inbound.push(Inbound {
                pod: e.pod.clone(),
                port: e.port,
                connection: format!("unknown: {err:#}"),
                ..Inbound::default()
            }),
        }
    }
    let x = Explanation {
        from: format!("{ns}/{}", args.from),
        method: q.method,
        url: q.url,
        outbound,
        inbound,
    };
    if crate::output::print_data(args.output, &x)? {
        return Ok(0);
    }
    print(&x);
    Ok(0)
}

fn print(x: &Explanation) {
    let o = &x.outbound;
    println!("{} {} from {} ({})", x.method, x.url, x.from, o.identity);
    println!("  address: {}", o.address);
    match &o.target {
        Some(t) => println!("  target: {t}"),
        None => println!("  target: outside the mesh"),
    }
    if let Some(vs) = &o.virtual_service {
        println!("  virtual service: {vs}");
    }
    if let Some(r) = &o.route {
        println!("  route: #{} {} ({})", r.index, r.name, r.action);
        for d in &r.destinations {
            let subset = d
                .subset
                .as_deref()
                .map(|s| format!(" subset {s}"))
                .unwrap_or_default();
            println!(
                "    destination: {}:{}{subset} weight {}",
                d.host, d.port, d.weight
            );
            if let Some(e) = &d.error {
                println!("      {e}");
            }
            for e in &d.endpoints {
                let how = e
                    .identity
                    .as_deref()
                    .map_or("plaintext (no proxy)".to_string(), |i| {
                        format!("mTLS as {i}")
                    });
                println!("      endpoint: {} {}:{} {how}", e.pod, e.address, e.port);
            }
        }
    }
    if let Some(n) = &o.note {
        println!("  note: {n}");
    }
    for i in &x.inbound {
        println!("at {} port {}:", i.pod, i.port);
        if !i.mtls_mode.is_empty() {
            println!("  PeerAuthentication: {}", i.mtls_mode);
        }
        println!("  connection: {}", i.connection);
        if !i.authentication.is_empty() {
            println!("  RequestAuthentication: {}", i.authentication);
        }
        if !i.authorization.explanation.is_empty() {
            println!("  AuthorizationPolicy: {}", i.authorization.explanation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_without_scheme_is_http_and_the_query_round_trips() {
        assert_eq!(url("payments:8080/api"), "http://payments:8080/api");
        assert_eq!(url("https://x/"), "https://x/");
        let q = Query {
            method: "POST".into(),
            url: "http://payments.pay:8080/api/payments?x=1&y=2".into(),
            headers: "x-role: admin\nauthorization: Bearer a.b.c".into(),
            port: Some(8080),
            principal: Some("spiffe://cluster.local/ns/a/sa/b".into()),
            source: Some("10.0.0.1".parse().unwrap()),
        };
        let text = serde_urlencoded::to_string(&q).unwrap();
        let back: Query = serde_urlencoded::from_str(&text).unwrap();
        assert_eq!(back, q);
    }
}
