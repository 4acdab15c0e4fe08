//! TCP metrics with Istio's names and labels, so existing dashboards and
//! PromQL work unchanged. Looked up once per connection, never per byte.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

const LABELS: &[&str] = &[
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "destination_service",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "connection_security_policy",
];

const REQUEST_LABELS: &[&str] = &[
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "destination_service",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "request_protocol",
    "response_code",
    "response_flags",
    "connection_security_policy",
];

/// Istio's buckets for request durations, in milliseconds.
const DURATION_BUCKETS: &[f64] = &[
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Label values of one request, in `REQUEST_LABELS` order.
pub struct RequestLabels<'a>(pub [&'a str; 12]);

/// The registry and the TCP and HTTP metrics.
pub struct Metrics {
    /// Served on `/metrics`.
    pub registry: Registry,
    requests: IntCounterVec,
    durations: HistogramVec,
    opened: IntCounterVec,
    closed: IntCounterVec,
    sent: IntCounterVec,
    received: IntCounterVec,
    ejections: IntCounterVec,
    refused: IntCounterVec,
    denied: IntCounterVec,
    unauthenticated: IntCounterVec,
    /// Access-log records dropped because the writer fell behind.
    pub access_log_dropped: IntCounter,
}

/// The counters of one set of request label values, resolved once.
#[derive(Clone)]
pub struct RequestHandles {
    requests: IntCounter,
    duration: Histogram,
}

impl RequestHandles {
    /// Counts a finished request.
    pub fn record(&self, took: Duration) {
        self.requests.inc();
        self.duration.observe(took.as_secs_f64() * 1000.0);
    }
}

/// Request handles by the label values that change from request to
/// request on one connection (the others are fixed by the connection), so
/// that a request like an earlier one builds no label strings. Bounded:
/// past [`HandleCache::MAX`] kinds, handles are resolved per request.
pub struct HandleCache<K> {
    map: Mutex<HashMap<K, RequestHandles>>,
}

impl<K: std::hash::Hash + Eq> Default for HandleCache<K> {
    fn default() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: std::hash::Hash + Eq> HandleCache<K> {
    /// Kinds of requests one connection keeps handles for.
    pub const MAX: usize = 64;

    /// The handles for `key`, resolved by `resolve` the first time.
    pub fn get(&self, key: K, resolve: impl FnOnce() -> RequestHandles) -> RequestHandles {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = map.get(&key) {
            return h.clone();
        }
        let h = resolve();
        if map.len() < Self::MAX {
            map.insert(key, h.clone());
        }
        h
    }
}

/// Label values of one connection, in [`LABELS`] order.
pub struct ConnLabels<'a>(pub [&'a str; 9]);

