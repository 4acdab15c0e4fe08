//! The selected route's timeout: a bound on all its tries together, after
//! which the client gets 504 (`UT`). Upgrades are not bounded.

use std::convert::Infallible;

use crate::http::{Stack, service_head};
use hyper::{Request, StatusCode};
use tower::{Layer, Service};

use super::{Selected, StreamInfo};
use crate::http::stream_info::flags;
use crate::http::{Body, error_response, is_upgrade};

/// The timeout layer.
#[derive(Clone)]
pub(crate) struct Timeout<S> {
    inner: S,
}

impl<S> Timeout<S> {
    /// Bounds each request by its route's timeout.
    pub fn layer() -> impl Layer<S, Service = Self> + Clone {
        tower::layer::layer_fn(|inner| Self { inner })
    }
}

impl<S> Service<Request<Body>> for Timeout<S>
where
    S: Stack,
{
    service_head!(Infallible);

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let limit = req
            .extensions()
            .get::<Selected>()
            .and_then(|s| s.route().timeout)
            .filter(|_| !is_upgrade(&req));
        let inner = self.inner.call(req);
        Box::pin(async move {
            match limit {
                None => inner.await,
                Some(t) => match tokio::time::timeout(t, inner).await {
                    Ok(r) => r,
                    Err(_) => Ok(StreamInfo::flagged(
                        error_response(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout"),
                        flags::TIMEOUT,
                    )),
                },
            }
        })
    }
}
