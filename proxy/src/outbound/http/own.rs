//! Requests the proxy sends on its own behalf (an external authorizer's
//! check, span export), through its own outbound stack as the app's
//! would go: so over mTLS to a meshed server, balanced over its
//! endpoints, with its DestinationRule's policies.

use std::sync::Arc;

use hyper::{Request, Response};
use tower::ServiceExt;

use super::{Conn, stack};
use crate::detect::Protocol;
use crate::discovery::Lookup;
use crate::http::Body;
use crate::outbound::Outbound;

/// Sends `req` to the Service `host:port`, as `proto`.
pub(crate) async fn send(
    ob: &Outbound,
    host: &str,
    port: u32,
    proto: Protocol,
    req: Request<Body>,
) -> anyhow::Result<Response<Body>> {
    let port = u16::try_from(port)?;
    let addr = tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{host} does not resolve"))?;
    let Lookup::Mesh(target) = ob.discovery.lookup(addr.ip()).await else {
        anyhow::bail!("{host} ({addr}) is not a Service of the mesh");
    };
    let conn = Conn {
        client: ob.pod.ip,
        source: ob.pod.source.load_full(),
        dst: addr,
        proto,
    };
    Ok(stack(ob, target, &conn).oneshot(req).await?)
}

/// Sends span exports to the collector a request names in its URI.
pub(crate) fn collector(ob: Arc<Outbound>) -> crate::trace::export::Send {
    Arc::new(move |req: Request<Body>| {
        let ob = ob.clone();
        Box::pin(async move {
            let host = req.uri().host().unwrap_or_default().to_string();
            let port = req.uri().port_u16().unwrap_or(80);
            let proto = if req.version() == hyper::Version::HTTP_2 {
                Protocol::Http2
            } else {
                Protocol::Http1
            };
            send(&ob, &host, u32::from(port), proto, req).await
        })
    })
}
