//! One try at the picked endpoint, bounded by the route's per-try
//! timeout: counted in its requests in flight (least request) while it
//! lasts, and its result (a timeout too) counted by outlier detection
//! (an ejection is logged and counted).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::http::service_head;
use hyper::Request;
use tower::{Layer, Service};

use super::{Failure, Picked, Selected, TryStack};
use crate::Telemetry;
use crate::http::Body;
use crate::traffic::outlier::Observed;

/// The endpoint layer.
#[derive(Clone)]
pub(crate) struct Endpoint<S> {
    inner: S,
    telemetry: Arc<Telemetry>,
}

impl<S> Endpoint<S> {
    /// Counts tries; ejections go to `telemetry`.
    pub fn layer(telemetry: Arc<Telemetry>) -> impl Layer<S, Service = Self> + Clone {
        tower::layer::layer_fn(move |inner| Self {
            inner,
            telemetry: telemetry.clone(),
        })
    }
}

/// Decrements an in-flight count when dropped (the try ended or was
/// cancelled by a timeout).
struct InFlight(Option<Arc<std::sync::atomic::AtomicU32>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl<S> Service<Request<Body>> for Endpoint<S>
where
    S: TryStack,
{
    service_head!(Failure);

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let Some(picked) = req.extensions().get::<Picked>().cloned() else {
            return Box::pin(async { Err(Failure::NoEndpoint("no endpoint picked".into())) });
        };
        if let Some(c) = &picked.active {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let in_flight = InFlight(picked.active.clone());
        let telemetry = self.telemetry.clone();
        let selected = req.extensions().get::<Selected>().cloned();
        let per_try = selected
            .as_ref()
            .and_then(|s| s.route().retry.per_try_timeout);
        let sent = self.inner.call(req);
        Box::pin(async move {
            let result = match per_try {
                Some(t) => tokio::time::timeout(t, sent)
                    .await
                    .unwrap_or(Err(Failure::Timeout)),
                None => sent.await,
            };
            drop(in_flight);
            if let Some(o) = &picked.observer {
                let seen = match &result {
                    Ok(r) if r.status().as_u16() >= 500 => Observed::Status(r.status().as_u16()),
                    Ok(_) => Observed::Success,
                    Err(_) => Observed::LocalFailure,
                };
                let ip = picked.workload().address;
                if o.record(ip, seen) {
                    let host = selected.as_ref().map_or("", |s| s.target().0);
                    crate::outbound::ejected(&telemetry.metrics, host, ip);
                }
            }
            result
        })
    }
}
