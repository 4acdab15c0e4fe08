//! One request through a Service's compiled routing, in the order of
//! DESIGN.md: route match -> CORS -> fault -> destination by weight ->
//! rewrite and headers -> mirrors -> tries (each to an endpoint the
//! balancer picks, skipping ones already tried) under the route timeout,
//! retried by policy, budget and backoff.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use api::discovery::Workload;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue, LOCATION};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};

use super::replay::{self, Tape};
use super::{Body, error_response, send};
use crate::Ctx;
use crate::detect::Protocol;
use crate::traffic::backend::Subset;
use crate::traffic::balance::{HashOn, hash};
use crate::traffic::cors::Cors;
use crate::traffic::matching::{Source, StrMatch, authority, query_param};
use crate::traffic::outlier;
use crate::traffic::retry::{Next, Outcome, RetryState};
use crate::traffic::split::{self, hits};
use crate::traffic::{Abort, Action, Backend, Dest, Redirect, Route, Router, rewrite_path};

/// Envoy's response flags that this path sets.
pub mod flags {
    /// No route matched.
    pub const NO_ROUTE: &str = "NR";
    /// No healthy upstream (empty subset).
    pub const NO_HEALTHY: &str = "UH";
    /// Connecting failed.
    pub const CONNECT_FAILURE: &str = "UF";
    /// The upstream reset the stream.
    pub const RESET: &str = "UR";
    /// Timed out.
    pub const TIMEOUT: &str = "UT";
    /// Over a connection pool limit.
    pub const OVERFLOW: &str = "UO";
    /// Retries exhausted.
    pub const RETRIES_EXHAUSTED: &str = "URX";
    /// Delay injected.
    pub const DELAY: &str = "DI";
    /// Abort injected.
    pub const ABORT: &str = "FI";
    /// Nothing to report.
    pub const NONE: &str = "-";
}

/// What happened, for metrics and the access log.
#[derive(Debug, Default)]
pub struct Info {
    /// The endpoint that answered last.
    pub used: Option<Workload>,
    /// Response flags, comma-separated as in Envoy (`-` for none).
    pub flags: Vec<&'static str>,
    /// The route's name.
    pub route: Option<String>,
    /// Tries made.
    pub attempts: u32,
}

impl Info {
    /// Flags as Envoy prints them.
    pub fn flags(&self) -> String {
        if self.flags.is_empty() {
            flags::NONE.into()
        } else {
            self.flags.join(",")
        }
    }
}

/// Where the request came from.
pub struct Client {
    /// Pod labels and namespace, for `sourceLabels` and `sourceNamespace`.
    pub source: Arc<Source>,
    /// The app's address (hash on source IP).
    pub ip: IpAddr,
}

fn plain(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body).map_err(|n| match n {}).boxed());
    *r.status_mut() = status;
    r
}

