//! `cargo xtask bench`: the data plane's cost, measured on the local
//! runtime in one run: a client pod loads a server pod at a fixed rate
//! directly (no sidecars) and through the mesh (two proxies, mTLS), in
//! interleaved rounds; then closed loop for the highest rate. Reports
//! added latency (mesh minus direct, same round), each proxy's RSS and CPU
//! seconds per 10k requests; raw numbers go to a JSON file.
//!
//! A report, never a test. Traffic stays inside the run's namespaces; every
//! load is bounded in time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

/// `bench` flags.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Interleaved rounds (direct, mesh) at the fixed rate.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Requests per second.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Connections.
    #[arg(long, default_value_t = 16)]
    connections: u64,
    /// Measured seconds per round.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Response body size.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Where to write the raw numbers (default target/bench/bench-<time>.json).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run_ok(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

struct Runtime {
    meshctl: PathBuf,
    state: String,
}

impl Runtime {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.meshctl);
        c.arg("local")
            .arg(format!("--state-dir={}", self.state))
            .args(args)
            // As Istio's default profile: no access log in the measurement.
            .env("MESH_ACCESS_LOG", "off");
        c
    }

    fn json(&self, what: &str) -> anyhow::Result<Vec<Value>> {
        Ok(serde_json::from_str(&run_ok(
            &mut self.cmd(&["get", what, "-o", "json"]),
        )?)?)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self.cmd(&["down"]).output();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

fn manifest(xtask: &Path, size: usize) -> String {
    let xtask = xtask.display();
    let deploy = |name: &str, meshed: bool, cmd: &str| {
        let ann = if meshed {
            ""
        } else {
            "\n      annotations: {sidecar.istio.io/inject: \"false\"}"
        };
        format!(
            "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: bench}}\nspec:\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}{ann}\n    spec:\n      containers:\n      - name: main\n        command: {cmd}\n"
        )
    };
    let server = format!("[\"{xtask}\", \"serve\", \"--port\", \"8080\", \"--size\", \"{size}\"]");
    let server_ports = "        ports: [{containerPort: 8080}]\n";
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: bench}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: server, namespace: bench}}\nspec:\n  selector: {{app: server}}\n  ports: [{{name: http, port: 8080, targetPort: 8080}}]\n{}{}{}{}",
        deploy("server", true, &server) + server_ports,
        deploy("server-direct", false, &server) + server_ports,
        deploy("client", true, "[sleep, infinity]"),
        deploy("client-direct", false, "[sleep, infinity]"),
    )
}

/// utime + stime in seconds, and VmRSS in KiB, of a process.
fn proc_usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    // USER_HZ is 100 on Linux.
    (ticks as f64 / 100.0, rss)
}

fn proxy_pid(pod: &str) -> anyhow::Result<u32> {
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.contains("mesh-proxy")
            && cmd.contains(&format!("--pod={pod}"))
            && cmd.contains("run")
        {
            return Ok(pid);
        }
    }
    anyhow::bail!("no proxy process for pod {pod}")
}

fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn steal_ticks() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().next()?.split_whitespace().nth(8)?.parse().ok())
        .unwrap_or(0)
}

