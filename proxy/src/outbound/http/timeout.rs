//! The selected route's timeout: a bound on all its tries together, after
//! which the client gets 504 (`UT`). Upgrades are not bounded.

use std::convert::Infallible;
use std::task::{Context, Poll};

use hyper::{Request, Response, StatusCode};
use tower::{Layer, Service};

use super::{ResponseFuture, Selected, StreamInfo};
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
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture<Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

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
