//! TCP metrics with Istio's names and labels, so existing dashboards and
//! PromQL work unchanged. Looked up once per connection, never per byte.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

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
        Ok(Self {
            ejections,
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

    /// Counts a finished request.
    pub fn request(&self, l: &RequestLabels<'_>, took: Duration) {
        self.requests.with_label_values(&l.0).inc();
        self.durations
            .with_label_values(&l.0)
            .observe(took.as_secs_f64() * 1000.0);
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
