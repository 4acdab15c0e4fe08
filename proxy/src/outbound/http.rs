//! The outbound HTTP stack: the app's connection served by hyper, each
//! request through one layer per concept, built bottom up in named steps
//! in [`stack`]:
//!
//! telemetry -> route -> fault -> record -> mirror -> timeout -> retry ->
//! balance -> endpoint -> connect
//!
//! A layer reads what the layers above decided from the request's
//! extensions ([`Selected`], the recorded body, the request's tries) and
//! notes what happened on the response ([`StreamInfo`]). Below `retry`
//! the stack is one try, whose failure ([`Failure`]) says whether the
//! request left. Mirrors sit above the retries: a copy is sent once per
//! request, as Envoy's shadow is, and goes through the same try stack.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use api::discovery::Workload;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, Uri, Version};
use tokio::io::{AsyncRead, AsyncWrite};
use tower::{Layer, Service, ServiceExt};

use super::Outbound;
use crate::detect::Protocol;
use crate::discovery::Target;
use crate::drain::Watch;
use crate::http::stream_info::EndpointRef;
use crate::http::{Body, Stack};
use crate::traffic::backend::{Backend, Subset};
use crate::traffic::matching::Source;
use crate::traffic::{Action, Route, Router};

mod balance;
mod connect;
mod endpoint;
mod fault;
mod mirror;
mod own;
mod record;
mod retry;
mod route;
mod telemetry;
mod timeout;

pub(crate) use crate::http::stream_info::StreamInfo;
pub(crate) use own::{collector, send as send_own};

/// The try stack (or the part of it below a layer): one try, which may
/// fail with a [`Failure`].
pub(crate) trait TryStack:
    Service<Request<Body>, Response = Response<Body>, Error = Failure, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<S> TryStack for S where
    S: Service<Request<Body>, Response = Response<Body>, Error = Failure, Future: Send + 'static>
        + Clone
        + Send
        + 'static
{
}

/// The app's connection: who it is and where it connected.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    /// The app's address (hash on source IP).
    pub client: IpAddr,
    /// Its pod's labels and namespace (`sourceLabels`, `sourceNamespace`).
    pub source: Arc<Source>,
    /// The address it connected to.
    pub dst: SocketAddr,
    /// The protocol it speaks.
    pub proto: Protocol,
}

/// Which destination of the selected route a request goes to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum To {
    /// One of the route's weighted destinations.
    Dest(usize),
    /// One of its mirrors.
    Mirror(usize),
}

/// What the route layer chose, for the layers below.
#[derive(Clone)]
pub(crate) struct Selected {
    /// The routing it was chosen from.
    pub router: Arc<Router>,
    /// The route's index.
    pub route: usize,
    /// Where to.
    pub to: To,
}

impl Selected {
    /// The route.
    pub fn route(&self) -> &Route {
        &self.router.routes[self.route]
    }

    /// The destination host, subset and port.
    pub fn target(&self) -> (&str, &Option<String>, Option<u16>) {
        let r = self.route();
        match (self.to, &r.action) {
            (To::Dest(i), Action::Forward(ds)) if i < ds.len() => {
                (&ds[i].host, &ds[i].subset, ds[i].port)
            }
            (To::Mirror(i), _) if i < r.mirrors.len() => {
                let m = &r.mirrors[i];
                (&m.host, &m.subset, m.port)
            }
            _ => ("", &None, None),
        }
    }

    /// The backend, subset and service port of the destination, or why
    /// none (`app_port`: the port the app connected to).
    pub fn cluster(&self, app_port: u16) -> Result<(&Backend, &Subset, u16), String> {
        let (host, subset, port) = self.target();
        let backend = self
            .router
            .backends
            .get(host)
            .ok_or_else(|| format!("unknown destination host {host}"))?;
        let port = backend.service_port(port, app_port);
        let sub = backend
            .subset(subset, port)
            .ok_or_else(|| format!("{host} has no subset {subset:?}"))?;
        Ok((backend, sub, port))
    }
}

/// Why a try got no response.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No endpoint to try (an empty or unknown subset): never retried.
    NoEndpoint(String),
    /// No connection; the request, when it was not consumed.
    Connect(Option<Box<Request<Body>>>, String),
    /// HTTP/2 REFUSED_STREAM: not processed.
    Refused(String),
    /// The stream or connection broke.
    Reset(String),
    /// The per-try timeout fired.
    Timeout,
}

