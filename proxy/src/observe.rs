//! What this workload's Telemetry resources ask of its proxy
//! ([`api::telemetry`]), compiled once per change: which sides are
//! access-logged and with which filter, the tracing settings with their
//! exporter, and the metric overrides. Without a policy: the access log
//! as `MESH_ACCESS_LOG` says (requests the app sends, and refusals of
//! requests to it), no tracing, Istio's metrics unchanged.

use std::sync::Arc;

use api::proto::TelemetryPolicy;
use api::telemetry::expr::{self, Attr, Attributes, Expr, Value};

use crate::access_log;
use crate::http::Body;
use crate::metrics::overrides::Overrides;
use crate::trace::{self, Kind};

/// The compiled policy.
pub struct Observe {
    /// What it was compiled from (to tell a change).
    pub from: Option<TelemetryPolicy>,
    /// Whether requests the app sends are logged.
    pub log_client: bool,
    /// Whether requests to the app are logged (all of them; refusals
    /// are logged whenever the access log is on).
    pub log_server: bool,
    /// Only requests it holds for are logged.
    pub filter: Option<Expr>,
    /// Tracing, when on.
    pub tracing: Option<trace::Settings>,
    /// Metric overrides.
    pub metrics: Arc<Overrides>,
}

impl Observe {
    /// The defaults: the access log on the client side when `log` is.
    pub fn defaults(log: bool) -> Self {
        Self {
            from: None,
            log_client: log,
            log_server: false,
            filter: None,
            tracing: None,
            metrics: Arc::new(Overrides::default()),
        }
    }

    /// Compiles `p`; the exporter of `old` is kept when its provider is
    /// unchanged, else `start` makes one.
    pub fn compile(
        p: &TelemetryPolicy,
        default_log: bool,
        old: &Observe,
        start: impl FnOnce(api::proto::TraceProvider) -> Arc<trace::export::Exporter>,
    ) -> Self {
        let (log_client, log_server, filter) = match &p.access_log {
            Some(a) => {
                let filter = (!a.filter.is_empty())
                    .then(|| expr::parse(&a.filter))
                    .and_then(|r| {
                        r.inspect_err(|e| tracing::warn!(filter = %a.filter, error = %e, "access log filter ignored"))
                            .ok()
                    });
                (a.client, a.server, filter)
            }
            None => (default_log, false, None),
        };
        let tracing = p.tracing.as_ref().map(|t| {
            let provider = t.provider.clone().unwrap_or_default();
            let exporter = if !provider.error.is_empty() {
                tracing::warn!(provider = %provider.name, error = %provider.error, "no spans are sent");
                None
            } else {
                let kept = old
                    .tracing
                    .as_ref()
                    .and_then(|o| o.exporter.clone())
                    .filter(|e| e.provider == provider);
                Some(kept.unwrap_or_else(|| start(provider)))
            };
            trace::Settings {
                sampling: t.sampling,
                client: t.client,
                server: t.server,
                exporter,
                tags: t
                    .tags
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), trace::Tag::parse(v)?)))
                    .collect(),
            }
        });
        Self {
            from: Some(p.clone()),
            log_client,
            log_server,
            filter,
            tracing,
            metrics: Arc::new(Overrides::compile(&p.metrics)),
        }
    }

    /// Whether refused requests to the app are logged: whenever the log
    /// is on for either side.
    pub fn log_denials(&self) -> bool {
        self.log_client || self.log_server
    }

    /// Whether a request of `side` is written to the access log (before
    /// its filter).
    pub fn logs(&self, side: trace::Kind) -> bool {
        match side {
            trace::Kind::Client => self.log_client,
            trace::Kind::Server => self.log_server,
        }
    }
}

/// What a request's start noted for its end.
pub struct Noted {
    /// The policy when it started.
    pub observe: Arc<Observe>,
    /// Its span, when sampled and reported.
    pub span: Option<trace::Begun>,
    /// Its head, when something reads it at the end.
    pub request: Option<access_log::Request>,
}

