//! This workload's LocalRateLimits, from its own discovery resource: a
//! request over its bucket gets the policy's status (429 by default,
//! `RL`), with `x-ratelimit-limited: true`, as Envoy's local rate limit.

use std::convert::Infallible;
use std::sync::Arc;

use crate::http::{Stack, service_head};
use hyper::header::HeaderValue;
use hyper::{Request, StatusCode};
use tower::{Layer, Service};

use super::origin::Forward;
use crate::http::stream_info::{StreamInfo, flags};
use crate::http::{Body, PROXY_ERROR, error_response};
use crate::inbound::Inbound;

/// The rate-limit layer.
#[derive(Clone)]
pub(crate) struct RateLimit<S> {
    inner: S,
    ib: Arc<Inbound>,
}

impl<S> RateLimit<S> {
    /// Applies `ib`'s workload policy.
    pub fn layer(ib: Arc<Inbound>) -> impl Layer<S, Service = Self> + Clone {
        tower::layer::layer_fn(move |inner| Self {
            inner,
            ib: ib.clone(),
        })
    }
}

/// The refusal status when this workload's LocalRateLimit refuses `req`.
fn limited<B>(ib: &Inbound, req: &Request<B>) -> Option<StatusCode> {
    let me = ib.discovery.current(ib.pod.ip)?;
    let api::discovery::Resolved::Workload(w) = &me.resolved else {
        return None;
    };
    let route = req
        .extensions()
        .get::<Forward>()
        .and_then(|f| f.route.as_ref()?.to_str().ok());
    let limiters = ib.rate_limits.get(&me.version, w.policy.as_deref());
    let now = std::time::Instant::now();
    limiters.1.iter().find_map(|l| {
        l.check(req, route, now)
            .err()
            .inspect(|_| tracing::debug!(policy = %l.policy, "rate limited"))
    })
}

impl<S> Service<Request<Body>> for RateLimit<S>
where
    S: Stack,
{
    service_head!(Infallible);

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        match limited(&self.ib, &req) {
            None => Box::pin(self.inner.call(req)),
            Some(status) => {
                let mut r = error_response(status, "local rate limit");
                r.headers_mut().remove(PROXY_ERROR);
                r.headers_mut()
                    .insert("x-ratelimit-limited", HeaderValue::from_static("true"));
                let r = StreamInfo::flagged(r, flags::RATE_LIMITED);
                Box::pin(async move { Ok(r) })
            }
        }
    }
}
