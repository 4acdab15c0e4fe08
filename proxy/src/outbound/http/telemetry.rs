//! The top of the outbound stack: each request counted in Istio's metrics
//! (the source reporter), its CLIENT span reported and the request handed
//! to the access log when its response ends, with what the layers below
//! noted on the response ([`StreamInfo`]), as the workload's Telemetry
//! says ([`crate::observe`]); and each request tells a peer proxy who
//! sends it and for which service (`x-mesh-peer`, `x-mesh-service`), for
//! the peer's metrics. The metric handles are resolved once per connection for each
//! kind of answer (endpoint, status, protocol, flags, gRPC status), not
//! from label strings per request.

use std::convert::Infallible;
use std::sync::Arc;

use crate::http::counted::Measure;
use crate::http::stream_info::EndpointRef;
use crate::http::{PEER, SERVICE, Stack, service_head};
use api::peer::{Peer, ServiceRef, UNKNOWN};
use bytes::Bytes;
use hyper::Request;
use hyper::header::HeaderValue;
use tower::{Layer, Service};

use super::StreamInfo;
use crate::discovery::Target;
use crate::http::Body;
use crate::metrics::{ConnLabels, HandleCache, Reporter, RequestLabels, Side, Svc};
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
    /// The destination service, as metrics name it.
    service: ServiceRef,
    /// Its `x-mesh-service` value.
    service_header: HeaderValue,
    /// The access log's name for it.
    service_name: Arc<str>,
    /// Envoy's name for its cluster, and the span's name.
    cluster: String,
    span_name: String,
    /// This pod's SPIFFE ID, as text.
    principal: String,
    /// Handles by (endpoint, status, gRPC, flags, gRPC status).
    handles: HandleCache<Key>,
}

/// What varies between the requests of one connection, for metrics:
/// the endpoint, status, gRPC, flags, gRPC status, the overrides with the
/// values their expressions gave, and the route.
type Key = (
    Option<std::net::IpAddr>,
    u16,
    bool,
    Vec<&'static str>,
    Option<Bytes>,
    u64,
    Vec<String>,
    Option<String>,
);

impl<S> Telemetry<S> {
    /// Counts and logs requests to `target` from `pod`.
    pub fn layer(
        pod: Arc<Pod>,
        telemetry: Arc<crate::Telemetry>,
        target: Arc<Target>,
        port: u16,
    ) -> impl Layer<S, Service = Self> + Clone {
        let service = target.service_ref();
        let shared = Arc::new(Shared {
            cluster: format!("outbound|{port}||{}", service.host),
            span_name: crate::trace::span_name(&service.host, port),
            service_header: HeaderValue::from_str(&service.encode())
                .unwrap_or_else(|_| HeaderValue::from_static("s=unknown")),
            service_name: service.host.as_str().into(),
            principal: pod.identity.id().to_string(),
            service,
            pod,
            telemetry,
            handles: HandleCache::default(),
        });
        tower::layer::layer_fn(move |inner| Self {
            inner,
            shared: shared.clone(),
        })
    }
}

impl<S> Service<Request<Body>> for Telemetry<S>
where
    S: Stack,
{
    service_head!(Infallible);

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let shared = self.shared.clone();
        let noted = shared
            .telemetry
            .observe
            .load_full()
            .start(Kind::Client, &mut req);
        let (measure, mut req) = Measure::start(req);
        let tapped = shared
            .telemetry
            .tap
            .watched()
            .then(|| crate::tap::Head::of(&req));
        let me = shared.pod.me.load_full();
        req.headers_mut().insert(PEER, me.header.clone());
        req.headers_mut()
            .insert(SERVICE, shared.service_header.clone());
        let inner = self.inner.call(req);
        Box::pin(async move {
            let Ok(mut resp) = inner.await;
            let info = std::mem::take(StreamInfo::of(&mut resp));
            let status = resp.status().as_u16();
            let grpc = measure.grpc();
            Ok(measure.finish(resp, move |took, sizes, grpc_status| {
                let s = &shared;
                let Noted {
                    observe,
                    span,
                    request,
                } = noted;
                let used = info.upstream.as_ref().map(EndpointRef::workload);
                // As text only where it is written (a new kind of
                // request, tap, the log), not for every request.
                let dst_id = used.and_then(|w| w.identity.as_ref());
                let dst_principal = || dst_id.map(ToString::to_string);
                let attrs = Attrs {
                    request: request.as_ref(),
                    status,
                    grpc_status: grpc_status.as_deref(),
                    mtls: dst_id.is_some(),
                    source_principal: Some(&s.principal),
                };
                let overrides = &observe.metrics;
                let evaluated = overrides.evaluated(&attrs);
                let key = (
                    used.map(|w| w.address),
                    status,
                    grpc,
                    info.flags.clone(),
                    grpc_status.clone(),
                    overrides.generation,
                    evaluated,
                    info.route.clone(),
                );
                s.handles
                    .get(key, |key| {
                        let dst = used.map_or_else(Peer::unknown, Peer::of);
                        let dst_principal = dst_principal();
                        let flags = info.flags();
                        let (code, grpc_status) =
                            crate::metrics::labels::response(status, grpc, grpc_status.as_deref());
                        s.telemetry
                            .metrics
                            .request_handles(
                                &RequestLabels {
                                    conn: ConnLabels {
                                        reporter: Reporter::Source,
                                        source: Side {
                                            peer: &me.peer,
                                            principal: &s.principal,
                                        },
                                        destination: Side {
                                            peer: &dst,
                                            principal: dst_principal.as_deref().unwrap_or(UNKNOWN),
                                        },
                                        service: Svc::from(&s.service),
                                        protocol: if grpc { "grpc" } else { "http" },
                                        flags: &flags,
                                        mtls: dst_principal.is_some(),
                                    },
                                    code: &code,
                                    grpc_status: &grpc_status,
                                },
                                overrides,
                                &key.6,
                            )
                            .with_route(s.telemetry.metrics.route_handles(
                                &s.service.host,
                                key.7.as_deref(),
                                status,
                            ))
                    })
                    .record(took, sizes);
                s.telemetry.metrics.retried(&s.service.host, info.attempts);
                if let Some(head) = tapped {
                    let dst = used.map_or(UNKNOWN, |w| w.workload.as_str());
                    let dst_principal = dst_principal();
                    s.telemetry.tap.publish(
                        head,
                        crate::tap::Outcome {
                            direction: "outbound",
                            status,
                            grpc_status: grpc_status.as_deref(),
                            took,
                            flags: info.flags(),
                            source: (&s.pod.workload, &s.principal),
                            destination: (dst, dst_principal.as_deref().unwrap_or(UNKNOWN)),
                            tls: dst_principal.is_some(),
                        },
                    );
                }
                let logged =
                    observe.log_client && observe.filter.as_ref().is_none_or(|f| f.holds(&attrs));
                let Some(request) = request else { return };
                if let Some(span) = span {
                    let facts = crate::trace::SpanFacts {
                        me: &me.peer,
                        request: &request,
                        status,
                        flags: &info.flags(),
                        sizes,
                        cluster: &s.cluster,
                        peer: used.map(|w| w.address),
                    };
                    span.end(s.span_name.clone(), facts.attributes(), status);
                }
                if let (true, Some(log)) = (logged, s.telemetry.access_log.get()) {
                    let principals = [Some(s.principal.clone()), dst_principal()];
                    log.log(access_log::Record {
                        request,
                        status,
                        info,
                        service: s.service_name.clone(),
                        took,
                        sizes,
                        principals,
                    });
                }
            }))
        })
    }
}
