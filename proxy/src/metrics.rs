//! TCP metrics with Istio's names and labels, so existing dashboards and
//! PromQL work unchanged. Looked up once per connection, never per byte.

use prometheus::{IntCounterVec, Opts, Registry};

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

/// The registry and the TCP counters.
pub struct Metrics {
    /// Served on `/metrics`.
    pub registry: Registry,
    opened: IntCounterVec,
    closed: IntCounterVec,
    sent: IntCounterVec,
    received: IntCounterVec,
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
        Ok(Self {
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

    /// Text exposition.
    pub fn render(&self) -> String {
        let mut buf = String::new();
        let _ = prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut buf);
        buf
    }
}