impl Observe {
    /// At the start of a request of `side`: its `x-request-id` made when
    /// logged or traced, its span begun (the trace headers rewritten for
    /// the next hop), its head kept when the log, the span or a metric
    /// override reads it.
    pub fn start(self: Arc<Self>, side: Kind, req: &mut hyper::Request<Body>) -> Noted {
        let log = self.logs(side);
        if log || self.tracing.is_some() {
            trace::ensure_request_id(req.headers_mut());
        }
        let span = self
            .tracing
            .as_ref()
            .and_then(|t| t.begin(side, req.headers_mut()));
        let headers = self.metrics.reads_headers
            || (log && self.filter.as_ref().is_some_and(Expr::reads_headers));
        let request = (log || span.is_some() || self.metrics.evaluates)
            .then(|| access_log::Request::keeping(req, headers));
        Noted {
            observe: self,
            span,
            request,
        }
    }
}

/// A finished request's attributes, for expressions.
pub struct Attrs<'a> {
    /// Its head.
    pub request: Option<&'a access_log::Request>,
    /// Its status.
    pub status: u16,
    /// Its gRPC status.
    pub grpc_status: Option<&'a [u8]>,
    /// Whether over mesh mTLS.
    pub mtls: bool,
    /// The client's SPIFFE ID, when known.
    pub source_principal: Option<&'a str>,
}

fn s(v: &str) -> Value<'_> {
    Value::Str(v.into())
}

impl Attributes for Attrs<'_> {
    fn get(&self, a: &Attr) -> Value<'_> {
        let Some(r) = self.request else {
            return match a {
                Attr::Code => Value::Int(i64::from(self.status)),
                Attr::Mtls => Value::Bool(self.mtls),
                _ => Value::Absent,
            };
        };
        match a {
            Attr::Method => s(&r.method),
            Attr::Path => s(&r.path),
            Attr::UrlPath => s(r.path.split('?').next().unwrap_or_default()),
            Attr::Host => s(&r.authority),
            Attr::Scheme => Value::Str("http".into()),
            Attr::Protocol => Value::Str(r.protocol.into()),
            Attr::UserAgent => r.user_agent.as_deref().map_or(Value::Absent, s),
            Attr::Id => r.request_id.as_deref().map_or(Value::Absent, s),
            Attr::Header(h) => r
                .headers
                .as_ref()
                .and_then(|hs| hs.get(h.as_str()))
                .and_then(|v| v.to_str().ok())
                .map_or(Value::Absent, s),
            Attr::Code => Value::Int(i64::from(self.status)),
            Attr::GrpcStatus => self
                .grpc_status
                .and_then(|g| std::str::from_utf8(g).ok())
                .and_then(|g| g.parse().ok())
                .map_or(Value::Absent, Value::Int),
            Attr::Mtls => Value::Bool(self.mtls),
            Attr::SourcePrincipal => self.source_principal.map_or(Value::Absent, s),
        }
    }
}

/// Brings the telemetry of `ob` in line with `policy` (the workload's,
/// from discovery), starting an exporter that sends through `ob` when a
/// new provider needs one.
pub(crate) fn follow(ob: &Arc<crate::outbound::Outbound>, policy: Option<&TelemetryPolicy>) {
    let t = &ob.telemetry;
    let current = t.observe.load();
    if current.from.as_ref() == policy {
        return;
    }
    let next = match policy {
        Some(p) => Observe::compile(p, t.default_log, &current, |provider| {
            let pod = &ob.pod;
            let me = pod.me.load();
            let resource = vec![
                trace::export::attr(
                    "service.name",
                    format!("{}.{}", me.peer.canonical_service, me.peer.namespace),
                ),
                trace::export::attr("service.instance.id", pod.ip.to_string()),
                trace::export::attr("k8s.namespace.name", me.peer.namespace.clone()),
            ];
            trace::export::Exporter::start(
                provider,
                resource,
                t.spans.clone(),
                crate::outbound::http::collector(ob.clone()),
            )
        }),
        None => Observe::defaults(t.default_log),
    };
    tracing::info!(telemetry = ?next.from.as_ref().map(|p| &p.sources), "telemetry policy applied");
    // The families first: requests under the new overrides need their
    // added tags (one under the old ones meanwhile has them empty).
    t.metrics.reshape(&next.metrics);
    if next.log_denials() {
        t.logging();
    }
    t.observe.store(Arc::new(next));
}