impl Metrics {
    /// Registers the counters.
    pub fn new() -> anyhow::Result<Self> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| -> anyhow::Result<IntCounterVec> {
            let c = IntCounterVec::new(Opts::new(name, help), LABELS)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let durations = HistogramVec::new(
            HistogramOpts::new("istio_request_duration_milliseconds", "Request duration")
                .buckets(DURATION_BUCKETS.to_vec()),
            REQUEST_LABELS,
        )?;
        registry.register(Box::new(durations.clone()))?;
        let requests = IntCounterVec::new(
            Opts::new("istio_requests_total", "Requests"),
            REQUEST_LABELS,
        )?;
        registry.register(Box::new(requests.clone()))?;
        let ejections = IntCounterVec::new(
            Opts::new(
                "mesh_outlier_ejections_total",
                "Endpoints ejected by outlier detection",
            ),
            &["destination_service"],
        )?;
        registry.register(Box::new(ejections.clone()))?;
        let refused = IntCounterVec::new(
            Opts::new(
                "mesh_inbound_connections_refused_total",
                "Inbound connections closed before any byte reached the app, by reason",
            ),
            &["reason", "destination_port"],
        )?;
        registry.register(Box::new(refused.clone()))?;
        let denied = IntCounterVec::new(
            Opts::new(
                "mesh_authorization_denied_total",
                "Requests and connections denied by AuthorizationPolicies, by deciding policy",
            ),
            &["policy"],
        )?;
        registry.register(Box::new(denied.clone()))?;
        let unauthenticated = IntCounterVec::new(
            Opts::new(
                "mesh_jwt_refused_total",
                "Requests refused with 401 by RequestAuthentication, by reason",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(unauthenticated.clone()))?;
        let access_log_dropped = IntCounter::new(
            "mesh_access_log_dropped_total",
            "Access-log records dropped because the writer fell behind",
        )?;
        registry.register(Box::new(access_log_dropped.clone()))?;
        Ok(Self {
            access_log_dropped,
            ejections,
            refused,
            denied,
            unauthenticated,
            requests,
            durations,
            opened: counter(
                "istio_tcp_connections_opened_total",
                "TCP connections opened",
            )?,
            closed: counter(
                "istio_tcp_connections_closed_total",
                "TCP connections closed",
            )?,
            sent: counter(
                "istio_tcp_sent_bytes_total",
                "Bytes sent to the destination",
            )?,
            received: counter(
                "istio_tcp_received_bytes_total",
                "Bytes received from the destination",
            )?,
            registry,
        })
    }

    /// The counters of requests with labels `l`.
    pub fn request_handles(&self, l: &RequestLabels<'_>) -> RequestHandles {
        RequestHandles {
            requests: self.requests.with_label_values(&l.0),
            duration: self.durations.with_label_values(&l.0),
        }
    }

    /// Counts an open.
    pub fn opened(&self, l: &ConnLabels<'_>) {
        self.opened.with_label_values(&l.0).inc();
    }

    /// Counts a close with the bytes each way.
    pub fn closed(&self, l: &ConnLabels<'_>, sent: u64, received: u64) {
        self.closed.with_label_values(&l.0).inc();
        self.sent.with_label_values(&l.0).inc_by(sent);
        self.received.with_label_values(&l.0).inc_by(received);
    }

    /// Counts an inbound connection refused for `reason` on `port`.
    pub fn refused(&self, reason: &str, port: u16) {
        self.refused
            .with_label_values(&[reason, &port.to_string()])
            .inc();
    }

    /// Counts a request or connection denied by `policy`.
    pub fn denied(&self, policy: &str) {
        self.denied.with_label_values(&[policy]).inc();
    }

    /// Counts a request refused for an invalid token (`reason`: a
    /// [`api::jwt::Failure::code`]).
    pub fn unauthenticated(&self, reason: &str) {
        self.unauthenticated.with_label_values(&[reason]).inc();
    }

    /// Counts an ejection from `host`.
    pub fn ejected(&self, host: &str) {
        self.ejections.with_label_values(&[host]).inc();
    }

    /// Text exposition.
    pub fn render(&self) -> String {
        let mut buf = String::new();
        let _ = prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut buf);
        buf
    }
}

/// The process's own health, in the Prometheus client libraries' names:
/// resident memory, CPU time and file descriptors, read from `/proc` at
/// scrape time.
pub fn process() -> String {
    let (cpu, rss_kib) = common::procfs::own_usage();
    let (fds, max_fds) = common::procfs::own_fds();
    format!(
        "# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes {}
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total {cpu}
# HELP process_open_fds Number of open file descriptors.
# TYPE process_open_fds gauge
process_open_fds {fds}
# HELP process_max_fds Maximum number of open file descriptors.
# TYPE process_max_fds gauge
process_max_fds {max_fds}
",
        rss_kib * 1024
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(code: &str) -> RequestLabels<'_> {
        RequestLabels([
            "source", "a", "ns", "p", "svc", "b", "ns", "q", "http", code, "-", "none",
        ])
    }

    #[test]
    fn the_process_reports_its_memory_and_descriptors() {
        let text = process();
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("{name} in {text}"))
        };
        assert!(
            value("process_resident_memory_bytes") > 1_000_000.0,
            "{text}"
        );
        assert!(value("process_open_fds") >= 3.0, "{text}");
        assert!(
            value("process_max_fds") >= value("process_open_fds"),
            "{text}"
        );
        assert!(value("process_cpu_seconds_total") >= 0.0, "{text}");
    }

    #[test]
    fn handles_are_resolved_once_per_kind_and_bounded() {
        let m = Metrics::new().unwrap();
        let cache = HandleCache::default();
        let mut resolved = 0;
        for _ in 0..10 {
            cache
                .get(200u16, || {
                    resolved += 1;
                    m.request_handles(&labels("200"))
                })
                .record(Duration::from_millis(3));
        }
        assert_eq!(resolved, 1);
        assert!(
            m.render()
                .contains("istio_requests_total{connection_security_policy=\"none\",destination_principal=\"q\",destination_service=\"svc\",destination_workload=\"b\",destination_workload_namespace=\"ns\",reporter=\"source\",request_protocol=\"http\",response_code=\"200\",response_flags=\"-\",source_principal=\"p\",source_workload=\"a\",source_workload_namespace=\"ns\"} 10"),
            "{}",
            m.render()
        );
        // Past the bound, still counted, no longer kept.
        for code in 0..(HandleCache::<u16>::MAX as u16 + 10) {
            cache.get(1000 + code, || m.request_handles(&labels("599")));
        }
        assert_eq!(cache.map.lock().unwrap().len(), HandleCache::<u16>::MAX);
    }
}
