//! Endpoint choice for one try: the selected destination's subset and
//! its balancer (consistent hashing on a header, a cookie, which is made
//! up and set when a TTL is given, the source IP or a query parameter),
//! skipping ejected endpoints and those this request already tried. The
//! pick goes down as [`Picked`]; the key (and a cookie made up for it)
//! stays the same for every try of the request.

use std::net::IpAddr;
use std::time::Duration;

use crate::http::service_head;
use hyper::Request;
use hyper::header::{self, HeaderValue};
use tower::{Layer, Service};

use super::{Conn, Failure, Picked, Selected, Tries, TryStack};
use crate::http::Body;
use crate::http::stream_info::EndpointRef;
use crate::traffic::balance::{HashOn, hash};
use crate::traffic::matching::query_param;

/// The balancing layer.
#[derive(Clone)]
pub(crate) struct Balance<S> {
    inner: S,
    conn: Conn,
}

impl<S> Balance<S> {
    /// Picks an endpoint for each try of `conn`'s requests.
    pub fn layer(conn: Conn) -> impl Layer<S, Service = Self> + Clone {
        tower::layer::layer_fn(move |inner| Self {
            inner,
            conn: conn.clone(),
        })
    }
}

/// The hash key of a request for a consistent-hash balancer.
fn hash_key<B>(on: &HashOn, req: &Request<B>, client: IpAddr) -> Option<u64> {
    let v = match on {
        HashOn::Header(h) => req.headers().get(h).map(|v| v.as_bytes().to_vec()),
        HashOn::Cookie { name, .. } => req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| {
                let (k, v) = c.trim().split_once('=')?;
                (k == name).then(|| v.as_bytes().to_vec())
            }),
        HashOn::SourceIp => Some(client.to_string().into_bytes()),
        HashOn::Query(q) => {
            query_param(req.uri().query().unwrap_or(""), q).map(|v| v.as_bytes().to_vec())
        }
    }?;
    Some(hash(&v))
}

/// A cookie made for a request that lacks it (Envoy's generated cookie):
/// its value as clients send it back, and the `Set-Cookie` header.
fn generated_cookie(
    name: &str,
    ttl: Duration,
    path: Option<&str>,
) -> (String, Option<HeaderValue>) {
    let value = format!("\"{:016x}\"", fastrand::u64(..));
    let path = path.map(|p| format!("; Path={p}")).unwrap_or_default();
    let header = format!("{name}={value}; Max-Age={}{path}; HttpOnly", ttl.as_secs());
    (value, HeaderValue::try_from(header).ok())
}

/// The request's hash key under `on` (`None`: no key), with a cookie
/// made up when the balancer says so.
fn key_of<B>(
    on: Option<&HashOn>,
    req: &Request<B>,
    client: IpAddr,
) -> (Option<u64>, Option<HeaderValue>) {
    let Some(on) = on else {
        return (None, None);
    };
    match (on, hash_key(on, req, client)) {
        (
            HashOn::Cookie {
                name,
                ttl: Some(ttl),
                path,
            },
            None,
        ) => {
            let (value, cookie) = generated_cookie(name, *ttl, path.as_deref());
            (Some(hash(value.as_bytes())), cookie)
        }
        (_, key) => (key, None),
    }
}

impl<S> Service<Request<Body>> for Balance<S>
where
    S: TryStack,
{
    service_head!(Failure);

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        match pick(&self.conn, &req) {
            Ok(picked) => {
                req.extensions_mut().insert(picked);
                Box::pin(self.inner.call(req))
            }
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
}

/// The endpoint for this try.
fn pick(conn: &Conn, req: &Request<Body>) -> Result<Picked, Failure> {
    let selected = req
        .extensions()
        .get::<Selected>()
        .cloned()
        .ok_or_else(|| Failure::NoEndpoint("no route selected".into()))?;
    let tries = req.extensions().get::<Tries>().cloned().unwrap_or_default();
    let (backend, sub, svc_port) = selected
        .cluster(conn.dst.port())
        .map_err(Failure::NoEndpoint)?;
    let mut log = tries.lock();
    let key = match log.key {
        Some(k) => k,
        None => {
            let (k, cookie) = key_of(sub.balancer.hash_on(), req, conn.client);
            log.key = Some(k);
            log.set_cookie = cookie;
            k
        }
    };
    let (host, _, _) = selected.target();
    let Some((member, _, ep)) = backend.choose(sub, key, &mut log.tried, &mut fastrand::Rng::new())
    else {
        return Err(Failure::NoEndpoint(format!(
            "no healthy upstream for {host}"
        )));
    };
    let endpoint = EndpointRef {
        endpoints: backend.endpoints.clone(),
        index: sub.members[member],
    };
    log.last = Some(endpoint.clone());
    Ok(Picked {
        endpoint,
        port: backend.endpoint_port(ep, svc_port),
        conn: sub.conn,
        tls: sub.tls.clone(),
        active: sub.active.get(member).cloned(),
        observer: sub.observer(),
    })
}
