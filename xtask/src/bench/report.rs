//! The bench's report: the figures per rate and size (median, min and max
//! over the rounds), then the bar with HAProxy's figure beside ours.

use super::{BenchArgs, Results, Sample};

/// Median, min and max.
fn spread(mut v: Vec<f64>) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some((v[v.len() / 2], v[0], v[v.len() - 1]))
}

fn of<'a>(r: &'a Results, phase: &str, rate: u64, size: usize, topology: &str) -> Vec<&'a Sample> {
    r.samples
        .iter()
        .filter(|s| s.phase == phase && s.rate == rate && s.size == size && s.topology == topology)
        .collect()
}

/// Added latency of `topology` over direct, in ms, by round.
fn added(
    r: &Results,
    rate: u64,
    size: usize,
    topology: &str,
    key: &str,
) -> Option<(f64, f64, f64)> {
    let direct = of(r, "main", rate, size, "direct");
    spread(
        of(r, "main", rate, size, topology)
            .iter()
            .filter_map(|s| {
                let d = direct.iter().find(|d| d.round == s.round)?;
                Some((s.get(key) - d.get(key)) / 1000.0)
            })
            .collect(),
    )
}

/// CPU µs per request of each side, medians.
fn cpu(r: &Results, phase: &str, rate: u64, size: usize, topology: &str) -> Option<(f64, f64)> {
    let v: Vec<(f64, f64)> = of(r, phase, rate, size, topology)
        .iter()
        .filter_map(|s| s.cpu_us(r.warmup, r.duration))
        .collect();
    Some((
        spread(v.iter().map(|c| c.0).collect())?.0,
        spread(v.iter().map(|c| c.1).collect())?.0,
    ))
}

/// The larger RSS, in MB, seen under this load.
fn rss_mb(r: &Results, rate: u64, size: usize, topology: &str) -> Option<f64> {
    of(r, "main", rate, size, topology)
        .iter()
        .filter_map(|s| s.rss_kib.map(|(a, b)| a.max(b)))
        .max()
        .map(|k| k as f64 / 1024.0)
}

fn fmt3(v: Option<(f64, f64, f64)>) -> String {
    v.map_or("-".into(), |(m, lo, hi)| {
        format!("{m:.3} ({lo:.3}..{hi:.3})")
    })
}

fn pair(v: Option<(f64, f64)>) -> String {
    v.map_or("-".into(), |(a, b)| format!("{a:.1} / {b:.1}"))
}

fn yes(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "NOT MET",
        None => "-",
    }
}

