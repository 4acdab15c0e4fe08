//! Distributed tracing as Istio's sidecars do it: the trace context is
//! read from the request (W3C or B3, [`context`]) or started on the first
//! hop, the sampling decision is the caller's when it made one and else
//! the workload's `randomSamplingPercentage`, and each proxy reports one
//! span per request (SERVER inbound, CLIENT outbound) with Istio's span
//! attributes, exported over OTLP off the request path ([`export`]).
//! Nothing of this runs unless a Telemetry (or the mesh's default
//! provider) turns tracing on for the workload.

use std::sync::Arc;
use std::time::SystemTime;

use api::otlp::common::KeyValue;
use api::otlp::trace::{Span, Status, span, status};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};

pub mod context;
pub mod export;

/// Envoy's request id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A workload's tracing.
pub struct Settings {
    /// Percent of new traces sampled.
    pub sampling: f64,
    /// Whether outbound (client) spans are reported.
    pub client: bool,
    /// Whether inbound (server) spans are reported.
    pub server: bool,
    /// Where spans go (`None`: the provider is unusable, said once).
    pub exporter: Option<Arc<export::Exporter>>,
    /// Custom tags: name and where the value comes from.
    pub tags: Vec<(String, Tag)>,
}

/// Where a custom tag's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tag {
    /// A fixed value (literals and the proxy's environment, read once).
    Value(String),
    /// A request header, with a default.
    Header(HeaderName, String),
}

impl Tag {
    /// Reads the controller's form (`literal:V`, `env:NAME=DEFAULT`,
    /// `header:NAME=DEFAULT`).
    pub fn parse(s: &str) -> Option<Self> {
        let (kind, rest) = s.split_once(':')?;
        Some(match kind {
            "literal" => Self::Value(rest.to_string()),
            "env" => {
                let (name, default) = rest.split_once('=').unwrap_or((rest, ""));
                Self::Value(std::env::var(name).unwrap_or_else(|_| default.to_string()))
            }
            "header" => {
                let (name, default) = rest.split_once('=').unwrap_or((rest, ""));
                Self::Header(HeaderName::try_from(name).ok()?, default.to_string())
            }
            _ => return None,
        })
    }
}

/// Which side a span is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The app's request to another (outbound).
    Client,
    /// A request to the app (inbound).
    Server,
}

/// A span begun: what its end needs.
pub struct Begun {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    state: String,
    start: SystemTime,
    exporter: Arc<export::Exporter>,
    tags: Vec<KeyValue>,
    max_tag_length: usize,
    kind: Kind,
}

/// Random bytes, never all zero (an invalid trace or span id).
fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    loop {
        for b in &mut out {
            *b = fastrand::u8(..);
        }
        if out != [0u8; N] {
            return out;
        }
    }
}

/// A fresh `x-request-id` (a random UUID, as Envoy makes).
pub fn request_id() -> HeaderValue {
    let mut b: [u8; 16] = random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = context::to_hex(&b);
    let text = format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    );
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// Gives the request an `x-request-id` when it has none (Envoy's
/// `generate_request_id`).
pub fn ensure_request_id(h: &mut HeaderMap) {
    if !h.contains_key(REQUEST_ID) {
        h.insert(REQUEST_ID, request_id());
    }
}

