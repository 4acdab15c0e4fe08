//! Span export over OTLP, off the request path: a request's span goes to
//! a bounded queue (dropped and counted when full, never waited for); a
//! task sends them in batches, at most [`BATCH`] spans or every
//! [`FLUSH`], over gRPC (`TraceService/Export`, one unary call) or
//! HTTP/protobuf (`POST /v1/traces`), to the collector the provider names
//! through this proxy's own outbound stack ([`Send`]): so over mTLS to a
//! meshed collector, balanced over its endpoints, as Istio's sidecar
//! sends spans through its own cluster for the provider.

use std::sync::Arc;
use std::time::Duration;

use api::otlp::collector::ExportTraceServiceRequest;
use api::otlp::common::{AnyValue, InstrumentationScope, KeyValue, any_value};
use api::otlp::resource::Resource;
use api::otlp::trace::{ResourceSpans, ScopeSpans, Span};
use api::proto::TraceProvider;
use prometheus::IntCounter;
use prost::Message;
use tokio::sync::mpsc;

/// Spans waiting to be sent, at most.
pub const QUEUE: usize = 2048;

/// Spans per export, at most.
pub const BATCH: usize = 512;

/// How long a span waits for its batch to fill, at most.
pub const FLUSH: Duration = Duration::from_secs(1);

/// A string attribute.
pub fn attr(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
    }
}

/// Counters the exporters share.
#[derive(Clone)]
pub struct Counters {
    /// Spans the collector took.
    pub exported: IntCounter,
    /// Spans dropped (queue full, or the collector failed).
    pub dropped: IntCounter,
}

/// One provider's exporter.
pub struct Exporter {
    tx: mpsc::Sender<Span>,
    counters: Counters,
    /// What it was started for (a changed provider starts a new one).
    pub provider: TraceProvider,
}

impl Exporter {
    /// Starts sending to `provider` with `resource` (this proxy's
    /// `service.name` and the like).
    pub fn start(
        provider: TraceProvider,
        resource: Vec<KeyValue>,
        counters: Counters,
        send: Send,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(provider.clone(), resource, rx, counters.clone(), send));
        Arc::new(Self {
            tx,
            counters,
            provider,
        })
    }

    /// Queues `span`; drops it when the queue is full.
    pub fn send(&self, span: Span) {
        if self.tx.try_send(span).is_err() {
            self.counters.dropped.inc();
        }
    }
}

/// A boxed future.
type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + std::marker::Send>>;

/// Sends a request to the collector its URI names; its answer.
pub type Send = Arc<
    dyn Fn(
            hyper::Request<crate::http::Body>,
        ) -> BoxFuture<anyhow::Result<hyper::Response<crate::http::Body>>>
        + std::marker::Send
        + Sync,
>;

/// gRPC's path of the export call.
const GRPC_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

fn request(
    p: &TraceProvider,
    req: &ExportTraceServiceRequest,
) -> anyhow::Result<hyper::Request<crate::http::Body>> {
    let proto = req.encode_to_vec();
    let authority = format!("{}:{}", p.host, p.port);
    let mut r = hyper::Request::post(format!(
        "http://{authority}{}",
        if p.http { p.path.as_str() } else { GRPC_PATH }
    ));
    let body = if p.http {
        r = r.header(hyper::header::CONTENT_TYPE, "application/x-protobuf");
        proto
    } else {
        r = r
            .version(hyper::Version::HTTP_2)
            .header(hyper::header::CONTENT_TYPE, "application/grpc")
            .header(hyper::header::TE, "trailers");
        // One uncompressed message: flag, length, bytes.
        let mut framed = Vec::with_capacity(proto.len() + 5);
        framed.push(0);
        framed.extend_from_slice(&u32::try_from(proto.len())?.to_be_bytes());
        framed.extend_from_slice(&proto);
        framed
    };
    if !p.http {
        r = r.header(hyper::header::HOST, authority);
    }
    for (k, v) in &p.headers {
        r = r.header(k.as_str(), v.as_str());
    }
    let mut req = r.body(crate::http::full(body))?;
    // Not sampled: neither this proxy nor the collector's traces the
    // export itself (which would feed spans back forever).
    super::context::inject(
        req.headers_mut(),
        &super::context::Outgoing {
            trace_id: super::random(),
            span_id: super::random(),
            parent: None,
            sampled: false,
            incoming: None,
        },
    );
    Ok(req)
}

async fn export(
    send: &Send,
    p: &TraceProvider,
    req: &ExportTraceServiceRequest,
) -> anyhow::Result<()> {
    use http_body_util::BodyExt;
    let resp = send(request(p, req)?).await?;
    anyhow::ensure!(
        resp.status().is_success(),
        "the collector answered {}",
        resp.status()
    );
    if p.http {
        return Ok(());
    }
    let grpc_status = |h: &hyper::HeaderMap| {
        h.get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let head = grpc_status(resp.headers());
    let collected = resp.into_body().collect().await?;
    let status = head.or_else(|| collected.trailers().and_then(grpc_status));
    match status.as_deref() {
        Some("0") => Ok(()),
        other => anyhow::bail!("the collector's gRPC status is {other:?}"),
    }
}

async fn run(
    p: TraceProvider,
    resource: Vec<KeyValue>,
    mut rx: mpsc::Receiver<Span>,
    counters: Counters,
    send: Send,
) {
    let timeout = p
        .timeout
        .as_ref()
        .map_or(Duration::from_secs(5), api::routing::from_wire);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let Some(first) = rx.recv().await else { return };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + FLUSH;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(s)) => batch.push(s),
                Ok(None) | Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: resource.clone(),
                    dropped_attributes_count: 0,
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "mesh-proxy".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans: std::mem::take(&mut batch),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        match tokio::time::timeout(timeout, export(&send, &p, &req)).await {
            Ok(Ok(())) => counters.exported.inc_by(n),
            Ok(Err(e)) => {
                tracing::debug!(provider = %p.name, error = %e, "span export failed");
                counters.dropped.inc_by(n);
            }
            Err(_) => {
                tracing::debug!(provider = %p.name, "span export timed out");
                counters.dropped.inc_by(n);
            }
        }
    }
}
