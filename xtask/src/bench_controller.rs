//! `cargo xtask bench-controller`: the controller at scale, as a report.
//! 10,000 Services (one ready pod each) in 50 namespaces, and 5,000
//! proxies, each subscribed to its own pod, to one Service that every
//! proxy uses and to a few others. Then an endpoint change of that shared
//! Service (a pod goes unready, another becomes ready): the two pods'
//! changes are applied to the index, as the controller applies a watch's
//! events, and every subscriber's response is made. A full rebuild of the
//! same state is timed too, for comparison.
//!
//! In process, without the gRPC transport: the discovery sessions
//! ([`mesh_controller_grpc::discovery::Session`]) run as the controller
//! runs them, one after the other on one core (the controller spreads
//! them over its worker threads), so the delivery times are the
//! controller's own work, an upper bound for one core. Reports the
//! delivery time of the change to each subscriber (p50/p99), the bytes
//! sent for it, the CPU it took and the memory the subscriptions hold.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use api::cluster::{Pod, Service, ServicePort, Snapshot, TargetPort};
use api::proto::DiscoveryRequest;
use api::spiffe::SpiffeId;
use mesh_controller_core::index::{Change, Indexer};
use mesh_controller_grpc::discovery::Session;
use prost::Message;

use common::procfs::usage;

/// `bench-controller` flags.
#[derive(clap::Args)]
pub struct Args {
    /// Services, one ready pod each.
    #[arg(long, default_value_t = 10_000)]
    services: u32,
    /// Subscribed proxies.
    #[arg(long, default_value_t = 5_000)]
    proxies: u32,
    /// Services each proxy subscribes to besides the shared one.
    #[arg(long, default_value_t = 4)]
    subscriptions: u32,
}

const NAMESPACES: u32 = 50;

fn ip(base: [u8; 2], n: u32) -> IpAddr {
    let b = n.to_be_bytes();
    IpAddr::V4(Ipv4Addr::new(base[0], base[1], b[2], b[3]))
}

fn pod(name: String, ns: String, app: String, ip: IpAddr, ready: bool) -> Pod {
    Pod {
        name,
        namespace: ns,
        labels: [("app".to_string(), app.clone())].into(),
        service_account: app.clone(),
        ip: Some(ip),
        meshed: true,
        ready,
        named_ports: Default::default(),
        owner: app,
        app_exited: false,
    }
}

fn snapshot(a: &Args) -> Snapshot {
    let mut pods = Vec::new();
    let mut services = Vec::new();
    for i in 0..a.services {
        let (ns, app) = (format!("ns{}", i % NAMESPACES), format!("svc{i}"));
        pods.push(pod(
            format!("{app}-0"),
            ns.clone(),
            app.clone(),
            ip([10, 244], i + 2),
            true,
        ));
        services.push(Service {
            name: app.clone(),
            namespace: ns,
            cluster_ip: ip([10, 96], i + 2),
            selector: [("app".to_string(), app)].into(),
            ports: vec![ServicePort {
                name: "http".into(),
                port: 8080,
                target_port: TargetPort::Number(8080),
                app_protocol: None,
            }],
            export_to: None,
        });
    }
    for p in 0..a.proxies {
        let ns = format!("ns{}", p % NAMESPACES);
        pods.push(pod(
            format!("client-{p}"),
            ns,
            "client".into(),
            ip([10, 245], p + 2),
            true,
        ));
    }
    Snapshot {
        version: 1,
        pods,
        services,
        config: Default::default(),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// How long translating all of `snap` at once takes.
fn rebuild_ms(snap: &Snapshot) -> f64 {
    let started = Instant::now();
    let mut fresh = Indexer::new("cluster.local");
    fresh.apply(Change::between(&Default::default(), snap));
    let _ = fresh.publish();
    started.elapsed().as_secs_f64() * 1000.0
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    let mut snap = snapshot(a);
    let started = Instant::now();
    let mut indexer = Indexer::new("cluster.local");
    indexer.apply(Change::between(&Default::default(), &snap));
    let idx = indexer.publish().unwrap_or_default();
    let build = started.elapsed();
    let me = std::process::id();
    let rss_index = usage(me).1;
    let shared = ip([10, 96], 2).to_string();
    let mut sessions = Vec::new();
    let mut initial_bytes = 0usize;
    for p in 0..a.proxies {
        let ns = format!("ns{}", p % NAMESPACES);
        let own = ip([10, 245], p + 2);
        let mut s = Session::new(SpiffeId::new("cluster.local", &ns, "client")?, own);
        let mut names = vec![own.to_string(), shared.clone()];
        names.extend(
            (1..=a.subscriptions)
                .map(|k| ip([10, 96], (p * 7 + k * 13) % a.services + 2).to_string()),
        );
        let new = s.on_request(DiscoveryRequest {
            subscribe: names,
            ..Default::default()
        });
        if let Some(r) = s.diff(&idx, &new) {
            initial_bytes += r.encoded_len();
        }
        sessions.push(s);
    }
    let rss_subscribed = usage(me).1;

    // The change: the shared Service's pod goes unready, a new one is ready.
    let before = snap.clone();
    snap.version += 1;
    snap.pods[0].ready = false;
    snap.pods.push(pod(
        "svc0-1".into(),
        "ns0".into(),
        "svc0".into(),
        ip([10, 246], 2),
        true,
    ));
    let changes = Change::between(&before, &snap);
    let cpu0 = usage(me).0;
    let change = Instant::now();
    indexer.apply(changes);
    let idx = indexer.publish().unwrap_or_default();
    let applied = change.elapsed();
    let mut delivered = Vec::with_capacity(sessions.len());
    let mut bytes = 0usize;
    let mut resources = 0usize;
    for s in &mut sessions {
        if let Some(r) = s.changed(&idx) {
            bytes += r.encoded_len();
            resources += r.resources.len();
        }
        delivered.push(change.elapsed().as_secs_f64() * 1000.0);
    }
    let cpu = usage(me).0 - cpu0;
    delivered.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&delivered, 0.5), percentile(&delivered, 0.99));
    let subs = u64::from(a.proxies) * u64::from(a.subscriptions + 2);
    println!(
        "controller scale: {} services, {} proxies, {} subscriptions each ({} in all)",
        a.services,
        a.proxies,
        a.subscriptions + 2,
        subs
    );
    println!(
        "index build                        {:.0} ms",
        build.as_secs_f64() * 1000.0
    );
    println!(
        "RSS after the index                {:.1} MB",
        rss_index as f64 / 1024.0
    );
    println!(
        "RSS after the subscriptions        {:.1} MB (+{:.2} KB per subscription)",
        rss_subscribed as f64 / 1024.0,
        rss_subscribed.saturating_sub(rss_index) as f64 / subs as f64
    );
    println!(
        "first responses                    {:.1} MB",
        initial_bytes as f64 / 1e6
    );
    println!(
        "endpoint change applied to index   {:.3} ms (a full rebuild of the same state: {:.0} ms)",
        applied.as_secs_f64() * 1000.0,
        rebuild_ms(&snap)
    );
    println!(
        "endpoint change reaches subscriber p50 {p50:.0} ms, p99 {p99:.0} ms (bar: p99 < 1000 ms) {}",
        if p99 < 1000.0 { "met" } else { "NOT MET" }
    );
    println!(
        "bytes sent for the change          {bytes} in {resources} resources ({:.0} per subscriber)",
        bytes as f64 / f64::from(a.proxies.max(1))
    );
    println!("controller CPU for the change      {cpu:.2} s");
    Ok(())
}
