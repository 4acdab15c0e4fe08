//! Istio's standard metrics, with Istio's names, types, buckets and
//! labels ([`labels`]), so that existing dashboards and PromQL work
//! unchanged, and the proxy's own health. Label values are resolved once
//! per connection for each kind of request ([`HandleCache`]), never per
//! byte, and the number of series is bounded ([`MAX_SERIES`]).

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use prometheus::{Histogram, IntCounter, IntCounterVec, Opts, Registry};

mod families;
pub mod labels;
pub mod overrides;
mod process;

pub use labels::{ConnLabels, Reporter, RequestLabels, Side, Svc};
pub use overrides::Overrides;
pub use process::process;

/// Envoy's default buckets, which Istio keeps for request durations (in
/// milliseconds) and request and response sizes (in bytes).
const BUCKETS: &[f64] = &[
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Distinct label sets the request and TCP metrics keep, together; past
/// it, new sets are counted in one `overflow` series per reporter (and
/// in `mesh_metric_series_overflow_total`), so that a peer sending ever
/// new workload names or a client ever new status codes cannot grow the
/// proxy's memory or a Prometheus without bound.
pub const MAX_SERIES: usize = 2000;

/// What every label but `reporter` says past [`MAX_SERIES`].
pub const OVERFLOW: &str = "overflow";

/// The registry and the metrics.
pub struct Metrics {
    /// Served on `/metrics`.
    pub registry: Registry,
    routes: IntCounterVec,
    route_durations: prometheus::HistogramVec,
    /// Istio's standard families, as the overrides shape them.
    families: arc_swap::ArcSwap<families::Families>,
    /// Held while the families are made anew.
    reshaping: Mutex<()>,
    ejections: IntCounterVec,
    refused: IntCounterVec,
    denied: IntCounterVec,
    unauthenticated: IntCounterVec,
    retries: IntCounterVec,
    rate_limited: IntCounter,
    overflow: IntCounter,
    series: Mutex<HashSet<u64>>,
    /// Access-log records dropped because the writer fell behind.
    pub access_log_dropped: IntCounter,
    spans_exported: IntCounter,
    spans_dropped: IntCounter,
}

/// The metrics of one set of request label values, resolved once
/// (`None`: switched off by a Telemetry override).
#[derive(Clone)]
pub struct RequestHandles {
    requests: Option<IntCounter>,
    duration: Option<Histogram>,
    request_bytes: Option<Histogram>,
    response_bytes: Option<Histogram>,
    request_messages: Option<IntCounter>,
    response_messages: Option<IntCounter>,
    /// The route's request count and duration (outbound, when routed).
    route: Option<(IntCounter, Histogram)>,
}

/// What one finished request measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sizes {
    /// Request headers and body, in bytes.
    pub request_bytes: u64,
    /// Response headers and body, in bytes.
    pub response_bytes: u64,
    /// gRPC messages each way (`None` when not gRPC).
    pub messages: Option<(u64, u64)>,
}

impl RequestHandles {
    /// Counts a finished request.
    pub fn record(&self, took: Duration, sizes: Sizes) {
        let observe = |h: &Option<Histogram>, v: f64| h.iter().for_each(|h| h.observe(v));
        let add = |c: &Option<IntCounter>, v: u64| c.iter().for_each(|c| c.inc_by(v));
        let ms = took.as_secs_f64() * 1000.0;
        add(&self.requests, 1);
        observe(&self.duration, ms);
        observe(&self.request_bytes, sizes.request_bytes as f64);
        observe(&self.response_bytes, sizes.response_bytes as f64);
        if let Some((req, resp)) = sizes.messages {
            add(&self.request_messages, req);
            add(&self.response_messages, resp);
        }
        if let Some((count, duration)) = &self.route {
            count.inc();
            duration.observe(ms);
        }
    }

    /// These handles, also counting in the route's metrics.
    pub fn with_route(mut self, route: (IntCounter, Histogram)) -> Self {
        self.route = Some(route);
        self
    }
}

/// Request handles by the label values that change from request to
/// request on one connection (the others are fixed by the connection), so
/// that a request like an earlier one builds no label strings. Bounded:
/// past [`HandleCache::MAX`] kinds, handles are resolved per request.
pub struct HandleCache<K> {
    map: Mutex<HashMap<K, RequestHandles>>,
}

