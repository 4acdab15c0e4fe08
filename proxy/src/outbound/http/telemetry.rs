//! The top of the outbound stack: each request counted in Istio's metrics
//! (the source reporter) and handed to the access log, with what the
//! layers below noted on the response ([`StreamInfo`]). The metric handles
//! are resolved once per connection for each kind of answer (endpoint,
//! status, protocol, flags), not from label strings per request.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use crate::http::stream_info::EndpointRef;
use crate::http::{Stack, service_head};
use api::discovery::Resolved;
use hyper::Request;
use tower::{Layer, Service};

use super::StreamInfo;
use crate::discovery::Target;
use crate::http::{Body, is_grpc};
use crate::metrics::{HandleCache, RequestLabels};
use crate::{Pod, access_log};

/// The telemetry layer.
#[derive(Clone)]
pub(crate) struct Telemetry<S> {
    inner: S,
    pod: Arc<Pod>,
    telemetry: Arc<crate::Telemetry>,
    /// The destination service, as metrics name it.
    service: Arc<str>,
    /// This pod's SPIFFE ID, as text.
    principal: Arc<str>,
    /// Handles by (endpoint, status, gRPC, flags).
    handles: Arc<HandleCache<Key>>,
}

/// What varies between the requests of one connection, for metrics.
type Key = (Option<std::net::IpAddr>, u16, bool, Vec<&'static str>);

impl<S> Telemetry<S> {
    /// Counts and logs requests to `target` from `pod`.
    pub fn layer(
        pod: Arc<Pod>,
        telemetry: Arc<crate::Telemetry>,
        target: Arc<Target>,
    ) -> impl Layer<S, Service = Self> + Clone {
        let service: Arc<str> = match &target.resolved {
            Resolved::Workload(w) => w.address.to_string().into(),
            Resolved::Service(svc) => svc.hostname.as_str().into(),
        };
        let principal: Arc<str> = pod.identity.id().to_string().into();
        let handles = Arc::new(HandleCache::default());
        tower::layer::layer_fn(move |inner| Self {
            inner,
            pod: pod.clone(),
            telemetry: telemetry.clone(),
            service: service.clone(),
            principal: principal.clone(),
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
        let log = self
            .telemetry
            .access_log
            .is_some()
            .then(|| access_log::Request::of(&req));
        let this = self.clone_handles();
        let inner = self.inner.call(req);
        Box::pin(async move {
            let Ok(mut resp) = inner.await;
            let info = std::mem::take(StreamInfo::of(&mut resp));
            let status = resp.status().as_u16();
            let took = started.elapsed();
            let used = info.upstream.as_ref().map(EndpointRef::workload);
            let key = (used.map(|w| w.address), status, grpc, info.flags.clone());
            this.handles
                .get(key, || {
                    let dst_principal = used
                        .and_then(|w| w.identity.as_ref())
                        .map(ToString::to_string);
                    let (dst_workload, dst_ns) = used.map_or(("unknown", "unknown"), |w| {
                        (w.workload.as_str(), w.namespace.as_str())
                    });
                    this.telemetry.metrics.request_handles(&RequestLabels([
                        "source",
                        &this.pod.workload,
                        this.pod.identity.id().namespace(),
                        &this.principal,
                        &this.service,
                        dst_workload,
                        dst_ns,
                        dst_principal.as_deref().unwrap_or("unknown"),
                        if grpc { "grpc" } else { "http" },
                        &status.to_string(),
                        &info.flags(),
                        if dst_principal.is_some() {
                            "mutual_tls"
                        } else {
                            "none"
                        },
                    ]))
                })
                .record(took);
            if let (Some(log), Some(request)) = (&this.telemetry.access_log, log) {
                log.log(access_log::Record {
                    request,
                    status,
                    info,
                    service: this.service.clone(),
                    took,
                });
            }
            Ok(resp)
        })
    }
}

/// What a request's telemetry needs once the response is in.
struct Handles {
    pod: Arc<Pod>,
    telemetry: Arc<crate::Telemetry>,
    service: Arc<str>,
    principal: Arc<str>,
    handles: Arc<HandleCache<Key>>,
}

impl<S> Telemetry<S> {
    fn clone_handles(&self) -> Handles {
        Handles {
            pod: self.pod.clone(),
            telemetry: self.telemetry.clone(),
            service: self.service.clone(),
            principal: self.principal.clone(),
            handles: self.handles.clone(),
        }
    }
}
