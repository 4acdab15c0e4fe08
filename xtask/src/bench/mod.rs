//! `cargo xtask bench`: the data plane's cost, measured on the local
//! runtime in one run, in three phases:
//!
//! 1. A client pod loads a server pod at fixed rates (1000 and 5000 rps)
//!    with 64 B and 1 KiB responses, in interleaved rounds over three
//!    topologies: direct (no sidecars), the mesh (two proxies, mTLS) and
//!    an HAProxy pair with mTLS ([`haproxy`]); then closed loop at 64
//!    connections for the highest rate of each.
//! 2. The mesh again with the access log on, for its cost.
//! 3. The mesh with its proxies under callgrind ([`callgrind`]), for
//!    instructions per request, a figure the machine's noise does not move.
//!
//! It prints the figures, then the bar with HAProxy's figure beside ours;
//! the raw numbers go to a JSON file. A report, never a test. Traffic stays
//! inside the run's namespaces; every load is bounded in time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

mod callgrind;
mod haproxy;
mod report;
mod runtime;

use crate::{root, run_ok};
use common::procfs::{loadavg, steal_ticks, usage};
use runtime::{Pods, Runtime};

/// `bench` flags.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Interleaved rounds (direct, mesh, HAProxy) per rate and size.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Fixed rates, requests per second.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    rates: Vec<u64>,
    /// Response body sizes, bytes.
    #[arg(long, value_delimiter = ',', default_value = "64,1024")]
    sizes: Vec<usize>,
    /// Connections at the fixed rates.
    #[arg(long, default_value_t = 16)]
    connections: u64,
    /// Measured seconds per round.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of warm-up per round.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Requests counted under callgrind (0: skip that phase).
    #[arg(long, default_value_t = 1000)]
    callgrind_requests: u64,
    /// Skip the HAProxy topology.
    #[arg(long)]
    no_haproxy: bool,
    /// Where to write the raw numbers (default target/bench/bench-<time>.json).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// One load: where from, to what, how much.
struct Load<'a> {
    ns: &'a str,
    target: &'a str,
    size: usize,
    rate: u64,
    connections: u64,
    duration: u64,
    warmup: u64,
}

/// Runs the load generator inside `l.ns`; its JSON result.
fn load(xtask: &Path, l: &Load<'_>) -> anyhow::Result<Value> {
    let out = run_ok(
        Command::new("ip")
            .args(["netns", "exec", l.ns])
            .arg(xtask)
            .args(["loadgen", "--target", l.target])
            .args(["--path", &format!("/?size={}", l.size)])
            .args(["--rate", &l.rate.to_string()])
            .args(["--connections", &l.connections.to_string()])
            .args(["--duration", &l.duration.to_string()])
            .args(["--warmup", &l.warmup.to_string()]),
    )?;
    Ok(serde_json::from_str(out.trim())?)
}

/// One measured round of one topology.
#[derive(Serialize, Clone)]
pub struct Sample {
    phase: &'static str,
    rate: u64,
    size: usize,
    round: u32,
    topology: &'static str,
    load: Value,
    /// CPU seconds of (client side, server side) during the round.
    cpu_s: Option<(f64, f64)>,
    /// RSS KiB of (client side, server side) after the round.
    rss_kib: Option<(u64, u64)>,
    loadavg: f64,
    steal_ticks: u64,
}

impl Sample {
    fn get(&self, k: &str) -> f64 {
        self.load[k].as_f64().unwrap_or(0.0)
    }

    /// CPU microseconds per request of each side, warm-up requests
    /// counted (at a fixed rate they are `warmup / duration` more).
    fn cpu_us(&self, warmup: u64, duration: u64) -> Option<(f64, f64)> {
        let (a, b) = self.cpu_s?;
        let served = self.get("ok").max(1.0) * (warmup + duration) as f64 / duration as f64;
        Some((a / served * 1e6, b / served * 1e6))
    }
}