fn abort_response(a: Abort) -> Response<Body> {
    match a {
        Abort::Http(s) => plain(s, Bytes::from_static(b"fault filter abort\n")),
        Abort::Grpc(code) => {
            // Trailers-only: the status rides the headers of a 200.
            let mut r = plain(StatusCode::OK, Bytes::new());
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            h.insert("grpc-status", HeaderValue::from(code));
            h.insert(
                "grpc-message",
                HeaderValue::from_static("fault filter abort"),
            );
            r
        }
    }
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

/// Serves `req` by `router`.
pub async fn route(
    ctx: &Arc<Ctx>,
    router: &Arc<Router>,
    client: &Client,
    dst: SocketAddr,
    proto: Protocol,
    mut req: Request<Incoming>,
) -> (Response<Body>, Info) {
    let mut info = Info::default();
    let Some((route, matched)) = router.select(&req, dst.port(), &client.source) else {
        info.flags.push(flags::NO_ROUTE);
        return (
            error_response(StatusCode::NOT_FOUND, "no route matched"),
            info,
        );
    };
    info.route = route.name.clone();
    let origin = route.cors.as_ref().and_then(|c| c.allowed(&req));
    if let (Some(c), Some(o)) = (&route.cors, &origin)
        && Cors::is_preflight(&req)
    {
        let mut r = plain(StatusCode::OK, Bytes::new());
        c.preflight_headers(o.clone(), r.headers_mut());
        return (r, info);
    }
    let dests = match &route.action {
        Action::Direct { status, body } => return (plain(*status, body.clone()), info),
        Action::Redirect(rd) => return (redirect_response(&req, rd), info),
        Action::Forward(d) => d,
    };
    let mut rng = fastrand::Rng::new();
    // Faults come before timeouts and retries, which never see them.
    if let Some((delay, pct)) = route.fault.delay
        && hits(pct, &mut rng)
    {
        info.flags.push(flags::DELAY);
        tokio::time::sleep(delay).await;
    }
    if let Some((abort, pct)) = route.fault.abort
        && hits(pct, &mut rng)
    {
        info.flags.push(flags::ABORT);
        return (abort_response(abort), info);
    }
    let Some(dest) = split::pick(dests, |d| d.weight, &mut rng) else {
        info.flags.push(flags::NO_HEALTHY);
        return (
            error_response(StatusCode::SERVICE_UNAVAILABLE, "no destination has weight"),
            info,
        );
    };
    if let Some(rw) = &route.rewrite {
        rewrite(&mut req, matched, rw);
    }
    route.headers.request.apply(req.headers_mut());
    dest.headers.request.apply(req.headers_mut());
    // Only this proxy names the route to the server's (an app's own value
    // would pick another rate-limit bucket).
    req.headers_mut().remove(super::ROUTE);
    if let Some(name) = route
        .name
        .as_deref()
        .and_then(|n| HeaderValue::try_from(n).ok())
    {
        req.headers_mut().insert(super::ROUTE, name);
    }
    let mut resp = if super::is_upgrade(&req) {
        upgrade(ctx, router, dest, client, dst, req, &mut info).await
    } else {
        let (req, tape) = {
            let (parts, body) = req.into_parts();
            let (body, tape) = replay::record(body);
            (Request::from_parts(parts, body.boxed()), tape)
        };
        for m in &route.mirrors {
            if hits(m.percent, &mut rng) {
                mirror(ctx, router, m, &req, &tape, client, dst, proto);
            }
        }
        let tries = tries(
            ctx, router, route, dest, client, dst, proto, req, &tape, &mut info,
        );
        match route.timeout {
            Some(t) => match tokio::time::timeout(t, tries).await {
                Ok(r) => r,
                Err(_) => {
                    info.flags.push(flags::TIMEOUT);
                    error_response(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout")
                }
            },
            None => tries.await,
        }
    };
    route.headers.response.apply(resp.headers_mut());
    dest.headers.response.apply(resp.headers_mut());
    if let (Some(c), Some(o)) = (&route.cors, origin) {
        c.response_headers(o, resp.headers_mut());
    }
    (resp, info)
}

fn rewrite(req: &mut Request<Incoming>, matched: Option<&StrMatch>, rw: &crate::traffic::Rewrite) {
    if rw.uri.is_some() || rw.regex.is_some() {
        let pq = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let new = rewrite_path(&pq, matched, rw);
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

/// A request's head, to build the next try's request from.
struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Head {
    fn of<B>(req: &Request<B>) -> Self {
        Self {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        }
    }

    fn with(&self, body: Body) -> Request<Body> {
        let mut r = Request::new(body);
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.version_mut() = self.version;
        *r.headers_mut() = self.headers.clone();
        r
    }
}

/// The backend, subset and service port `dest` names, or why none.
fn cluster<'r>(
    router: &'r Router,
    dest: &Dest,
    app_port: u16,
) -> Result<(&'r Backend, &'r Subset, u16), String> {
    let backend = router
        .backends
        .get(&dest.host)
        .ok_or_else(|| format!("unknown destination host {}", dest.host))?;
    let port = backend.service_port(dest.port, app_port);
    let sub = backend
        .subset(&dest.subset, port)
        .ok_or_else(|| format!("{} has no subset {:?}", dest.host, dest.subset))?;
    Ok((backend, sub, port))
}

#[allow(clippy::too_many_arguments)]
async fn tries(
    ctx: &Arc<Ctx>,
    router: &Router,
    route: &Route,
    dest: &Dest,
    client: &Client,
    dst: SocketAddr,
    proto: Protocol,
    req: Request<Body>,
    tape: &Tape,
    info: &mut Info,
) -> Response<Body> {
    let (backend, sub, svc_port) = match cluster(router, dest, dst.port()) {
        Ok(c) => c,
        Err(e) => {
            info.flags.push(flags::NO_HEALTHY);
            return error_response(StatusCode::SERVICE_UNAVAILABLE, &e);
        }
    };
    let (key, set_cookie) = match (
        sub.balancer.hash_on(),
        sub.balancer
            .hash_on()
            .and_then(|on| hash_key(on, &req, client.ip)),
    ) {
        (
            Some(HashOn::Cookie {
                name,
                ttl: Some(ttl),
                path,
            }),
            None,
        ) => {
            let (value, cookie) = generated_cookie(name, *ttl, path.as_deref());
            (Some(hash(value.as_bytes())), cookie)
        }
        (_, key) => (key, None),
    };
    let finish = |mut r: Response<Body>| {
        if let Some(c) = &set_cookie {
            r.headers_mut().append(header::SET_COOKIE, c.clone());
        }
        r
    };
    let head = Head::of(&req);
    let mut pending = Some(req);
    let mut tried = Vec::new();
    let mut rng = fastrand::Rng::new();
    let policy = &route.retry;
    let mut state = RetryState::new(policy, &backend.budget);
    let _slot = match sub.limits.admit().await {
        Ok(p) => p,
        Err(_) => {
            info.flags.push(flags::OVERFLOW);
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("{}: connection pool overflow", dest.host),
            );
        }
    };
    let _active = backend.budget.request();
    let mut _retry_slot = None;
    loop {
        info.attempts = state.begin();
        let Some((m, w, ep)) = backend.choose(sub, key, &mut tried, &mut rng) else {
            info.flags.push(flags::NO_HEALTHY);
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("no healthy upstream for {}", dest.host),
            );
        };
        info.used = Some(w.clone());
        let Some(req) = pending
            .take()
            .or_else(|| tape.replay().map(|b| head.with(b)))
        else {
            return error_response(StatusCode::BAD_GATEWAY, "request body cannot be replayed");
        };
        let port = backend.endpoint_port(ep, svc_port);
        if let Some(c) = sub.active.get(m) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let sent = send::attempt(ctx, w, port, proto, &sub.conn, req);
        let result = match policy.per_try_timeout {
            Some(t) => tokio::time::timeout(t, sent)
                .await
                .unwrap_or(Err(send::Failure::Timeout)),
            None => sent.await,
        };
        if let Some(c) = sub.active.get(m) {
            c.fetch_sub(1, Ordering::Relaxed);
        }
        let (outcome, resp) = match result {
            Ok(r) => (
                Outcome::Response {
                    status: r.status().as_u16(),
                    grpc: r
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok()),
                },
                Ok(r),
            ),
            Err(send::Failure::Connect(back, e)) => {
                pending = back.map(|b| *b);
                (
                    Outcome::ConnectFailure,
                    Err((flags::CONNECT_FAILURE, StatusCode::SERVICE_UNAVAILABLE, e)),
                )
            }
            Err(send::Failure::Refused(e)) => (
                Outcome::RefusedStream,
                Err((flags::RESET, StatusCode::SERVICE_UNAVAILABLE, e)),
            ),
            // Envoy's local reply for a reset before headers is a 503.
            Err(send::Failure::Reset(e)) => (
                Outcome::Reset,
                Err((flags::RESET, StatusCode::SERVICE_UNAVAILABLE, e)),
            ),
            Err(send::Failure::Timeout) => (
                Outcome::Timeout,
                Err((
                    flags::TIMEOUT,
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream per-try timeout".to_string(),
                )),
            ),
        };
        let seen = match outcome {
            Outcome::Response { status, .. } if status >= 500 => outlier::Observed::Status(status),
            Outcome::Response { .. } => outlier::Observed::Success,
            _ => outlier::Observed::LocalFailure,
        };
        crate::outbound::observe(ctx, sub, &dest.host, w.address, seen);
        let replayable = pending.is_some() || tape.replay().is_some();
        let wait = match state.after(outcome, replayable) {
            Next::Retry(wait, slot) => {
                _retry_slot = Some(slot);
                wait
            }
            Next::Stop { exhausted } => {
                if exhausted {
                    info.flags.push(flags::RETRIES_EXHAUSTED);
                }
                return finish(match resp {
                    Ok(r) => r,
                    Err((flag, status, e)) => {
                        info.flags.push(flag);
                        error_response(status, &format!("{}: {e}", w.address))
                    }
                });
            }
        };
        tracing::debug!(?outcome, attempt = info.attempts, "retrying");
        tokio::time::sleep(wait).await;
    }
}