/// What the tries of one request share: the endpoints tried, the hash
/// key and the cookie made for it, the last endpoint.
#[derive(Default)]
pub(crate) struct TryLog {
    /// Members of the subset tried, in order.
    pub tried: Vec<usize>,
    /// The consistent-hash key, once computed (`Some(None)`: no key).
    pub key: Option<Option<u64>>,
    /// A `Set-Cookie` for a cookie made up for this request.
    pub set_cookie: Option<HeaderValue>,
    /// The endpoint of the last try.
    pub last: Option<EndpointRef>,
}

/// The request's [`TryLog`], in its extensions.
#[derive(Clone, Default)]
pub(crate) struct Tries(Arc<Mutex<TryLog>>);

impl Tries {
    /// The log, locked.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, TryLog> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The endpoint the balancer picked for a try.
#[derive(Clone)]
pub(crate) struct Picked {
    /// The endpoint.
    pub endpoint: EndpointRef,
    /// The port on it.
    pub port: u16,
    /// How connections to it are made.
    pub conn: crate::traffic::limits::ConnSettings,
    /// Over what (`trafficPolicy.tls`).
    pub tls: crate::traffic::upstream_tls::UpstreamTls,
    /// Its requests in flight (least request).
    pub active: Option<Arc<std::sync::atomic::AtomicU32>>,
    /// Outlier detection for its subset.
    pub observer: Option<crate::traffic::outlier::Observer>,
}

impl Picked {
    /// The endpoint's workload.
    pub fn workload(&self) -> &Workload {
        self.endpoint.workload()
    }
}

/// A request's head, to build another request (a retry, a mirror) from.
pub(crate) struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    headers: hyper::HeaderMap,
    selected: Option<Selected>,
}

impl Head {
    /// The head of `req`.
    pub fn of<B>(req: &Request<B>) -> Self {
        Self {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
            selected: req.extensions().get::<Selected>().cloned(),
        }
    }

    /// A request with this head and `body`.
    pub fn with(&self, body: Body) -> Request<Body> {
        let mut r = Request::new(body);
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.version_mut() = self.version;
        *r.headers_mut() = self.headers.clone();
        if let Some(s) = &self.selected {
            r.extensions_mut().insert(s.clone());
        }
        r
    }
}

/// One try: balance -> endpoint -> connect.
pub(crate) fn try_stack(ob: &Outbound, conn: &Conn) -> impl TryStack + use<> {
    let connect = connect::Connect::new(ob.upstreams.clone(), conn.proto);
    let endpoint = endpoint::Endpoint::layer(ob.telemetry.clone()).layer(connect);
    balance::Balance::layer(conn.clone()).layer(endpoint)
}

/// The whole stack for the requests of one connection to `target`.
pub(crate) fn stack(ob: &Outbound, target: Arc<Target>, conn: &Conn) -> impl Stack + use<> {
    let tries = try_stack(ob, conn);
    let retry = retry::Retry::layer(conn.dst.port()).layer(tries.clone());
    let timeout = timeout::Timeout::layer().layer(retry);
    let mirror = mirror::Mirror::layer(tries).layer(timeout);
    let record = record::Record::layer().layer(mirror);
    let fault = fault::Fault::layer().layer(record);
    let route =
        route::Route::layer(ob.discovery.clone(), target.clone(), conn.clone()).layer(fault);
    telemetry::Telemetry::layer(
        ob.pod.clone(),
        ob.telemetry.clone(),
        target,
        conn.dst.port(),
    )
    .layer(route)
}

/// Serves the app's connection until it closes.
pub(crate) async fn serve<IO>(
    ob: &Outbound,
    app: IO,
    target: Arc<Target>,
    conn: Conn,
    drain: &Watch,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let proto = conn.proto;
    let stack = stack(ob, target, &conn);
    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let stack = stack.clone();
        stack.oneshot(req.map(http_body_util::BodyExt::boxed))
    });
    if let Err(e) = crate::http::limits::serve(app, svc, proto, drain).await {
        tracing::debug!(error = %e, "outbound HTTP connection ended");
    }
}

#[cfg(test)]
mod tests;
