//! The access log: one JSON object per request on stdout, with Envoy's
//! field names and response flags (`UT`, `URX`, `NR`, `FI`...), as Istio
//! prints it with `accessLogEncoding: JSON`. `MESH_ACCESS_LOG=off` turns it
//! off.
//!
//! Off the request's path: a request hands its record to a bounded queue
//! and goes on; a thread of its own turns records into JSON and writes
//! them, many per write. When the writer falls behind, records are
//! dropped and counted (`mesh_access_log_dropped_total`), never waited for.

use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

use hyper::header::{HeaderName, USER_AGENT};
use prometheus::IntCounter;
use serde::Serialize;

use crate::http::stream_info::StreamInfo;

/// Records waiting for the writer, at most.
pub const QUEUE: usize = 4096;

/// What is logged of a request, taken before it is forwarded.
#[derive(Debug, Clone)]
pub struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) authority: String,
    pub(crate) protocol: &'static str,
    pub(crate) request_id: Option<String>,
    pub(crate) user_agent: Option<String>,
    start: SystemTime,
    /// The request's headers, kept only when an expression reads them.
    pub(crate) headers: Option<hyper::HeaderMap>,
}

fn header<B>(req: &hyper::Request<B>, name: &HeaderName) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

impl Request {
    /// Reads `req`.
    pub fn of<B>(req: &hyper::Request<B>) -> Self {
        Self::keeping(req, false)
    }

    /// Reads `req`, keeping its headers when `headers`.
    pub fn keeping<B>(req: &hyper::Request<B>, headers: bool) -> Self {
        Self {
            headers: headers.then(|| req.headers().clone()),
            method: req.method().to_string(),
            path: req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
            authority: crate::traffic::matching::authority(req).to_string(),
            protocol: match req.version() {
                hyper::Version::HTTP_2 => "HTTP/2",
                hyper::Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
            request_id: header(req, &HeaderName::from_static("x-request-id")),
            user_agent: header(req, &USER_AGENT),
            start: SystemTime::now(),
        }
    }
}

/// One request's record.
pub struct Record {
    /// The request.
    pub request: Request,
    /// Its response's status.
    pub status: u16,
    /// What happened.
    pub info: StreamInfo,
    /// The destination service.
    pub service: Arc<str>,
    /// How long it took.
    pub took: Duration,
    /// Bytes of the request and the response (headers and bodies).
    pub sizes: crate::metrics::Sizes,
    /// The client's and the server's SPIFFE IDs, when known.
    pub principals: [Option<String>; 2],
}

/// Envoy's fields, as JSON.
#[derive(Serialize)]
struct Line<'a> {
    start_time: String,
    method: &'a str,
    path: &'a str,
    protocol: &'a str,
    authority: &'a str,
    response_code: u16,
    response_flags: String,
    response_code_details: &'a str,
    route_name: &'a str,
    upstream_cluster: &'a str,
    upstream_host: Option<IpAddr>,
    attempts: u32,
    duration: u64,
    bytes_received: u64,
    bytes_sent: u64,
    x_request_id: &'a str,
    user_agent: &'a str,
    downstream_peer_uri_san: &'a str,
    upstream_peer_uri_san: &'a str,
}

impl Record {
    fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        let r = &self.request;
        let start = time::OffsetDateTime::from(r.start);
        let line = Line {
            start_time: start
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            method: &r.method,
            path: &r.path,
            protocol: r.protocol,
            authority: &r.authority,
            response_code: self.status,
            response_flags: self.info.flags(),
            response_code_details: self.info.details(),
            route_name: self.info.route.as_deref().unwrap_or("default"),
            upstream_cluster: &self.service,
            upstream_host: self.info.upstream.as_ref().map(|e| e.workload().address),
            attempts: self.info.attempts,
            duration: u64::try_from(self.took.as_millis()).unwrap_or(u64::MAX),
            bytes_received: self.sizes.request_bytes,
            bytes_sent: self.sizes.response_bytes,
            x_request_id: r.request_id.as_deref().unwrap_or("-"),
            user_agent: r.user_agent.as_deref().unwrap_or("-"),
            downstream_peer_uri_san: self.principals[0].as_deref().unwrap_or("-"),
            upstream_peer_uri_san: self.principals[1].as_deref().unwrap_or("-"),
        };
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")
    }
}

/// The log's queue; its writer runs on a thread of its own.
pub struct AccessLog {
    tx: SyncSender<Record>,
    dropped: IntCounter,
}

