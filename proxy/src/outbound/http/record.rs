//! Keeps a copy of the request body for the retries and mirrors below
//! ([`crate::http::replay`]): the first try streams the body as it
//! arrives; the copy, when complete and small enough, is replayed. An
//! upgrade carries no body and is not recorded.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::BodyExt;
use hyper::{Request, Response};
use tower::{Layer, Service};

use crate::http::replay::{self, Tape};
use crate::http::{Body, is_upgrade};

/// The recorded copy of a request's body, in its extensions.
#[derive(Clone)]
pub(crate) struct Recorded(pub Arc<Tape>);

/// The recording layer.
#[derive(Clone)]
pub(crate) struct Record<S> {
    inner: S,
}

impl<S> Record<S> {
    /// Records each request's body.
    pub fn layer() -> impl Layer<S, Service = Self> + Clone {
        tower::layer::layer_fn(|inner| Self { inner })
    }
}

impl<S> Service<Request<Body>> for Record<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = S::Future;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if is_upgrade(&req) {
            return self.inner.call(req);
        }
        let (mut parts, body) = req.into_parts();
        let (body, tape) = replay::record(body);
        parts.extensions.insert(Recorded(tape));
        self.inner.call(Request::from_parts(parts, body.boxed()))
    }
}
