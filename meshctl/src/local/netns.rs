//! Network namespaces, veth pairs and processes inside them, through
//! iproute2. Every name carries the run's prefix so that a run only ever
//! touches what it made; nothing here changes the root namespace.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::ipam;

/// The prefix of every namespace of run `id`.
pub fn prefix(id: &str) -> String {
    format!("mesh-{id}-")
}

/// The node namespace of run `id`: holds the bridge and the controller.
pub fn node_ns(id: &str) -> String {
    format!("{}node", prefix(id))
}

/// The namespace of pod number `seq`.
pub fn pod_ns(id: &str, seq: u64) -> String {
    format!("{}p{seq}", prefix(id))
}

/// Runs `ip ARGS`, failing with its stderr.
pub async fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| anyhow::anyhow!("running ip: {e} (install iproute2)"))?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// The bridge's own MAC address (locally administered). A bridge without
/// one set takes the lowest MAC of its ports and changes it when that port
/// goes: every pod's ARP entry for the gateway (the controller's address)
/// then points nowhere for half a minute.
const BRIDGE_MAC: &str = "02:00:0a:f4:00:01";

/// Creates the node namespace with its bridge. No default route and no
/// link to the host: nothing leaves the node.
pub async fn create_node(node: &str) -> anyhow::Result<()> {
    ip(&["netns", "add", node]).await?;
    ip(&["-n", node, "link", "set", "lo", "up"]).await?;
    ip(&[
        "-n", node, "link", "add", "br0", "address", BRIDGE_MAC, "type", "bridge",
    ])
    .await?;
    let gw = format!("{}/{}", ipam::GATEWAY, ipam::POD_PREFIX);
    ip(&["-n", node, "addr", "add", &gw, "dev", "br0"]).await?;
    ip(&["-n", node, "link", "set", "br0", "up"]).await?;
    Ok(())
}

/// Creates a pod namespace wired to the node's bridge with `addr`.
pub async fn create_pod(node: &str, pod: &str, veth: &str, addr: Ipv4Addr) -> anyhow::Result<()> {
    ip(&["netns", "add", pod]).await?;
    ip(&[
        "-n", node, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", pod,
    ])
    .await?;
    ip(&["-n", node, "link", "set", veth, "master", "br0", "up"]).await?;
    let cidr = format!("{addr}/{}", ipam::POD_PREFIX);
    ip(&["-n", pod, "addr", "add", &cidr, "dev", "eth0"]).await?;
    ip(&["-n", pod, "link", "set", "lo", "up"]).await?;
    ip(&["-n", pod, "link", "set", "eth0", "up"]).await?;
    ip(&[
        "-n",
        pod,
        "route",
        "add",
        "default",
        "via",
        &ipam::GATEWAY.to_string(),
    ])
    .await?;
    Ok(())
}

/// Kills what runs in `ns`, deletes it and its `/etc/netns` files.
pub async fn delete(ns: &str) {
    kill_all_in(ns).await;
    let _ = ip(&["netns", "del", ns]).await;
    let _ = tokio::fs::remove_dir_all(format!("/etc/netns/{ns}")).await;
}

/// SIGKILL to every process in `ns`.
pub async fn kill_all_in(ns: &str) {
    let Ok(out) = Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .await
    else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Every namespace name (from `ip netns list`).
pub async fn list() -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output().await else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// A command that runs `argv` inside `ns`, as `uid` when given.
pub fn command(ns: &str, uid: Option<(u32, u32)>, argv: &[String]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]);
    if let Some((u, g)) = uid {
        c.args([
            "setpriv",
            &format!("--reuid={u}"),
            &format!("--regid={g}"),
            "--clear-groups",
            "--",
        ]);
    }
    c.args(argv);
    c
}

/// A readiness check run from inside a pod's namespace.
#[derive(Debug, Clone)]
pub enum Check {
    /// A TCP connect succeeds.
    Tcp(SocketAddr),
    /// `GET path` answers 200.
    HttpOk(SocketAddr, &'static str),
}

/// Runs `f` inside `ns`, on a thread of its own: entering a namespace
/// must never happen on a shared runtime thread.
async fn in_netns<T: Send + 'static>(
    ns: &str,
    name: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let path = format!("/run/netns/{ns}");
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let result = (|| {
                let file = std::fs::File::open(&path)?;
                nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)?;
                f()
            })();
            let _ = tx.send(result);
        })?;
    rx.await?
}

/// Runs `checks` inside `ns`; a check that cannot run fails.
pub async fn probe(ns: &str, checks: Vec<Check>) -> Vec<bool> {
    let n = checks.len();
    in_netns(ns, "probe", move || {
        Ok(checks.iter().map(run_check).collect::<Vec<_>>())
    })
    .await
    .unwrap_or_else(|_| vec![false; n])
}

fn run_check(c: &Check) -> bool {
    let timeout = Duration::from_millis(500);
    match c {
        Check::Tcp(a) => TcpStream::connect_timeout(a, timeout).is_ok(),
        Check::HttpOk(a, path) => (|| {
            let mut s = TcpStream::connect_timeout(a, timeout).ok()?;
            s.set_read_timeout(Some(timeout)).ok()?;
            s.write_all(format!("GET {path} HTTP/1.0\r\nHost: probe\r\n\r\n").as_bytes())
                .ok()?;
            let mut buf = [0u8; 12];
            s.read_exact(&mut buf).ok()?;
            Some(buf.ends_with(b" 200"))
        })()
        .unwrap_or(false),
    }
}

/// A TCP connection to `addr`, made inside `ns` (a socket keeps the
/// namespace it was made in; it is used from here).
pub async fn connect(
    ns: &str,
    addr: SocketAddr,
    timeout: Duration,
) -> anyhow::Result<tokio::net::TcpStream> {
    let s = in_netns(ns, "netns-connect", move || {
        let s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_nonblocking(true)?;
        Ok(s)
    })
    .await?;
    Ok(tokio::net::TcpStream::from_std(s)?)
}

/// The body of `GET path` from `addr` inside `ns`, bounded by `timeout`.
pub async fn http_get(
    ns: &str,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<u8>> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let all = in_netns(ns, "netns-get", move || {
        let mut s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(request.as_bytes())?;
        let mut all = Vec::new();
        s.read_to_end(&mut all)?;
        Ok(all)
    })
    .await?;
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP response from {addr}{path}"))?;
    let status = String::from_utf8_lossy(&all[..all.len().min(12)]).to_string();
    anyhow::ensure!(
        status.ends_with(" 200"),
        "{addr}{path}: {status}: {}",
        String::from_utf8_lossy(&all[split + 4..]).trim()
    );
    Ok(all[split + 4..].to_vec())
}