impl AccessLog {
    /// Starts the writer to stdout; drops are counted in `dropped`.
    pub fn start(dropped: IntCounter) -> std::io::Result<Self> {
        Self::start_to(dropped, std::io::stdout(), QUEUE)
    }

    /// Starts a writer to `out` behind a queue of `capacity`.
    pub fn start_to(
        dropped: IntCounter,
        out: impl Write + Send + 'static,
        capacity: usize,
    ) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer(rx, out))?;
        Ok(Self { tx, dropped })
    }

    /// Queues `r`; drops it (counted) when the queue is full.
    pub fn log(&self, r: Record) {
        match self.tx.try_send(r) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }
}

/// How long the writer rests after a batch: records queue up meanwhile,
/// so that a busy proxy neither wakes the writer (a futex call on the
/// request's thread) nor writes once per request. Envoy flushes its
/// access log files every second; lines appear here within a tenth.
const REST: Duration = Duration::from_millis(100);

/// Writes what comes, flushing when the queue runs dry, then rests.
fn writer(rx: Receiver<Record>, out: impl Write) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(first) = rx.recv() {
        let _ = first.write(&mut out);
        while let Ok(r) = rx.try_recv() {
            let _ = r.write(&mut out);
        }
        let _ = out.flush();
        std::thread::sleep(REST);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A sink that holds what was written, and can be made to stall.
    #[derive(Clone, Default)]
    struct Sink {
        data: Arc<Mutex<Vec<u8>>>,
        stall: Arc<Mutex<()>>,
        entered: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.entered
                .store(true, std::sync::atomic::Ordering::SeqCst);
            let _wait = self.stall.lock().unwrap();
            self.data.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn record(path: &str) -> Record {
        let req = hyper::Request::builder()
            .uri(path)
            .header("host", "orders:8080")
            .body(())
            .unwrap();
        Record {
            request: Request::of(&req),
            status: 503,
            info: StreamInfo {
                flags: vec!["UF", "URX"],
                attempts: 3,
                ..StreamInfo::default()
            },
            service: "orders.shop.svc.cluster.local".into(),
            took: Duration::from_millis(12),
            sizes: crate::metrics::Sizes {
                request_bytes: 40,
                response_bytes: 90,
                messages: None,
            },
            principals: [
                None,
                Some("spiffe://cluster.local/ns/shop/sa/orders".into()),
            ],
        }
    }

    #[test]
    fn records_are_envoys_json_lines() {
        let sink = Sink::default();
        let dropped = IntCounter::new("d", "d").unwrap();
        let log = AccessLog::start_to(dropped.clone(), sink.clone(), 16).unwrap();
        log.log(record("/a?x=1"));
        log.log(record("/b"));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sink
            .data
            .lock()
            .unwrap()
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            < 2
        {
            assert!(std::time::Instant::now() < deadline, "nothing written");
            std::thread::sleep(Duration::from_millis(5));
        }
        let text = String::from_utf8(sink.data.lock().unwrap().clone()).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["path"], "/a?x=1");
        assert_eq!(first["authority"], "orders:8080");
        assert_eq!(first["response_code"], 503);
        assert_eq!(first["response_flags"], "UF,URX");
        assert_eq!(first["attempts"], 3);
        assert_eq!(first["duration"], 12);
        assert_eq!(first["x_request_id"], "-");
        assert_eq!(
            (
                first["bytes_received"].as_u64(),
                first["bytes_sent"].as_u64()
            ),
            (Some(40), Some(90))
        );
        assert_eq!(first["downstream_peer_uri_san"], "-");
        assert_eq!(
            first["upstream_peer_uri_san"],
            "spiffe://cluster.local/ns/shop/sa/orders"
        );
        assert_eq!(dropped.get(), 0);
    }

    #[test]
    fn a_stalled_writer_drops_and_counts_instead_of_blocking() {
        let sink = Sink::default();
        let stalled = sink.stall.lock().unwrap();
        let dropped = IntCounter::new("d", "d").unwrap();
        let log = AccessLog::start_to(dropped.clone(), sink.clone(), 4).unwrap();
        // The writer takes the first record and blocks writing it.
        log.log(record("/first"));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !sink.entered.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never wrote"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let started = std::time::Instant::now();
        for i in 0..100 {
            log.log(record(&format!("/{i}")));
        }
        assert!(started.elapsed() < Duration::from_secs(1), "logging waited");
        // The queue holds 4; the other 96 were dropped and counted.
        assert_eq!(dropped.get(), 96);
        drop(stalled);
    }
}