/// Sends a copy of `req` to a mirror; its answer and failure go nowhere.
#[allow(clippy::too_many_arguments)]
fn mirror(
    ctx: &Arc<Ctx>,
    router: &Arc<Router>,
    m: &crate::traffic::Mirror,
    req: &Request<Body>,
    tape: &Arc<Tape>,
    client: &Client,
    dst: SocketAddr,
    proto: Protocol,
) {
    let mut head = Head::of(req);
    // Istio's shadow authority: `host-shadow[:port]`.
    let auth = authority(req).to_string();
    let shadow = match auth.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => format!("{h}-shadow:{p}"),
        _ => format!("{auth}-shadow"),
    };
    if let Ok(v) = HeaderValue::try_from(shadow.as_str()) {
        head.headers.insert(header::HOST, v);
    }
    if head.uri.authority().is_some() {
        let mut parts = head.uri.clone().into_parts();
        if let Ok(a) = shadow.parse() {
            parts.authority = Some(a);
            if let Ok(u) = Uri::from_parts(parts) {
                head.uri = u;
            }
        }
    }
    let (ctx, router, tape) = (ctx.clone(), router.clone(), tape.clone());
    let (host, subset, port) = (m.host.clone(), m.subset.clone(), m.port);
    let ip = client.ip;
    tokio::spawn(async move {
        let Some(backend) = router.backends.get(&host) else {
            return;
        };
        let Some(body) = tokio::time::timeout(Duration::from_secs(30), tape.replay_when_done())
            .await
            .ok()
            .flatten()
        else {
            return;
        };
        let mut rng = fastrand::Rng::new();
        let svc_port = backend.service_port(port, dst.port());
        let Some(sub) = backend.subset(&subset, svc_port) else {
            return;
        };
        let key = sub
            .balancer
            .hash_on()
            .and_then(|on| hash_key(on, &head.with(Body::default()), ip));
        let Some((_, w, ep)) = backend.choose(sub, key, &mut Vec::new(), &mut rng) else {
            return;
        };
        let port = backend.endpoint_port(ep, svc_port);
        let sent = send::attempt(&ctx, w, port, proto, &sub.conn, head.with(body));
        match tokio::time::timeout(Duration::from_secs(30), sent).await {
            Ok(Ok(r)) => {
                // Drain so the connection is reusable; the caller never sees it.
                let _ = r.into_body().collect().await;
            }
            Ok(Err(e)) => tracing::debug!(?e, "mirror failed"),
            Err(_) => tracing::debug!("mirror timed out"),
        }
    });
}

