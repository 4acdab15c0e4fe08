//! Outbound HTTP: the app's connection served by hyper; each request goes
//! through the target's compiled routing ([`super::forward`]) and is
//! counted in the Istio metrics and the access log.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use api::discovery::Resolved;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use tokio::io::{AsyncRead, AsyncWrite};

use super::Body;
use super::forward::{self, Client};
use crate::detect::Protocol;
use crate::discovery::Target;
use crate::metrics::RequestLabels;
use crate::{Ctx, access_log};

/// Serves the app's connection until it closes.
pub async fn serve<IO>(
    ctx: Arc<Ctx>,
    app: IO,
    client_ip: IpAddr,
    target: Arc<Target>,
    dst: SocketAddr,
    proto: Protocol,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let client = Arc::new(Client {
        source: ctx.source.load_full(),
        ip: client_ip,
    });
    let drain = ctx.drain.clone();
    let svc = service_fn(move |req| {
        let (ctx, target, client) = (ctx.clone(), target.clone(), client.clone());
        async move { Ok::<_, Infallible>(handle(&ctx, &target, &client, dst, proto, req).await) }
    });
    if let Err(e) = super::limits::serve(app, svc, proto, &drain).await {
        tracing::debug!(error = %e, "outbound HTTP connection ended");
    }
}

async fn handle(
    ctx: &Arc<Ctx>,
    target: &Target,
    client: &Client,
    dst: SocketAddr,
    proto: Protocol,
    req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let service = match &target.resolved {
        Resolved::Workload(w) => w.address.to_string(),
        Resolved::Service(svc) => svc.hostname.clone(),
    };
    let grpc = super::is_grpc(&req);
    let log = ctx.access_log.then(|| access_log::Request::of(&req));
    // The latest routing, also for a connection opened before it changed.
    let router = ctx
        .discovery
        .current(dst.ip())
        .map_or_else(|| target.router.clone(), |t| t.router.clone());
    let (resp, info) = forward::route(ctx, &router, client, dst, proto, req).await;
    let used = info.used.as_ref();
    let me = ctx.identity.id();
    let principal = me.to_string();
    let dst_principal = used
        .and_then(|w| w.identity.as_ref())
        .map(ToString::to_string);
    let code = resp.status().as_u16().to_string();
    let (dst_workload, dst_ns) = used.map_or(("unknown", "unknown"), |w| {
        (w.workload.as_str(), w.namespace.as_str())
    });
    let flags = info.flags();
    ctx.metrics.request(
        &RequestLabels([
            "source",
            &ctx.workload,
            me.namespace(),
            &principal,
            &service,
            dst_workload,
            dst_ns,
            dst_principal.as_deref().unwrap_or("unknown"),
            if grpc { "grpc" } else { "http" },
            &code,
            &flags,
            if dst_principal.is_some() {
                "mutual_tls"
            } else {
                "none"
            },
        ]),
        started.elapsed(),
    );
    if let Some(log) = log {
        log.write(&resp, &info, &service, started.elapsed());
    }
    resp
}