pub fn print(a: &BenchArgs, r: &Results) {
    println!(
        "\nmesh benchmark: {} connections, {} rounds of {} s (+{} s warm-up), HAProxy 2.6 beside",
        a.connections, a.rounds, a.duration, a.warmup
    );
    println!(
        "{:<12} {:<9} {:<26} {:<26} {:<14} {:<14} {:>8}",
        "rate, size", "path", "added p50 ms", "added p99 ms", "CPU µs/req", "", "RSS MB"
    );
    for &rate in &a.rates {
        for &size in &a.sizes {
            for t in ["mesh", "haproxy"] {
                if of(r, "main", rate, size, t).is_empty() {
                    continue;
                }
                println!(
                    "{:<12} {:<9} {:<26} {:<26} {:<29} {:>8}",
                    format!("{rate}, {size} B"),
                    t,
                    fmt3(added(r, rate, size, t, "p50_us")),
                    fmt3(added(r, rate, size, t, "p99_us")),
                    format!("{} (client / server)", pair(cpu(r, "main", rate, size, t))),
                    rss_mb(r, rate, size, t).map_or("-".into(), |m| format!("{m:.1}")),
                );
            }
        }
    }
    let closed = |t: &str| {
        r.closed_loop
            .iter()
            .find(|(n, _)| *n == t)
            .and_then(|(_, v)| v["rps"].as_f64())
    };
    println!(
        "closed loop, 64 connections (rps): direct {} mesh {} haproxy {}",
        closed("direct").map_or("-".into(), |v| format!("{v:.0}")),
        closed("mesh").map_or("-".into(), |v| format!("{v:.0}")),
        closed("haproxy").map_or("-".into(), |v| format!("{v:.0}")),
    );
    let failed: f64 = r.samples.iter().map(|s| s.get("errors")).sum();
    println!("failed requests: {failed}");
    let noisy: Vec<String> = r
        .samples
        .iter()
        .filter(|s| s.steal_ticks > 50 || s.loadavg > 2.5)
        .map(|s| {
            format!(
                "{} {} rps {} B #{} {}",
                s.phase, s.rate, s.size, s.round, s.topology
            )
        })
        .collect();
    if !noisy.is_empty() {
        println!("noisy rounds (load average > 2.5 or CPU steal): {noisy:?}");
    }

    // The bar, at the highest rate with the smallest size.
    let rate = a.rates.iter().copied().max().unwrap_or(5000);
    let size = a.sizes.iter().copied().min().unwrap_or(64);
    let ours = cpu(r, "main", rate, size, "mesh");
    let theirs = cpu(r, "main", rate, size, "haproxy");
    let with_log = cpu(r, "log", rate, size, "mesh");
    let idle = (r.idle_rss_kib.0.max(r.idle_rss_kib.1)) as f64 / 1024.0;
    let p50 = |t| added(r, rate, size, t, "p50_us").map(|v| v.0);
    let log_cost = ours
        .zip(with_log)
        .map(|(off, on)| ((on.0 + on.1) / (off.0 + off.1) - 1.0) * 100.0);
    println!("\nthe bar ({rate} rps, {size} B)");
    println!("{:<46} {:<16} {:<16} bar", "figure", "ours", "HAProxy");
    let rows: Vec<(String, String, String, Option<bool>)> = vec![
        (
            "CPU µs per request per proxy (<= 30, < HAProxy)".into(),
            pair(ours),
            pair(theirs),
            ours.map(|o| o.0.max(o.1) <= 30.0 && theirs.is_none_or(|t| o.0 < t.0 && o.1 < t.1)),
        ),
        (
            "closed-loop rate, rps (> HAProxy)".into(),
            closed("mesh").map_or("-".into(), |v| format!("{v:.0}")),
            closed("haproxy").map_or("-".into(), |v| format!("{v:.0}")),
            closed("mesh").zip(closed("haproxy")).map(|(o, t)| o > t),
        ),
        (
            "added p50, ms (<= HAProxy)".into(),
            p50("mesh").map_or("-".into(), |v| format!("{v:.3}")),
            p50("haproxy").map_or("-".into(), |v| format!("{v:.3}")),
            p50("mesh").zip(p50("haproxy")).map(|(o, t)| o <= t),
        ),
        (
            "idle RSS, MB (<= 8)".into(),
            format!("{idle:.1}"),
            "-".into(),
            Some(idle <= 8.0),
        ),
        (
            format!("RSS at {rate} rps, MB (<= 15)"),
            rss_mb(r, rate, size, "mesh").map_or("-".into(), |m| format!("{m:.1}")),
            rss_mb(r, rate, size, "haproxy").map_or("-".into(), |m| format!("{m:.1}")),
            rss_mb(r, rate, size, "mesh").map(|m| m <= 15.0),
        ),
        (
            "access log on, CPU cost (<= 10%)".into(),
            log_cost.map_or("-".into(), |c| format!("{c:+.1}%")),
            "-".into(),
            log_cost.map(|c| c <= 10.0),
        ),
        (
            "instructions per request (client / server)".into(),
            r.instructions_per_request
                .map_or("-".into(), |(c, s)| format!("{c:.0} / {s:.0}")),
            "-".into(),
            None,
        ),
    ];
    for (name, o, t, ok) in rows {
        println!("{name:<46} {o:<16} {t:<16} {}", yes(ok));
    }
}