async fn upgrade(
    ctx: &Arc<Ctx>,
    router: &Router,
    dest: &Dest,
    client: &Client,
    dst: SocketAddr,
    req: Request<Incoming>,
    info: &mut Info,
) -> Response<Body> {
    let (backend, sub, svc_port) = match cluster(router, dest, dst.port()) {
        Ok(c) => c,
        Err(e) => {
            info.flags.push(flags::NO_HEALTHY);
            return error_response(StatusCode::SERVICE_UNAVAILABLE, &e);
        }
    };
    let key = sub
        .balancer
        .hash_on()
        .and_then(|on| hash_key(on, &req, client.ip));
    let Some((_, w, ep)) = backend.choose(sub, key, &mut Vec::new(), &mut fastrand::Rng::new())
    else {
        info.flags.push(flags::NO_HEALTHY);
        return error_response(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream");
    };
    info.used = Some(w.clone());
    info.attempts = 1;
    let port = backend.endpoint_port(ep, svc_port);
    match send::tunnel(ctx, w, port, req).await {
        Ok(r) => r,
        Err(e) => {
            info.flags.push(flags::CONNECT_FAILURE);
            error_response(
                StatusCode::BAD_GATEWAY,
                &format!("upgrade to {}: {e}", w.address),
            )
        }
    }
}
