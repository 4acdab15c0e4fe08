//! HTTP/1.1 load: constant rate over keep-alive connections, or closed
//! loop for the highest rate. Bounded in time; prints one JSON line.
//!
//! Latency of a request sent on time is measured from its send; of one
//! sent late because the previous response was slow, from when it was
//! due, so that a stall counts against every request it delayed (no
//! coordinated omission) while the timer's own millisecond of slack does
//! not count at all.

use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::Serialize;

/// `loadgen` flags.
#[derive(clap::Args, Clone)]
pub struct LoadArgs {
    /// `host:port` to load.
    #[arg(long)]
    target: String,
    /// Requests per second in total; 0 for closed loop.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Connections.
    #[arg(long, default_value_t = 16)]
    connections: u64,
    /// Measured seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of warm-up, not measured.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// The path requested.
    #[arg(long, default_value = "/")]
    path: String,
}

/// What one run measured.
#[derive(Serialize, Default)]
pub struct LoadResult {
    /// Requests answered 2xx in the measured window.
    pub ok: u64,
    /// Failed requests (any time).
    pub errors: u64,
    /// Achieved rate in the measured window.
    pub rps: f64,
    /// Latency percentiles, microseconds.
    pub p50_us: u64,
    /// 99th.
    pub p99_us: u64,
    /// 99.9th.
    pub p999_us: u64,
}

struct Conn {
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
}

async fn connection(a: LoadArgs, index: u64, start: Instant) -> anyhow::Result<Conn> {
    let mut c = Conn {
        hist: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        ok: 0,
        errors: 0,
    };
    let tcp = tokio::net::TcpStream::connect(&a.target).await?;
    tcp.set_nodelay(true)?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let measure_from = start + Duration::from_secs(a.warmup);
    let end = measure_from + Duration::from_secs(a.duration);
    let interval =
        (a.rate > 0).then(|| Duration::from_secs_f64(a.connections as f64 / a.rate as f64));
    // Spread the connections' schedules over one interval.
    let offset = interval
        .map(|i| i.mul_f64(index as f64 / a.connections as f64))
        .unwrap_or_default();
    let mut n: u32 = 0;
    let mut prev_done = start;
    loop {
        let due = match interval {
            Some(i) => start + offset + i * n,
            None => Instant::now(),
        };
        if due >= end {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let from = if prev_done > due { due } else { Instant::now() };
        n += 1;
        let req = Request::get(a.path.as_str())
            .header("host", &a.target)
            .body(Empty::<Bytes>::new())?;
        let result = async {
            tx.ready().await?;
            let resp = tx.send_request(req).await?;
            let ok = resp.status().is_success();
            resp.into_body().collect().await?;
            Ok::<_, hyper::Error>(ok)
        };
        let outcome = tokio::time::timeout(Duration::from_secs(5), result).await;
        prev_done = Instant::now();
        match outcome {
            Ok(Ok(true)) if due >= measure_from => {
                c.ok += 1;
                let us =
                    u64::try_from(prev_done.duration_since(from).as_micros()).unwrap_or(u64::MAX);
                c.hist.saturating_record(us.max(1));
            }
            Ok(Ok(true)) => {}
            _ => {
                c.errors += 1;
                return Ok(c);
            }
        }
    }
    Ok(c)
}

pub async fn run(a: LoadArgs) -> anyhow::Result<()> {
    let start = Instant::now() + Duration::from_millis(100);
    let tasks: Vec<_> = (0..a.connections)
        .map(|i| tokio::spawn(connection(a.clone(), i, start)))
        .collect();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut r = LoadResult::default();
    for t in tasks {
        match t.await? {
            Ok(c) => {
                hist.add(&c.hist)?;
                r.ok += c.ok;
                r.errors += c.errors;
            }
            Err(e) => {
                eprintln!("connection failed: {e}");
                r.errors += 1;
            }
        }
    }
    r.rps = r.ok as f64 / a.duration as f64;
    r.p50_us = hist.value_at_quantile(0.5);
    r.p99_us = hist.value_at_quantile(0.99);
    r.p999_us = hist.value_at_quantile(0.999);
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}
