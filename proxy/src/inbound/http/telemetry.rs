//! The top of the inbound stack: each request counted in Istio's metrics
//! (the destination reporter) when its response ends, with what the
//! layers below noted on the response, its SERVER span reported and the
//! request logged as the workload's Telemetry says ([`crate::observe`]);
//! a request a policy refused is kept for `/config_dump` and written to
//! the access log with the policy's name whenever the log is on. The client is named by what its proxy told (`x-mesh-peer`,
//! `x-mesh-service`; a plaintext client's are dropped unread), its
//! namespace and principal by its certificate. The metric handles are
//! resolved once per connection for each kind of request.

use std::convert::Infallible;
use std::sync::Arc;

use crate::http::counted::Measure;
use crate::http::{PEER, SERVICE, Stack, service_head};
use api::peer::{Peer, ServiceRef, UNKNOWN};
use bytes::Bytes;
use hyper::Request;
use hyper::header::HeaderValue;
use tower::{Layer, Service};

use super::Origin;
use crate::http::Body;
use crate::http::stream_info::StreamInfo;
use crate::metrics::{
    ConnLabels, HandleCache, Overrides, Reporter, RequestHandles, RequestLabels, Side, Svc,
};
use crate::observe::{Attrs, Noted};
use crate::trace::Kind;
use crate::{Pod, access_log};

/// The telemetry layer.
#[derive(Clone)]
pub(crate) struct Telemetry<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// What the requests of one connection share.
struct Shared {
    pod: Arc<Pod>,
    telemetry: Arc<crate::Telemetry>,
    /// The peer's namespace and principal (from its certificate), `None`
    /// in plaintext.
    peer: Option<(String, String)>,
    /// The client's address.
    client: std::net::IpAddr,
    /// Handles by what varies between requests.
    handles: HandleCache<Key>,
}

/// Status, gRPC, flags, gRPC status, what the client's proxy told, and
/// the overrides with the values their expressions gave.
type Key = (
    u16,
    bool,
    Vec<&'static str>,
    Option<Bytes>,
    Option<HeaderValue>,
    Option<HeaderValue>,
    u64,
    Vec<String>,
);

impl<S> Telemetry<S> {
    /// Counts requests to `pod` from `origin`.
    pub fn layer(
        pod: Arc<Pod>,
        telemetry: Arc<crate::Telemetry>,
        origin: Origin,
    ) -> impl Layer<S, Service = Self> + Clone {
        let (peer, client) = match &origin {
            Origin::Peer {
                identity, client, ..
            } => (
                Some((identity.namespace().to_string(), identity.to_string())),
                *client,
            ),
            Origin::Plain { client, .. } => (None, *client),
        };
        let shared = Arc::new(Shared {
            pod,
            telemetry,
            peer,
            client,
            handles: HandleCache::default(),
        });
        tower::layer::layer_fn(move |inner| Self {
            inner,
            shared: shared.clone(),
        })
    }
}

