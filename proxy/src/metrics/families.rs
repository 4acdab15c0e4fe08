//! Istio's ten standard metric families, by [`NAMES`] order, each with
//! Istio's labels plus the tags a Telemetry adds to it. Adding tags
//! changes a family's label names, which the `prometheus` registry
//! refuses for a name it has seen: so these families live outside it,
//! gathered beside it ([`Families::gather`]), and are made anew when the
//! tags change (their series start again from zero, which `rate()` takes
//! as a counter reset).

use prometheus::core::Collector;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

use super::labels::{CONN, REQUEST};
use super::overrides::NAMES;

/// One family.
#[derive(Clone)]
pub enum Family {
    /// A counter.
    Counter(IntCounterVec),
    /// A histogram.
    Histogram(HistogramVec),
}

impl Family {
    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        match self {
            Self::Counter(c) => c.collect(),
            Self::Histogram(h) => h.collect(),
        }
    }
}

/// Name and help of each family, by [`NAMES`] order; the first six are
/// request metrics (histograms at 1..=3), the last four TCP ones.
const FAMILIES: [(&str, &str); 10] = [
    ("istio_requests_total", "Requests"),
    ("istio_request_duration_milliseconds", "Request duration"),
    ("istio_request_bytes", "Request headers and body size"),
    ("istio_response_bytes", "Response headers and body size"),
    (
        "istio_request_messages_total",
        "gRPC messages sent by the client",
    ),
    (
        "istio_response_messages_total",
        "gRPC messages sent by the server",
    ),
    (
        "istio_tcp_connections_opened_total",
        "TCP connections opened",
    ),
    (
        "istio_tcp_connections_closed_total",
        "TCP connections closed",
    ),
    (
        "istio_tcp_sent_bytes_total",
        "Bytes sent to the destination",
    ),
    (
        "istio_tcp_received_bytes_total",
        "Bytes received from the destination",
    ),
];

/// The families, with the tags each has beyond Istio's labels.
pub struct Families {
    /// By [`NAMES`] order.
    pub all: Vec<Family>,
    /// Added tag names, by family.
    pub extra: [Vec<String>; 10],
}

/// The standard label names of family `m`.
pub fn standard(m: usize) -> &'static [&'static str] {
    if m < 6 { &REQUEST } else { &CONN }
}

impl Families {
    /// Makes the families with `extra` tags.
    pub fn new(extra: [Vec<String>; 10]) -> anyhow::Result<Self> {
        debug_assert_eq!(FAMILIES.len(), NAMES.len());
        let mut all = Vec::with_capacity(FAMILIES.len());
        for (m, (name, help)) in FAMILIES.iter().enumerate() {
            let mut names: Vec<&str> = standard(m).to_vec();
            names.extend(extra[m].iter().map(String::as_str));
            let family = if (1..=3).contains(&m) {
                let opts = HistogramOpts::new(*name, *help).buckets(super::BUCKETS.to_vec());
                Family::Histogram(HistogramVec::new(opts, &names)?)
            } else {
                Family::Counter(IntCounterVec::new(Opts::new(*name, *help), &names)?)
            };
            all.push(family);
        }
        Ok(Self { all, extra })
    }

    /// Their samples, for the exposition (empty families left out, as
    /// the registry leaves them out).
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.all
            .iter()
            .flat_map(Family::collect)
            .filter(|f| !f.get_metric().is_empty())
            .collect()
    }

    /// The counter of family `m` for `values` (`None`: not a counter, or
    /// the values do not fit its labels: a request that began under other
    /// overrides).
    pub fn counter(&self, m: usize, values: &[&str]) -> Option<prometheus::IntCounter> {
        match &self.all[m] {
            Family::Counter(c) => c.get_metric_with_label_values(values).ok(),
            Family::Histogram(_) => None,
        }
    }

    /// The histogram of family `m` for `values`, as [`Self::counter`].
    pub fn histogram(&self, m: usize, values: &[&str]) -> Option<prometheus::Histogram> {
        match &self.all[m] {
            Family::Histogram(h) => h.get_metric_with_label_values(values).ok(),
            Family::Counter(_) => None,
        }
    }
}