impl Settings {
    /// At the request's start: the trace context read (or begun), our
    /// span written into `h` for the next hop; `Some` when the span is
    /// sampled and reported.
    pub fn begin(&self, kind: Kind, h: &mut HeaderMap) -> Option<Begun> {
        let (incoming, decided) = context::extract(h);
        let sampled = decided.unwrap_or_else(|| fastrand::f64() * 100.0 < self.sampling);
        let span_id: [u8; 8] = random();
        let trace_id = incoming.as_ref().map_or_else(random, |i| i.trace_id);
        let parent = incoming.as_ref().map(|i| i.parent);
        context::inject(
            h,
            &context::Outgoing {
                trace_id,
                span_id,
                parent,
                sampled,
                incoming: incoming.as_ref(),
            },
        );
        let report = match kind {
            Kind::Client => self.client,
            Kind::Server => self.server,
        };
        let exporter = self.exporter.clone().filter(|_| sampled && report)?;
        let max = exporter.provider.max_tag_length as usize;
        let tags = self
            .tags
            .iter()
            .map(|(name, t)| {
                let v = match t {
                    Tag::Value(v) => v.clone(),
                    Tag::Header(n, default) => h
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map_or_else(|| default.clone(), str::to_string),
                };
                export::attr(name, v)
            })
            .collect();
        Some(Begun {
            trace_id,
            span_id,
            parent,
            state: incoming
                .and_then(|i| i.state)
                .and_then(|s| s.to_str().ok().map(str::to_string))
                .unwrap_or_default(),
            start: SystemTime::now(),
            exporter,
            tags,
            max_tag_length: max,
            kind,
        })
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Begun {
    /// Ends the span: named `name`, with `attributes` (Istio's), an error
    /// when `status` is 5xx (or the request failed); queued for export.
    pub fn end(self, name: String, mut attributes: Vec<KeyValue>, status: u16) {
        let error = status >= 500 || status == 0;
        if error {
            attributes.push(export::attr("error", "true"));
        }
        attributes.extend(self.tags);
        for a in &mut attributes {
            if let Some(api::otlp::common::AnyValue {
                value: Some(api::otlp::common::any_value::Value::StringValue(s)),
            }) = &mut a.value
                && s.len() > self.max_tag_length
            {
                let mut cut = self.max_tag_length;
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                s.truncate(cut);
            }
        }
        let span = Span {
            trace_id: self.trace_id.to_vec(),
            span_id: self.span_id.to_vec(),
            trace_state: self.state,
            parent_span_id: self.parent.map(|p| p.to_vec()).unwrap_or_default(),
            flags: 1,
            name,
            kind: match self.kind {
                Kind::Client => span::SpanKind::Client,
                Kind::Server => span::SpanKind::Server,
            } as i32,
            start_time_unix_nano: nanos(self.start),
            end_time_unix_nano: nanos(SystemTime::now()),
            attributes,
            status: Some(Status {
                message: String::new(),
                code: if error {
                    status::StatusCode::Error
                } else {
                    status::StatusCode::Unset
                } as i32,
            }),
            ..Span::default()
        };
        self.exporter.send(span);
    }
}

/// What Istio's sidecars put on a span, beside the custom tags.
pub struct SpanFacts<'a> {
    /// The reporting workload.
    pub me: &'a api::peer::Peer,
    /// The request's head.
    pub request: &'a crate::access_log::Request,
    /// Its status.
    pub status: u16,
    /// Envoy's response flags.
    pub flags: &'a str,
    /// Its sizes.
    pub sizes: crate::metrics::Sizes,
    /// Envoy's cluster name (`outbound|8080||orders.shop.svc.cluster.local`).
    pub cluster: &'a str,
    /// The address of the other side.
    pub peer: Option<std::net::IpAddr>,
}

impl SpanFacts<'_> {
    /// Istio's span attributes.
    pub fn attributes(&self) -> Vec<KeyValue> {
        use export::attr;
        let r = self.request;
        let mut out = vec![
            attr("istio.canonical_service", self.me.canonical_service.clone()),
            attr(
                "istio.canonical_revision",
                self.me.canonical_revision.clone(),
            ),
            attr("istio.namespace", self.me.namespace.clone()),
            attr("istio.mesh_id", "cluster.local"),
            attr("component", "proxy"),
            attr("http.method", r.method.clone()),
            attr("http.url", format!("http://{}{}", r.authority, r.path)),
            attr("http.protocol", r.protocol),
            attr("http.status_code", self.status.to_string()),
            attr("response_flags", self.flags),
            attr("request_size", self.sizes.request_bytes.to_string()),
            attr("response_size", self.sizes.response_bytes.to_string()),
            attr("upstream_cluster", self.cluster),
            attr("upstream_cluster.name", self.cluster),
            attr("downstream_cluster", "-"),
            attr("user_agent", r.user_agent.as_deref().unwrap_or("-")),
            attr("guid:x-request-id", r.request_id.as_deref().unwrap_or("-")),
        ];
        if let Some(p) = self.peer {
            out.push(attr("peer.address", p.to_string()));
        }
        out
    }
}

/// Envoy's span name for `host` and `port` (its default decorator).
pub fn span_name(host: &str, port: u16) -> String {
    format!("{host}:{port}/*")
}
