//! Routing: the first route of the target's current routing whose match
//! applies; CORS (a preflight from an allowed origin is answered here);
//! direct responses and redirects; the weighted choice of a destination;
//! path and authority rewrites and header changes. The choice goes down
//! as [`Selected`].

use std::convert::Infallible;
use std::sync::Arc;

use crate::http::{Stack, service_head};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue, LOCATION};
use hyper::{Request, Response, StatusCode, Uri};
use tower::{Layer, Service};

use super::{Conn, Selected, StreamInfo, To};
use crate::discovery::{Discovery, Target};
use crate::http::stream_info::flags;
use crate::http::{Body, ROUTE, error_response};
use crate::traffic::cors::Cors;
use crate::traffic::matching::{StrMatch, authority};
use crate::traffic::{Action, Redirect, Rewrite, rewrite_path, split};

/// The routing layer.
#[derive(Clone)]
pub(crate) struct Route<S> {
    inner: S,
    discovery: Arc<Discovery>,
    target: Arc<Target>,
    conn: Conn,
}

impl<S> Route<S> {
    /// Routes by the current routing of `target` (its latest version,
    /// also for a connection opened before it changed).
    pub fn layer(
        discovery: Arc<Discovery>,
        target: Arc<Target>,
        conn: Conn,
    ) -> impl Layer<S, Service = Self> + Clone {
        tower::layer::layer_fn(move |inner| Self {
            inner,
            discovery: discovery.clone(),
            target: target.clone(),
            conn: conn.clone(),
        })
    }
}

/// A response made here, without an upstream.
pub(crate) fn plain(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body).map_err(|n| match n {}).boxed());
    *r.status_mut() = status;
    r
}

fn redirect_response<B>(req: &Request<B>, rd: &Redirect) -> Response<Body> {
    let auth = rd
        .authority
        .clone()
        .unwrap_or_else(|| authority(req).to_string());
    let host = auth.rsplit_once(':').map_or(auth.as_str(), |(h, _)| h);
    let host_port = match rd.port {
        Some(p) => format!("{host}:{p}"),
        None => auth.clone(),
    };
    let path = rd.uri.clone().unwrap_or_else(|| {
        req.uri()
            .path_and_query()
            .map_or("/".into(), |p| p.as_str().to_string())
    });
    let scheme = rd.scheme.as_deref().unwrap_or("http");
    let mut r = plain(rd.code, Bytes::new());
    if let Ok(v) = HeaderValue::try_from(format!("{scheme}://{host_port}{path}")) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

fn rewrite<B>(req: &mut Request<B>, matched: Option<&StrMatch>, rw: &Rewrite) {
    if rw.uri.is_some() || rw.regex.is_some() {
        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let new = rewrite_path(pq, matched, rw);
        let mut parts = req.uri().clone().into_parts();
        if let Ok(p) = new.parse() {
            parts.path_and_query = Some(p);
            if let Ok(u) = Uri::from_parts(parts) {
                *req.uri_mut() = u;
            }
        }
    }
    if let Some(a) = &rw.authority
        && let Ok(v) = HeaderValue::try_from(a.as_str())
    {
        req.headers_mut().insert(header::HOST, v);
        if req.uri().authority().is_some() {
            let mut parts = req.uri().clone().into_parts();
            if let Ok(auth) = a.parse() {
                parts.authority = Some(auth);
                if let Ok(u) = Uri::from_parts(parts) {
                    *req.uri_mut() = u;
                }
            }
        }
    }
}

impl<S> Service<Request<Body>> for Route<S>
where
    S: Stack,
{
    service_head!(Infallible);

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let router = self
            .discovery
            .current(self.conn.dst.ip())
            .map_or_else(|| self.target.router.clone(), |t| t.router.clone());
        let Some((index, route, matched)) =
            router.select(&req, self.conn.dst.port(), &self.conn.source)
        else {
            let r = error_response(StatusCode::NOT_FOUND, "no route matched");
            return Box::pin(async move { Ok(StreamInfo::flagged(r, flags::NO_ROUTE)) });
        };
        let named = |mut r: Response<Body>| {
            StreamInfo::of(&mut r).route = route.name.clone();
            r
        };
        let origin = route.cors.as_ref().and_then(|c| c.allowed(&req));
        if let (Some(c), Some(o)) = (&route.cors, &origin)
            && Cors::is_preflight(&req)
        {
            let mut r = plain(StatusCode::OK, Bytes::new());
            c.preflight_headers(o.clone(), r.headers_mut());
            let r = named(r);
            return Box::pin(async move { Ok(r) });
        }
        let dests = match &route.action {
            Action::Direct { status, body } => {
                let r = named(plain(*status, body.clone()));
                return Box::pin(async move { Ok(r) });
            }
            Action::Redirect(rd) => {
                let r = named(redirect_response(&req, rd));
                return Box::pin(async move { Ok(r) });
            }
            Action::Forward(d) => d,
        };
        let Some(dest) = split::pick_index(dests, |d| d.weight, &mut fastrand::Rng::new()) else {
            let r = named(error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "no destination has weight",
            ));
            return Box::pin(async move { Ok(StreamInfo::flagged(r, flags::NO_HEALTHY)) });
        };
        if let Some(rw) = &route.rewrite {
            rewrite(&mut req, matched, rw);
        }
        route.headers.request.apply(req.headers_mut());
        dests[dest].headers.request.apply(req.headers_mut());
        // Only this proxy names the route to the server's (an app's own
        // value would pick another rate-limit bucket).
        req.headers_mut().remove(ROUTE);
        if let Some(name) = route
            .name
            .as_deref()
            .and_then(|n| HeaderValue::try_from(n).ok())
        {
            req.headers_mut().insert(ROUTE, name);
        }
        let selected = Selected {
            router: router.clone(),
            route: index,
            to: To::Dest(dest),
        };
        req.extensions_mut().insert(selected.clone());
        let inner = self.inner.call(req);
        Box::pin(async move {
            let Ok(mut resp) = inner.await;
            let route = selected.route();
            route.headers.response.apply(resp.headers_mut());
            if let Action::Forward(ds) = &route.action {
                ds[dest].headers.response.apply(resp.headers_mut());
            }
            if let (Some(c), Some(o)) = (&route.cors, origin) {
                c.response_headers(o, resp.headers_mut());
            }
            StreamInfo::of(&mut resp).route = route.name.clone();
            Ok(resp)
        })
    }
}