/// Measures one load with the CPU and RSS of `pids`.
fn measured(
    xtask: &Path,
    l: &Load<'_>,
    pids: Option<(u32, u32)>,
    meta: (&'static str, u32, &'static str),
) -> anyhow::Result<Sample> {
    let before = pids.map(|(a, b)| (usage(a).0, usage(b).0));
    let (la, st) = (loadavg(), steal_ticks());
    let result = load(xtask, l)?;
    let after = pids.map(|(a, b)| (usage(a), usage(b)));
    eprintln!(
        "{} {} rps {} B round {} {}: {result}",
        meta.0, l.rate, l.size, meta.1, meta.2
    );
    Ok(Sample {
        phase: meta.0,
        rate: l.rate,
        size: l.size,
        round: meta.1,
        topology: meta.2,
        load: result,
        cpu_s: before
            .zip(after)
            .map(|((a0, b0), (a1, b1))| (a1.0 - a0, b1.0 - b0)),
        rss_kib: after.map(|(a, b)| (a.1, b.1)),
        loadavg: la,
        steal_ticks: steal_ticks() - st,
    })
}

/// Everything measured.
#[derive(Serialize, Default)]
pub struct Results {
    samples: Vec<Sample>,
    closed_loop: Vec<(&'static str, Value)>,
    /// RSS KiB of the two proxies before any load.
    idle_rss_kib: (u64, u64),
    /// Instructions per request of (client, server) proxy under callgrind.
    instructions_per_request: Option<(f64, f64)>,
    warmup: u64,
    duration: u64,
}

pub fn run(a: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        run_ok(Command::new("id").arg("-u"))?.trim() == "0",
        "the benchmark runs on the local runtime: run as root"
    );
    crate::build_release(&root())?;
    let xtask = std::env::current_exe()?;
    let bin = xtask.parent().map(Path::to_path_buf).unwrap_or_default();
    let meshctl = bin.join("meshctl");
    let mut r = Results {
        warmup: a.warmup,
        duration: a.duration,
        ..Results::default()
    };
    let size = a.sizes.first().copied().unwrap_or(64);

    eprintln!("phase 1: direct, mesh and HAProxy");
    {
        let rt = Runtime::up(&meshctl, "main", &[])?;
        let pods = rt.pods(&xtask, size, Duration::from_secs(60))?;
        r.idle_rss_kib = (usage(pods.proxies.0).1, usage(pods.proxies.1).1);
        let work = PathBuf::from(format!("/tmp/mesh-bench-{}-work", std::process::id()));
        let pair = if a.no_haproxy {
            None
        } else {
            let probe = || {
                load(&xtask, &one_request(&pods.direct_ns, haproxy::FRONTEND))
                    .is_ok_and(|v| v["ok"].as_u64() == Some(1))
            };
            Some(haproxy::start_pair(
                &work,
                &pods.direct_ns,
                &pods.server_direct_ns,
                &pods.server_direct_ip,
                probe,
            )?)
        };
        let topologies = topologies(&pods, pair.as_ref());
        for &rate in &a.rates {
            for &size in &a.sizes {
                for round in 1..=a.rounds {
                    for (name, ns, target, pids) in &topologies {
                        let l = Load {
                            ns,
                            target,
                            size,
                            rate,
                            connections: a.connections,
                            duration: a.duration,
                            warmup: a.warmup,
                        };
                        r.samples
                            .push(measured(&xtask, &l, *pids, ("main", round, name))?);
                    }
                }
            }
        }
        eprintln!("closed loop, 64 connections");
        for (name, ns, target, _) in &topologies {
            let l = Load {
                ns,
                target,
                size,
                rate: 0,
                connections: 64,
                duration: 5,
                warmup: 1,
            };
            r.closed_loop.push((name, load(&xtask, &l)?));
        }
        drop(pair);
        let _ = std::fs::remove_dir_all(&work);
    }