impl Shared {
    /// The metrics of a request with `key`, as `overrides` change them.
    fn resolve(&self, key: &Key, overrides: &Overrides) -> RequestHandles {
        let (status, grpc, flags, grpc_status, told_peer, told_service, _, evaluated) = key;
        let flags = StreamInfo::flags_text(flags);
        let text = |v: &Option<HeaderValue>| {
            v.as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let mut source = Peer::decode(&text(told_peer));
        let (principal, security) = match &self.peer {
            Some((ns, principal)) => {
                source.namespace.clone_from(ns);
                (principal.as_str(), true)
            }
            None => (UNKNOWN, false),
        };
        let service = ServiceRef::decode(&text(told_service));
        let me = self.pod.me.load();
        let my_principal = self.pod.identity.id().to_string();
        let (code, grpc_status) =
            crate::metrics::labels::response(*status, *grpc, grpc_status.as_deref());
        let labels = RequestLabels {
            conn: ConnLabels {
                reporter: Reporter::Destination,
                source: Side {
                    peer: &source,
                    principal,
                },
                destination: Side {
                    peer: &me.peer,
                    principal: &my_principal,
                },
                service: service.as_ref().map_or(Svc::UNKNOWN, Svc::from),
                protocol: if *grpc { "grpc" } else { "http" },
                flags: &flags,
                mtls: security,
            },
            code: &code,
            grpc_status: &grpc_status,
        };
        self.telemetry
            .metrics
            .request_handles(&labels, overrides, evaluated)
    }
}

impl<S> Service<Request<Body>> for Telemetry<S>
where
    S: Stack,
{
    service_head!(Infallible);

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let shared = self.shared.clone();
        let told_peer = req.headers_mut().remove(PEER);
        let told_service = req.headers_mut().remove(SERVICE);
        // Only a peer proxy's word counts.
        let (told_peer, told_service) = match shared.peer {
            Some(_) => (told_peer, told_service),
            None => (None, None),
        };
        let tapped = shared.telemetry.tap.watched().then(|| {
            let told = told_peer.as_ref().and_then(|v| v.to_str().ok());
            let source = Peer::decode(told.unwrap_or_default()).workload;
            (crate::tap::Head::of(&req), source)
        });
        let noted = shared
            .telemetry
            .observe
            .load_full()
            .start(Kind::Server, &mut req);
        let (measure, req) = Measure::start(req);
        let grpc = measure.grpc();
        let inner = self.inner.call(req);
        Box::pin(async move {
            let Ok(mut resp) = inner.await;
            let info = std::mem::take(StreamInfo::of(&mut resp));
            let status = resp.status().as_u16();
            Ok(measure.finish(resp, move |took, sizes, grpc_status| {
                let s = &shared;
                let Noted {
                    observe,
                    span,
                    request,
                } = noted;
                let principal = s.peer.as_ref().map(|p| p.1.as_str());
                let attrs = Attrs {
                    request: request.as_ref(),
                    status,
                    grpc_status: grpc_status.as_deref(),
                    mtls: s.peer.is_some(),
                    source_principal: principal,
                };
                let overrides = &observe.metrics;
                let evaluated = overrides.evaluated(&attrs);
                let logged =
                    observe.log_server && observe.filter.as_ref().is_none_or(|f| f.holds(&attrs));
                let key = (
                    status,
                    grpc,
                    info.flags.clone(),
                    grpc_status,
                    told_peer,
                    told_service,
                    overrides.generation,
                    evaluated,
                );
                // This pod's SPIFFE ID as text only where it is written
                // (tap, the log), not for every request.
                let me = || s.pod.identity.id().to_string();
                if let Some((head, source)) = tapped {
                    s.telemetry.tap.publish(
                        head,
                        crate::tap::Outcome {
                            direction: "inbound",
                            status,
                            grpc_status: key.3.as_deref(),
                            took,
                            flags: info.flags(),
                            source: (&source, principal.unwrap_or(UNKNOWN)),
                            destination: (&s.pod.workload, &me()),
                            tls: s.peer.is_some(),
                        },
                    );
                }
                // The told service names the span (read only for one).
                let service = span
                    .as_ref()
                    .and(key.5.as_ref())
                    .and_then(|v| v.to_str().ok())
                    .and_then(ServiceRef::decode);
                let handles = s.handles.get(key, |key| s.resolve(key, overrides));
                handles.record(took, sizes);
                if info
                    .flags
                    .contains(&crate::http::stream_info::flags::RATE_LIMITED)
                {
                    s.telemetry.metrics.rate_limited();
                }
                let known = |p: Option<&str>| p.map(str::to_string);
                if let Some(request) = request {
                    let port = request
                        .authority
                        .rsplit_once(':')
                        .and_then(|(_, p)| p.parse().ok())
                        .unwrap_or(80);
                    let cluster = format!("inbound|{port}||");
                    if let Some(span) = span {
                        let host = service.as_ref().map_or_else(
                            || request.authority.split(':').next().unwrap_or_default(),
                            |s| s.host.as_str(),
                        );
                        let facts = crate::trace::SpanFacts {
                            me: &s.pod.me.load().peer,
                            request: &request,
                            status,
                            flags: &info.flags(),
                            sizes,
                            cluster: &cluster,
                            peer: Some(s.client),
                        };
                        span.end(
                            crate::trace::span_name(host, port),
                            facts.attributes(),
                            status,
                        );
                    }
                    if logged && info.refused.is_none() {
                        if let Some(log) = s.telemetry.access_log.get() {
                            log.log(access_log::Record {
                                request,
                                status,
                                info,
                                service: cluster.into(),
                                took,
                                sizes,
                                principals: [known(principal), Some(me())],
                            });
                        }
                        return;
                    }
                }
                if info.refused.is_some() {
                    let me = me();
                    let log = s
                        .telemetry
                        .access_log
                        .get()
                        .filter(|_| observe.log_denials())
                        .map(|l| (l, sizes, me.as_str()));
                    s.telemetry
                        .denials
                        .note(info, status, principal.unwrap_or(UNKNOWN), took, log);
                }
            }))
        })
    }
}
