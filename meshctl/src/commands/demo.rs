//! `meshctl demo`: the local runtime with a small shop (frontend -> orders
//! v1/v2 -> payments), traffic sent through it, and what to try next.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::cli::UpArgs;
use crate::local::StateDir;
use crate::local::client::Client;
use crate::local::objects::PodStatus;

const SHOP: &str = include_str!("../../../examples/shop.yaml");

/// How a user runs this meshctl with this state, to paste as is:
/// `meshctl` when the one on the PATH is this binary, else its path; and
/// ` --state-dir DIR` only when it is not the default one.
fn hint_command(state: &StateDir) -> (String, String) {
    let me = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok());
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("meshctl"))
            .find(|p| p.is_file())
            .and_then(|p| p.canonicalize().ok())
    });
    let cmd = match &me {
        Some(me) if on_path.as_ref() == Some(me) => "meshctl".to_string(),
        Some(me) => me.display().to_string(),
        None => "meshctl".to_string(),
    };
    let sd = if state.0 == StateDir::resolve(None).0 {
        String::new()
    } else {
        format!(" --state-dir {}", state.0.display())
    };
    (cmd, sd)
}

/// Starts the demo and returns once traffic has flowed.
pub async fn demo(state: &StateDir, requests: u32) -> anyhow::Result<i32> {
    let up = UpArgs {
        cert_lifetime: "24h".into(),
        jwks_refresh_interval: "20m".into(),
        root_cert: None,
        root_key: None,
    };
    super::local::up(state, &up).await?;
    eprintln!("applying the shop application (examples/shop.yaml)");
    anyhow::ensure!(
        super::apply::apply_text(state, "examples/shop.yaml", SHOP).await? == 0,
        "the demo manifest was rejected"
    );
    let client = Client::new(state.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let pods = loop {
        let pods: Vec<PodStatus> = client.get("/pods").await?;
        let shop: Vec<PodStatus> = pods.into_iter().filter(|p| p.namespace == "shop").collect();
        if shop.len() >= 5 && shop.iter().all(|p| p.ready) {
            break shop;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "demo pods not ready after 120s; see `meshctl local get pods -n shop` and `meshctl local logs`"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let client_pod = pods
        .iter()
        .find(|p| p.deployment == "client")
        .ok_or_else(|| anyhow::anyhow!("no client pod"))?;
    eprintln!(
        "sending {requests} requests: client -> frontend -> orders -> payments, all over mTLS"
    );
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..requests {
        let out = tokio::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &client_pod.netns,
                "curl",
                "-s",
                "--max-time",
                "5",
                "http://frontend:8080/",
            ])
            .output()
            .await?;
        let body = if out.status.success() {
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        } else {
            format!("curl failed ({})", out.status)
        };
        *seen.entry(body).or_default() += 1;
    }
    println!("\nresponses:");
    for (body, n) in &seen {
        println!("  {n:>4}  {body}");
    }
    let (m, sd) = hint_command(state);
    let (local, status) = (format!("{m} local{sd}"), format!("{m} proxy-status{sd}"));
    println!(
        "\nThe demo is running. Try:
  {local} get pods -n shop
  {local} get services -n shop
  {status}      # every proxy's config sync with the controller
  {local} exec deploy/client -n shop -- curl -s http://frontend:8080/
  {local} exec deploy/frontend -n shop -- curl -s 127.0.0.1:15000/config_dump
  {local} exec deploy/frontend -n shop -- curl -s 127.0.0.1:15020/metrics
  {local} logs deploy/orders-v1 -n shop -c proxy
  {local} apply -f examples/canary.yaml   # 90/10 canary, x-canary: true to v2
  {local} exec deploy/client -n shop -- curl -s -H 'x-canary: true' http://orders:8080/
  {local} down        # removes every namespace, interface and process"
    );
    let failed = seen
        .keys()
        .filter(|k| k.contains("error") || k.contains("failed"))
        .count();
    Ok(if failed > 0 { 1 } else { 0 })
}