    eprintln!("phase 2: the mesh with the access log on");
    {
        let rt = Runtime::up(&meshctl, "log", &[("MESH_ACCESS_LOG", "on")])?;
        let pods = rt.pods(&xtask, size, Duration::from_secs(60))?;
        let rate = a.rates.iter().copied().max().unwrap_or(5000);
        for round in 1..=a.rounds {
            let l = Load {
                ns: &pods.client_ns,
                target: &pods.mesh_target,
                size,
                rate,
                connections: a.connections,
                duration: a.duration,
                warmup: a.warmup,
            };
            r.samples.push(measured(
                &xtask,
                &l,
                Some(pods.proxies),
                ("log", round, "mesh"),
            )?);
        }
    }

    if a.callgrind_requests > 0 {
        eprintln!("phase 3: instructions per request under callgrind");
        let small = callgrind_run(&meshctl, &xtask, size, 100, None)?;
        let keep = root().join("target/bench");
        let large = callgrind_run(
            &meshctl,
            &xtask,
            size,
            100 + a.callgrind_requests,
            Some(&keep),
        )?;
        let n = (large.0 - small.0).max(1.0);
        r.instructions_per_request = Some(((large.1 - small.1) / n, (large.2 - small.2) / n));
    }

    report::print(a, &r);
    let out = a.out.clone().unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        root().join("target/bench").join(format!("bench-{t}.json"))
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&r)?)?;
    println!("raw numbers: {}", out.display());
    Ok(())
}

/// A runtime whose proxies run under callgrind, carrying `requests`
/// requests; the requests answered and the instructions of the client's
/// and the server's proxy, from start to exit.
fn callgrind_run(
    meshctl: &Path,
    xtask: &Path,
    size: usize,
    requests: u64,
    keep: Option<&Path>,
) -> anyhow::Result<(f64, f64, f64)> {
    callgrind::clean();
    let wrapper = callgrind::wrapper();
    let env = [
        ("MESH_PROXY_WRAPPER", wrapper.as_str()),
        // Exit at once on SIGTERM, within the runtime's grace.
        ("MESH_DRAIN_GRACE", "0s"),
    ];
    let rt = Runtime::up(meshctl, "cg", &env)?;
    let pods = rt.pods(xtask, size, Duration::from_secs(300))?;
    let rate = 100;
    let l = Load {
        ns: &pods.client_ns,
        target: &pods.mesh_target,
        size,
        rate,
        connections: 4,
        duration: requests.div_ceil(rate),
        warmup: 0,
    };
    let ok = load(xtask, &l)?["ok"].as_f64().unwrap_or(0.0);
    let (c, s) = pods.proxies;
    drop(rt);
    let wait = Duration::from_secs(30);
    let counts = (
        ok,
        callgrind::instructions(c, wait)? as f64,
        callgrind::instructions(s, wait)? as f64,
    );
    if let Some(dir) = keep {
        callgrind::keep(c, &dir.join("callgrind-client-proxy.out"))?;
        callgrind::keep(s, &dir.join("callgrind-server-proxy.out"))?;
        eprintln!("profiles: {}/callgrind-*-proxy.out", dir.display());
    }
    callgrind::clean();
    eprintln!("callgrind {requests} requests: {counts:?}");
    Ok(counts)
}

/// One request, for a probe.
fn one_request<'a>(ns: &'a str, target: &'a str) -> Load<'a> {
    Load {
        ns,
        target,
        size: 1,
        rate: 1,
        connections: 1,
        duration: 1,
        warmup: 0,
    }
}

type Topology<'a> = (&'static str, &'a str, &'a str, Option<(u32, u32)>);

fn topologies<'a>(pods: &'a Pods, pair: Option<&haproxy::Pair>) -> Vec<Topology<'a>> {
    let mut t = vec![
        (
            "direct",
            pods.direct_ns.as_str(),
            pods.direct_target.as_str(),
            None,
        ),
        (
            "mesh",
            pods.client_ns.as_str(),
            pods.mesh_target.as_str(),
            Some(pods.proxies),
        ),
    ];
    if let Some(p) = pair {
        t.push((
            "haproxy",
            pods.direct_ns.as_str(),
            haproxy::FRONTEND,
            Some(p.pids()),
        ));
    }
    t
}
