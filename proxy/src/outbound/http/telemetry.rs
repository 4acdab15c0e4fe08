//! The top of the outbound stack: each request counted in Istio's metrics
//! (the source reporter) and written to the access log, with what the
//! layers below noted on the response ([`StreamInfo`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use crate::http::{Stack, service_head};
use api::discovery::Resolved;
use hyper::Request;
use tower::{Layer, Service};

use super::StreamInfo;
use crate::discovery::Target;
use crate::http::{Body, is_grpc};
use crate::metrics::RequestLabels;
use crate::{Pod, access_log};

/// The telemetry layer.
#[derive(Clone)]
pub(crate) struct Telemetry<S> {
    inner: S,
    pod: Arc<Pod>,
    telemetry: Arc<crate::Telemetry>,
    /// The destination service, as metrics name it.
    service: Arc<str>,
}

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
        tower::layer::layer_fn(move |inner| Self {
            inner,
            pod: pod.clone(),
            telemetry: telemetry.clone(),
            service: service.clone(),
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
            .then(|| access_log::Request::of(&req));
        let (pod, telemetry, service) = (
            self.pod.clone(),
            self.telemetry.clone(),
            self.service.clone(),
        );
        let inner = self.inner.call(req);
        Box::pin(async move {
            let Ok(mut resp) = inner.await;
            let info = std::mem::take(StreamInfo::of(&mut resp));
            let used = info.upstream.as_ref();
            let me = pod.identity.id();
            let principal = me.to_string();
            let dst_principal = used
                .and_then(|w| w.identity.as_ref())
                .map(ToString::to_string);
            let code = resp.status().as_u16().to_string();
            let (dst_workload, dst_ns) = used.map_or(("unknown", "unknown"), |w| {
                (w.workload.as_str(), w.namespace.as_str())
            });
            let flags = info.flags();
            telemetry.metrics.request(
                &RequestLabels([
                    "source",
                    &pod.workload,
                    me.namespace(),
                    &principal,
                    &service,
                    dst_workload,
                    dst_ns,
                    dst_principal.as_deref().unwrap_or("unknown"),
                    if grpc { "grpc" } else { "http" },
                    &code,
                    &flags,
                    if dst_principal.is_some() {
                        "mutual_tls"
                    } else {
                        "none"
                    },
                ]),
                started.elapsed(),
            );
            if let Some(log) = log {
                log.write(&resp, &info, &service, started.elapsed());
            }
            Ok(resp)
        })
    }
}