#[derive(Serialize, Clone)]
struct Sample {
    round: u32,
    topology: &'static str,
    load: Value,
    /// CPU seconds of (client proxy, server proxy) during the round.
    proxy_cpu_s: Option<(f64, f64)>,
    /// RSS KiB of (client proxy, server proxy) after the round.
    proxy_rss_kib: Option<(u64, u64)>,
    loadavg: f64,
    steal_ticks: u64,
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

pub fn run(a: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        run_ok(Command::new("id").arg("-u"))?.trim() == "0",
        "the benchmark runs on the local runtime: run as root"
    );
    eprintln!("building release binaries");
    run_ok(Command::new("cargo").current_dir(root()).args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "meshctl",
        "-p",
        "mesh-proxy",
        "-p",
        "mesh-controller",
    ]))?;
    let xtask = std::env::current_exe()?;
    let bin = xtask.parent().map(Path::to_path_buf).unwrap_or_default();
    let rt = Runtime {
        meshctl: bin.join("meshctl"),
        state: format!("/tmp/mesh-bench-{}", std::process::id()),
    };
    let _ = std::fs::remove_dir_all(&rt.state);
    run_ok(&mut rt.cmd(&["up"]))?;
    let mut apply = rt.cmd(&["apply", "-f", "-"]);
    apply
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null());
    let mut child = apply.spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        std::io::Write::write_all(&mut stdin, manifest(&xtask, a.size).as_bytes())?;
    }
    anyhow::ensure!(child.wait()?.success(), "bench manifest rejected");

    eprintln!("waiting for the bench pods");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let pods = loop {
        let pods = rt.json("pods")?;
        if pods.len() == 4 && pods.iter().all(|p| p["ready"] == true) {
            break pods;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "bench pods not ready: {pods:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let pod = |d: &str| {
        pods.iter()
            .find(|p| p["deployment"] == d)
            .cloned()
            .unwrap_or_default()
    };
    let svc_ip = rt
        .json("services")?
        .first()
        .map(|s| s["cluster_ip"].as_str().unwrap_or("").to_string())
        .unwrap_or_default();
    let direct_target = format!("{}:8080", pod("server-direct")["ip"].as_str().unwrap_or(""));
    let mesh_target = format!("{svc_ip}:8080");
    let str_of = |v: &Value| v.as_str().unwrap_or("").to_string();
    let (client_ns, direct_ns) = (
        str_of(&pod("client")["netns"]),
        str_of(&pod("client-direct")["netns"]),
    );
    let client_proxy = proxy_pid(&str_of(&pod("client")["name"]))?;
    let server_proxy = proxy_pid(&str_of(&pod("server")["name"]))?;
    let idle = (proc_usage(client_proxy).1, proc_usage(server_proxy).1);

    let load =
        |ns: &str, target: &str, rate: u64, conns: u64, duration: u64| -> anyhow::Result<Value> {
            let out = run_ok(
                Command::new("ip")
                    .args(["netns", "exec", ns])
                    .arg(&xtask)
                    .args([
                        "loadgen",
                        "--target",
                        target,
                        "--rate",
                        &rate.to_string(),
                        "--connections",
                        &conns.to_string(),
                        "--duration",
                        &duration.to_string(),
                    ]),
            )?;
            Ok(serde_json::from_str(out.trim())?)
        };
    let mut samples = Vec::new();
    for round in 1..=a.rounds {
        for (topology, ns, target) in [
            ("direct", &direct_ns, &direct_target),
            ("mesh", &client_ns, &mesh_target),
        ] {
            let (c0, s0) = (proc_usage(client_proxy).0, proc_usage(server_proxy).0);
            let (la, st) = (loadavg(), steal_ticks());
            let result = load(ns, target, a.rate, a.connections, a.duration)?;
            let (c1, s1) = (proc_usage(client_proxy), proc_usage(server_proxy));
            let mesh = topology == "mesh";
            eprintln!("round {round} {topology}: {result}");
            samples.push(Sample {
                round,
                topology,
                load: result,
                proxy_cpu_s: mesh.then_some((c1.0 - c0, s1.0 - s0)),
                proxy_rss_kib: mesh.then_some((c1.1, s1.1)),
                loadavg: la,
                steal_ticks: steal_ticks() - st,
            });
        }
    }
    eprintln!("closed loop, 64 connections");
    let max_direct = load(&direct_ns, &direct_target, 0, 64, 5)?;
    let max_mesh = load(&client_ns, &mesh_target, 0, 64, 5)?;

    let get = |s: &Sample, k: &str| s.load[k].as_f64().unwrap_or(0.0);
    let pairs: Vec<(&Sample, &Sample)> = samples
        .chunks(2)
        .filter_map(|c| Some((c.first()?, c.get(1)?)))
        .collect();
    let added = |k: &str| {
        median(
            pairs
                .iter()
                .map(|(d, m)| (get(m, k) - get(d, k)) / 1000.0)
                .collect(),
        )
    };
    let (p50, p99, p999) = (added("p50_us"), added("p99_us"), added("p999_us"));
    let per10k = |i: usize| {
        median(
            pairs
                .iter()
                .filter_map(|(_, m)| {
                    let cpu = m.proxy_cpu_s?;
                    let n = get(m, "ok").max(1.0);
                    Some(if i == 0 { cpu.0 } else { cpu.1 } / n * 10_000.0)
                })
                .collect(),
        )
    };
    let (cpu_client, cpu_server) = (per10k(0), per10k(1));
    let rss_load = samples
        .iter()
        .filter_map(|s| s.proxy_rss_kib)
        .next_back()
        .unwrap_or_default();
    let errors: f64 = samples.iter().map(|s| get(s, "errors")).sum();

    println!(
        "\nmesh benchmark: {} rps, {} connections, {} B responses, {} rounds of {} s",
        a.rate, a.connections, a.size, a.rounds, a.duration
    );
    println!("{:<34} {:>10} {:>10} {:>10}", "", "median", "min", "max");
    for (name, (m, lo, hi)) in [
        ("added latency p50 (ms)", p50),
        ("added latency p99 (ms)", p99),
        ("added latency p99.9 (ms)", p999),
    ] {
        println!("{name:<34} {m:>10.3} {lo:>10.3} {hi:>10.3}");
    }
    for (name, (m, lo, hi)) in [
        ("client proxy CPU s / 10k req", cpu_client),
        ("server proxy CPU s / 10k req", cpu_server),
    ] {
        println!("{name:<34} {m:>10.4} {lo:>10.4} {hi:>10.4}");
    }
    println!(
        "proxy RSS idle (KiB)               client {} server {}",
        idle.0, idle.1
    );
    println!(
        "proxy RSS under load (KiB)         client {} server {}",
        rss_load.0, rss_load.1
    );
    println!(
        "highest rate, closed loop (rps)    direct {:.0} mesh {:.0}",
        max_direct["rps"].as_f64().unwrap_or(0.0),
        max_mesh["rps"].as_f64().unwrap_or(0.0)
    );
    println!("failed requests                    {errors}");
    let noisy: Vec<u32> = samples
        .iter()
        .filter(|s| s.steal_ticks > 50 || s.loadavg > 2.0)
        .map(|s| s.round)
        .collect();
    if !noisy.is_empty() {
        println!("noisy rounds (load average > 2 or CPU steal): {noisy:?}");
    }

    let out = a.out.clone().unwrap_or_else(|| {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        root().join("target/bench").join(format!("bench-{t}.json"))
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let report = serde_json::json!({
        "args": {"rate": a.rate, "connections": a.connections, "duration_s": a.duration, "size": a.size, "rounds": a.rounds},
        "samples": samples,
        "closed_loop": {"direct": max_direct, "mesh": max_mesh},
        "proxy_rss_idle_kib": {"client": idle.0, "server": idle.1},
        "added_ms": {"p50": p50, "p99": p99, "p999": p999},
        "cpu_s_per_10k": {"client": cpu_client, "server": cpu_server},
    });
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    println!("raw numbers: {}", out.display());
    Ok(())
}
