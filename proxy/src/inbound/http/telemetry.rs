//! The top of the inbound stack: each request counted in Istio's metrics
//! (the destination reporter), with what the layers below noted on the
//! response; a request a policy refused is kept for `/config_dump` and
//! written to the access log with the policy's name. The metric handles
//! are resolved once per connection for each kind of answer (status,
//! protocol, flags).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use crate::http::{Stack, service_head};
use hyper::Request;
use tower::{Layer, Service};

use super::Origin;
use crate::Pod;
use crate::http::stream_info::StreamInfo;
use crate::http::{Body, is_grpc};
use crate::metrics::{HandleCache, RequestHandles, RequestLabels};

/// The telemetry layer.
#[derive(Clone)]
pub(crate) struct Telemetry<S> {
    inner: S,
    pod: Arc<Pod>,
    telemetry: Arc<crate::Telemetry>,
    /// The peer's namespace and principal, and the connection's security.
    peer: Arc<(String, String, &'static str)>,
    /// Handles by (status, gRPC, flags).
    handles: Arc<HandleCache<(u16, bool, Vec<&'static str>)>>,
}

impl<S> Telemetry<S> {
    /// Counts requests to `pod` from `origin`.
    pub fn layer(
        pod: Arc<Pod>,
        telemetry: Arc<crate::Telemetry>,
        origin: Origin,
    ) -> impl Layer<S, Service = Self> + Clone {
        let peer = Arc::new(match &origin {
            Origin::Peer { identity, .. } => (
                identity.namespace().to_string(),
                identity.to_string(),
                "mutual_tls",
            ),
            Origin::Plain { .. } => ("unknown".into(), "unknown".into(), "none"),
        });
        let handles = Arc::new(HandleCache::default());
        tower::layer::layer_fn(move |inner| Self {
            inner,
            pod: pod.clone(),
            telemetry: telemetry.clone(),
            peer: peer.clone(),
            handles: handles.clone(),
        })
    }
}

impl<S> Service<Request<Body>> for Telemetry<S>
where
    S: Stack,
{
    service_head!(Infallible);

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let started = Instant::now();
        let grpc = is_grpc(&req);
        let (pod, telemetry, peer, handles) = (
            self.pod.clone(),
            self.telemetry.clone(),
            self.peer.clone(),
            self.handles.clone(),
        );
        let inner = self.inner.call(req);
        Box::pin(async move {
            let Ok(mut resp) = inner.await;
            let info = std::mem::take(StreamInfo::of(&mut resp));
            let status = resp.status().as_u16();
            let resolve = || -> RequestHandles {
                let me = pod.identity.id();
                let (peer_ns, peer_principal, security) = &*peer;
                telemetry.metrics.request_handles(&RequestLabels([
                    "destination",
                    "unknown",
                    peer_ns,
                    peer_principal,
                    "unknown",
                    &pod.workload,
                    me.namespace(),
                    &me.to_string(),
                    if grpc { "grpc" } else { "http" },
                    &status.to_string(),
                    &info.flags(),
                    security,
                ]))
            };
            let took = started.elapsed();
            handles
                .get((status, grpc, info.flags.clone()), resolve)
                .record(took);
            if info.refused.is_some() {
                let log = telemetry.access_log.as_ref();
                telemetry.denials.note(info, status, &peer.1, took, log);
            }
            Ok(resp)
        })
    }
}
