//! The inbound HTTP stack, one path for both ways in: requests from peer
//! proxies on their shared HTTP/2 mTLS connection, and plaintext HTTP
//! from outside the mesh on the redirected port (parsed with the edge's
//! limits, never passed through as bytes). Built in named steps in
//! [`stack`]:
//!
//! telemetry -> origin -> request authentication (JWT) -> authorization
//! -> rate limit -> app
//!
//! (Peer authentication happens per connection, before this stack.)

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use api::spiffe::SpiffeId;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tower::{Layer, Service, ServiceExt};

use super::Inbound;
use crate::detect::Protocol;
use crate::drain::Watch;
use crate::http::{Body, limits};

mod app;
pub(crate) mod authn;
mod authz;
mod ext_authz;
mod origin;
mod rate_limit;
mod telemetry;

pub(crate) use crate::http::ResponseFuture;
pub(crate) use authz::View;

/// Where a connection's requests come from and go.
#[derive(Clone)]
pub(crate) enum Origin {
    /// A peer proxy, over mTLS: the app port is in each request.
    Peer {
        /// The identity its certificate proves.
        identity: Arc<SpiffeId>,
        /// This pod's address the connection came to.
        local: IpAddr,
        /// The peer's address.
        client: IpAddr,
    },
    /// A client outside the mesh, in plaintext, to `app` in `proto`.
    Plain {
        /// The app's address it connected to.
        app: SocketAddr,
        /// The protocol it speaks.
        proto: Protocol,
        /// The client's address.
        client: IpAddr,
    },
}

/// `resp`, the proxy's own refusal of `req` for `details` (Envoy's
/// `response_code_details`), with `flag` noted.
pub(crate) fn refused<B>(
    resp: Response<Body>,
    flag: Option<&'static str>,
    req: &Request<B>,
    details: String,
) -> Response<Body> {
    let port = req
        .extensions()
        .get::<origin::Forward>()
        .map_or(0, |f| f.app.port());
    let why = crate::http::stream_info::Refused {
        request: crate::access_log::Request::of(req),
        details,
        cluster: format!("inbound|{port}||"),
    };
    crate::http::stream_info::StreamInfo::refused(resp, flag, why)
}

/// The stack for one connection's requests.
pub(crate) fn stack(
    ib: &Arc<Inbound>,
    origin: Origin,
) -> impl Service<
    Request<Body>,
    Response = Response<Body>,
    Error = Infallible,
    Future = ResponseFuture<Infallible>,
>
+ Clone
+ Send
+ 'static
+ use<> {
    let app = app::App::new(ib.upstreams.clone());
    let rate_limit = rate_limit::RateLimit::layer(ib.clone()).layer(app);
    let authz = authz::Authz::layer(ib.clone(), origin.clone()).layer(rate_limit);
    let authn = authn::Authn::layer(ib.clone()).layer(authz);
    let origin_ = origin::Origin::layer(origin.clone()).layer(authn);
    telemetry::Telemetry::layer(ib.pod.clone(), ib.telemetry.clone(), origin).layer(origin_)
}

fn service(
    ib: Arc<Inbound>,
    origin: Origin,
) -> impl hyper::service::Service<
    Request<hyper::body::Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone {
    let stack = stack(&ib, origin);
    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        stack
            .clone()
            .oneshot(req.map(http_body_util::BodyExt::boxed))
    })
}

/// Serves one peer proxy's HTTP/2 connection.
pub(crate) async fn serve_peer<IO>(
    ib: Arc<Inbound>,
    io: IO,
    peer: SpiffeId,
    local: IpAddr,
    client: IpAddr,
    drain: &Watch,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let origin = Origin::Peer {
        identity: Arc::new(peer),
        local,
        client,
    };
    let svc = service(ib, origin);
    let conn = limits::peer_h2_server().serve_connection(TokioIo::new(io), svc);
    if let Err(e) = crate::drain::serve(conn, drain).await {
        tracing::debug!(error = %e, "inbound HTTP/2 connection ended");
    }
}

/// Serves a plaintext HTTP connection from outside the mesh, redirected
/// from `app`, with the edge's limits (the parser answers malformed
/// requests with 400, oversized headers with 431, slow ones with 408).
pub(crate) async fn serve_plain<IO>(
    ib: Arc<Inbound>,
    io: IO,
    app: SocketAddr,
    client: IpAddr,
    proto: Protocol,
    drain: &Watch,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service(ib, Origin::Plain { app, proto, client });
    if let Err(e) = limits::serve(io, svc, proto, drain).await {
        tracing::debug!(error = %e, "inbound plaintext HTTP connection ended");
    }
}

#[cfg(test)]
mod tests;