impl<K: Hash + Eq> Default for HandleCache<K> {
    fn default() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq> HandleCache<K> {
    /// Kinds of requests one connection keeps handles for.
    pub const MAX: usize = 64;

    /// The handles for `key`, resolved by `resolve` the first time.
    pub fn get(&self, key: K, resolve: impl FnOnce(&K) -> RequestHandles) -> RequestHandles {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = map.get(&key) {
            return h.clone();
        }
        let h = resolve(&key);
        if map.len() < Self::MAX {
            map.insert(key, h.clone());
        }
        h
    }
}

/// The label values of family `m` for reporter `r`: Istio's (`values`),
/// an empty one for each tag the family adds, then the overrides of `o`
/// applied (`evaluated`: [`Overrides::evaluated`] for the request).
fn shaped<'a>(
    f: &families::Families,
    o: &Overrides,
    m: usize,
    r: usize,
    values: &[&'a str],
    evaluated: &'a [String],
) -> Vec<&'a str> {
    let mut v = values.to_vec();
    v.resize(values.len() + f.extra[m].len(), "");
    o.apply(m, r, &mut v, evaluated, &f.extra[m]);
    v
}

fn register<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    c: T,
) -> anyhow::Result<T> {
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    /// Registers the metrics.
    pub fn new() -> anyhow::Result<Self> {
        let registry = Registry::new();
        let r = &registry;
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(r, IntCounterVec::new(Opts::new(name, help), labels)?)
        };
        Ok(Self {
            families: arc_swap::ArcSwap::from_pointee(families::Families::new(Default::default())?),
            reshaping: Mutex::new(()),
            routes: counter(
                "mesh_route_requests_total",
                "Requests sent, by destination service and route, classified success or failure (5xx)",
                &["destination_service", "route", "classification"],
            )?,
            route_durations: register(
                r,
                prometheus::HistogramVec::new(
                    prometheus::HistogramOpts::new(
                        "mesh_route_request_duration_milliseconds",
                        "Request duration, by destination service and route",
                    )
                    .buckets(BUCKETS.to_vec()),
                    &["destination_service", "route"],
                )?,
            )?,
            ejections: counter(
                "mesh_outlier_ejections_total",
                "Endpoints ejected by outlier detection",
                &["destination_service"],
            )?,
            refused: counter(
                "mesh_inbound_connections_refused_total",
                "Inbound connections closed before any byte reached the app, by reason",
                &["reason", "destination_port"],
            )?,
            denied: counter(
                "mesh_authorization_denied_total",
                "Requests and connections denied by AuthorizationPolicies, by deciding policy",
                &["policy"],
            )?,
            unauthenticated: counter(
                "mesh_jwt_refused_total",
                "Requests refused with 401 by RequestAuthentication, by reason",
                &["reason"],
            )?,
            retries: counter(
                "mesh_retries_total",
                "Tries after the first, by destination service",
                &["destination_service"],
            )?,
            rate_limited: register(
                r,
                IntCounter::new(
                    "mesh_rate_limited_total",
                    "Requests refused with 429 by a local rate limit",
                )?,
            )?,
            overflow: register(
                r,
                IntCounter::new(
                    "mesh_metric_series_overflow_total",
                    "Label sets counted in the overflow series because the proxy keeps no more",
                )?,
            )?,
            access_log_dropped: register(
                r,
                IntCounter::new(
                    "mesh_access_log_dropped_total",
                    "Access-log records dropped because the writer fell behind",
                )?,
            )?,
            spans_exported: register(
                r,
                IntCounter::new(
                    "mesh_trace_spans_exported_total",
                    "Spans the tracing provider accepted",
                )?,
            )?,
            spans_dropped: register(
                r,
                IntCounter::new(
                    "mesh_trace_spans_dropped_total",
                    "Spans dropped: the export queue was full, or the provider failed or did not answer",
                )?,
            )?,
            series: Mutex::new(HashSet::new()),
            registry,
        })
    }

    /// Whether a label set may have a series of its own (known, or room
    /// for it); a refusal is counted.
    fn admit(&self, values: &[&str]) -> bool {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        values.hash(&mut h);
        let key = h.finish();
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        if series.contains(&key) {
            return true;
        }
        if series.len() < MAX_SERIES {
            series.insert(key);
            return true;
        }
        self.overflow.inc();
        false
    }

    /// The metrics of requests with labels `l`, as `o` overrides them
    /// (`evaluated`: [`Overrides::evaluated`] for the request).
    pub fn request_handles(
        &self,
        l: &RequestLabels<'_>,
        o: &Overrides,
        evaluated: &[String],
    ) -> RequestHandles {
        let mut values = l.values();
        if !self.admit(&values) {
            values[1..].fill(OVERFLOW);
        }
        let r = l.conn.reporter.index();
        let f = self.families.load();
        let for_metric = |m: usize| shaped(&f, o, m, r, &values, evaluated);
        let counter = |m: usize| {
            o.enabled(m, r)
                .then(|| f.counter(m, &for_metric(m)))
                .flatten()
        };
        let histogram = |m: usize| {
            o.enabled(m, r)
                .then(|| f.histogram(m, &for_metric(m)))
                .flatten()
        };
        RequestHandles {
            requests: counter(0),
            duration: histogram(1),
            request_bytes: histogram(2),
            response_bytes: histogram(3),
            request_messages: counter(4),
            response_messages: counter(5),
            route: None,
        }
    }

    /// The route metrics of requests to `service` by `route` (unnamed:
    /// `default`) answered `status`: Linkerd's per-route view, which
    /// Istio's metrics lack. Routes come from the configuration, so their
    /// number is bounded by it.
    pub fn route_handles(
        &self,
        service: &str,
        route: Option<&str>,
        status: u16,
    ) -> (IntCounter, Histogram) {
        let route = route.unwrap_or("default");
        let class = if status >= 500 { "failure" } else { "success" };
        (
            self.routes.with_label_values(&[service, route, class]),
            self.route_durations.with_label_values(&[service, route]),
        )
    }

    /// Makes the standard families anew when `o` adds other tags than
    /// theirs.
    pub fn reshape(&self, o: &Overrides) {
        let extra = o.extra();
        let _one = self
            .reshaping
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.families.load();
        if current.extra == extra {
            return;
        }
        match families::Families::new(extra) {
            Ok(f) => self.families.store(std::sync::Arc::new(f)),
            Err(e) => tracing::error!(error = %e, "metric families not remade"),
        }
    }

    fn conn_values<'a>(&self, l: &ConnLabels<'a>) -> [&'a str; 23] {
        let mut values = l.values();
        if !self.admit(&values) {
            values[1..].fill(OVERFLOW);
        }
        values
    }

    /// Counts `m` (a TCP metric) by `by` with labels `v`, as `o` says.
    fn conn_metric(&self, o: &Overrides, r: usize, m: usize, v: &[&str; 23], by: u64) {
        if !o.enabled(m, r) {
            return;
        }
        let f = self.families.load();
        let counter = if o.changes_labels() || !f.extra[m].is_empty() {
            f.counter(m, &shaped(&f, o, m, r, v, &[]))
        } else {
            f.counter(m, v)
        };
        if let Some(c) = counter {
            c.inc_by(by);
        }
    }

    /// Counts an open.
    pub fn opened(&self, l: &ConnLabels<'_>, o: &Overrides) {
        let v = self.conn_values(l);
        self.conn_metric(o, l.reporter.index(), 6, &v, 1);
    }

    /// Counts a close with the bytes each way.
    pub fn closed(&self, l: &ConnLabels<'_>, o: &Overrides, sent: u64, received: u64) {
        let v = self.conn_values(l);
        let r = l.reporter.index();
        self.conn_metric(o, r, 7, &v, 1);
        self.conn_metric(o, r, 8, &v, sent);
        self.conn_metric(o, r, 9, &v, received);
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

    /// Counts the tries of a request to `service` after its first.
    pub fn retried(&self, service: &str, attempts: u32) {
        if attempts > 1 {
            self.retries
                .with_label_values(&[service])
                .inc_by(u64::from(attempts - 1));
        }
    }

    /// Counts a request refused by a local rate limit.
    pub fn rate_limited(&self) {
        self.rate_limited.inc();
    }

    /// Counts an ejection from `host`.
    pub fn ejected(&self, host: &str) {
        self.ejections.with_label_values(&[host]).inc();
    }

    /// The span export counters.
    pub fn span_counters(&self) -> crate::trace::export::Counters {
        crate::trace::export::Counters {
            exported: self.spans_exported.clone(),
            dropped: self.spans_dropped.clone(),
        }
    }

    /// Text exposition.
    pub fn render(&self) -> String {
        let mut buf = String::new();
        let mut all = self.registry.gather();
        all.extend(self.families.load().gather());
        all.sort_by(|a, b| a.name().cmp(b.name()));
        let _ = prometheus::TextEncoder::new().encode_utf8(&all, &mut buf);
        buf
    }
}

#[cfg(test)]
mod tests;
