//! What a request's origin may say: only a peer proxy names the app port,
//! the client app's protocol and the client's route (in headers); an
//! outsider's values for them are dropped. The result goes down as
//! [`Forward`].

use std::convert::Infallible;
use std::net::SocketAddr;

use crate::http::{Stack, service_head};
use hyper::header::HeaderValue;
use hyper::{Request, StatusCode};
use tower::{Layer, Service};

use crate::detect::Protocol;
use crate::http::{Body, DST_PORT, ORIG_PROTO, ROUTE, error_response};
use crate::ports;

/// Where a request goes in the pod, and what the client proxy said.
#[derive(Clone)]
pub(crate) struct Forward {
    /// The app's address.
    pub app: SocketAddr,
    /// Whether to speak HTTP/1 to it.
    pub http1: bool,
    /// Whether the request came in plaintext from outside the mesh.
    pub plain: bool,
    /// The client's VirtualService route (a peer proxy's word only).
    pub route: Option<HeaderValue>,
}

/// The origin layer.
#[derive(Clone)]
pub(crate) struct Origin<S> {
    inner: S,
    origin: super::Origin,
}

impl<S> Origin<S> {
    /// Reads requests from `origin`.
    pub fn layer(origin: super::Origin) -> impl Layer<S, Service = Self> + Clone {
        tower::layer::layer_fn(move |inner| Self {
            inner,
            origin: origin.clone(),
        })
    }
}

fn forward_of<B>(origin: &super::Origin, req: &mut Request<B>) -> Result<Forward, &'static str> {
    let route = req.headers_mut().remove(ROUTE);
    match origin {
        super::Origin::Plain { app, proto, .. } => {
            req.headers_mut().remove(DST_PORT);
            req.headers_mut().remove(ORIG_PROTO);
            Ok(Forward {
                app: *app,
                http1: *proto != Protocol::Http2,
                plain: true,
                route: None,
            })
        }
        super::Origin::Peer { local, .. } => {
            let port = req
                .headers_mut()
                .remove(DST_PORT)
                .and_then(|v| v.to_str().ok()?.parse::<u16>().ok())
                .filter(|p| ![ports::MTLS, ports::INBOUND, ports::OUTBOUND].contains(p))
                .ok_or("missing or invalid x-mesh-dst-port")?;
            let http1 = req
                .headers_mut()
                .remove(ORIG_PROTO)
                .is_some_and(|v| v == "HTTP/1.1");
            Ok(Forward {
                app: SocketAddr::new(*local, port),
                http1,
                plain: false,
                route,
            })
        }
    }
}

impl<S> Service<Request<Body>> for Origin<S>
where
    S: Stack,
{
    service_head!(Infallible);

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        match forward_of(&self.origin, &mut req) {
            Ok(f) => {
                req.extensions_mut().insert(f);
                Box::pin(self.inner.call(req))
            }
            Err(e) => {
                let r = error_response(StatusCode::BAD_REQUEST, e);
                Box::pin(async move { Ok(r) })
            }
        }
    }
}
