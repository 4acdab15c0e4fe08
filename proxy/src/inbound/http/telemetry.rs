//! The top of the inbound stack: each request counted in Istio's metrics
//! (the destination reporter) when its response ends, with what the
//! layers below noted on the response; a request a policy refused is kept
//! for `/config_dump` and written to the access log with the policy's
//! name. The client is named by what its proxy told (`x-mesh-peer`,
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
use crate::Pod;
use crate::http::Body;
use crate::http::stream_info::StreamInfo;
use crate::metrics::{ConnLabels, HandleCache, Reporter, RequestHandles, RequestLabels, Side, Svc};

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
    /// Handles by what varies between requests.
    handles: HandleCache<Key>,
}

/// Status, gRPC, flags, gRPC status, and what the client's proxy told.
type Key = (
    u16,
    bool,
    Vec<&'static str>,
    Option<Bytes>,
    Option<HeaderValue>,
    Option<HeaderValue>,
);

impl<S> Telemetry<S> {
    /// Counts requests to `pod` from `origin`.
    pub fn layer(
        pod: Arc<Pod>,
        telemetry: Arc<crate::Telemetry>,
        origin: Origin,
    ) -> impl Layer<S, Service = Self> + Clone {
        let peer = match &origin {
            Origin::Peer { identity, .. } => {
                Some((identity.namespace().to_string(), identity.to_string()))
            }
            Origin::Plain { .. } => None,
        };
        let shared = Arc::new(Shared {
            pod,
            telemetry,
            peer,
            handles: HandleCache::default(),
        });
        tower::layer::layer_fn(move |inner| Self {
            inner,
            shared: shared.clone(),
        })
    }
}

impl Shared {
    /// The metrics of a request with `key`.
    fn resolve(&self, key: &Key) -> RequestHandles {
        let (status, grpc, flags, grpc_status, told_peer, told_service) = key;
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
        self.telemetry.metrics.request_handles(&RequestLabels {
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
        let (measure, req) = Measure::start(req);
        let grpc = measure.grpc();
        let inner = self.inner.call(req);
        Box::pin(async move {
            let Ok(mut resp) = inner.await;
            let info = std::mem::take(StreamInfo::of(&mut resp));
            let status = resp.status().as_u16();
            Ok(measure.finish(resp, move |took, sizes, grpc_status| {
                let s = &shared;
                let key = (
                    status,
                    grpc,
                    info.flags.clone(),
                    grpc_status,
                    told_peer,
                    told_service,
                );
                if let Some((head, source)) = tapped {
                    let principal = s.peer.as_ref().map_or(UNKNOWN, |p| p.1.as_str());
                    let me = s.pod.identity.id().to_string();
                    s.telemetry.tap.publish(
                        head,
                        crate::tap::Outcome {
                            direction: "inbound",
                            status,
                            grpc_status: key.3.as_deref(),
                            took,
                            flags: info.flags(),
                            source: (&source, principal),
                            destination: (&s.pod.workload, &me),
                            tls: s.peer.is_some(),
                        },
                    );
                }
                let handles = s.handles.get(key, |key| s.resolve(key));
                handles.record(took, sizes);
                if info
                    .flags
                    .contains(&crate::http::stream_info::flags::RATE_LIMITED)
                {
                    s.telemetry.metrics.rate_limited();
                }
                if info.refused.is_some() {
                    let log = s.telemetry.access_log.as_ref();
                    let principal = s.peer.as_ref().map_or(UNKNOWN, |p| p.1.as_str());
                    s.telemetry.denials.note(info, status, principal, took, log);
                }
            }))
        })
    }
}
