//! Opaque TCP to a mesh target: routed by its `tcp`/`tls` routes (the
//! SNI read from the ClientHello without consuming it), balanced by its
//! DestinationRule (balancer, outlier detection, `maxConnections`,
//! `connectTimeout`), trying up to [`ATTEMPTS`] endpoints, over mTLS to
//! meshed endpoints.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use api::discovery::{Resolved, Workload};
use api::peer::{Peer, ServiceRef, UNKNOWN};
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{Outbound, observe};
use crate::connect::{Io, plain};
use crate::detect;
use crate::discovery::{ATTEMPTS, Target};
use crate::traffic::outlier::Observed;
use crate::traffic::upstream_tls::UpstreamTls;
use crate::{ports, transport};

/// A connected upstream and what it is, for metrics.
pub(super) struct Upstream {
    pub io: Box<dyn Io>,
    /// The service it is for.
    pub service: ServiceRef,
    /// The endpoint's workload.
    pub peer: Peer,
    /// The identity it proved (`unknown` without mTLS).
    pub principal: String,
    pub mtls: bool,
    /// Held while the connection lasts (`maxConnections`).
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Upstream {
    /// A connection to an address outside the mesh.
    pub fn passthrough(io: Box<dyn Io>, dst: SocketAddr) -> Self {
        Self {
            io,
            service: ServiceRef {
                host: dst.ip().to_string(),
                name: dst.ip().to_string(),
                namespace: UNKNOWN.into(),
            },
            peer: Peer::unknown(),
            principal: UNKNOWN.into(),
            mtls: false,
            permit: None,
        }
    }
}

/// An opaque connection to a mesh target, routed by its `tcp`/`tls`
/// routes and its DestinationRule (balancer, outlier detection,
/// `maxConnections`, `connectTimeout`), trying up to [`ATTEMPTS`]
/// endpoints.
pub(super) async fn connect(
    ob: &Outbound,
    app: &mut TcpStream,
    buf: &mut BytesMut,
    client_ip: IpAddr,
    target: &Target,
    dst: SocketAddr,
) -> anyhow::Result<Upstream> {
    let current = ob.discovery.current(dst.ip());
    let router = current.as_ref().map_or(&target.router, |t| &t.router);
    let sni = if router.tls.is_empty() {
        None
    } else {
        detect::sni(app, buf, ob.settings.detect_timeout).await
    };
    let src = ob.pod.source.load();
    let mut rng = fastrand::Rng::new();
    let dest = router
        .l4_dest(dst.ip(), dst.port(), &src, sni.as_deref(), &mut rng)
        .ok_or_else(|| anyhow::anyhow!("no tcp or tls route takes {dst} (sni {sni:?})"))?;
    let backend = router
        .backends
        .get(&dest.host)
        .ok_or_else(|| anyhow::anyhow!("no backend for {}", dest.host))?;
    if let Resolved::Service(svc) = &target.resolved
        && dest.host == svc.hostname
        && svc.port(dst.port()).is_none()
    {
        anyhow::bail!("service {} has no port {}", svc.hostname, dst.port());
    }
    let mut service = target.service_ref();
    if service.host != dest.host {
        // Routed to another host: metrics name the one it went to.
        service = ServiceRef::from_host(&dest.host);
    }
    let svc_port = backend.service_port(dest.port, dst.port());
    let sub = backend
        .subset(&dest.subset, svc_port)
        .ok_or_else(|| anyhow::anyhow!("{} has no subset {:?}", dest.host, dest.subset))?;
    let permit = sub
        .limits
        .connection()
        .map_err(|_| anyhow::anyhow!("{}: maxConnections reached (UO)", dest.host))?;
    let key = Some(crate::traffic::balance::hash(
        client_ip.to_string().as_bytes(),
    ));
    let mut tried = Vec::new();
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let Some((_, w, ep)) = backend.choose(sub, key, &mut tried, &mut rng) else {
            break;
        };
        let port = backend.endpoint_port(ep, svc_port);
        let result = connect_workload(
            ob,
            w,
            port,
            service.clone(),
            &sub.tls,
            sub.conn.connect_timeout,
        )
        .await;
        let seen = if result.is_ok() {
            Observed::Success
        } else {
            Observed::LocalFailure
        };
        observe(&ob.telemetry.metrics, sub, &dest.host, w.address, seen);
        match result {
            Ok(mut u) => {
                u.permit = permit;
                return Ok(u);
            }
            Err(e) => {
                tracing::warn!(endpoint = %w.address, error = %e, "endpoint connect failed");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("{} has no ready endpoints", dest.host)))
}

async fn connect_workload(
    ob: &Outbound,
    w: &Workload,
    port: u16,
    service: ServiceRef,
    tls: &UpstreamTls,
    timeout: Duration,
) -> anyhow::Result<Upstream> {
    let base = |io: Box<dyn Io>, principal: String, mtls: bool| Upstream {
        io,
        service: service.clone(),
        peer: Peer::of(w),
        principal,
        mtls,
        permit: None,
    };
    let addr = SocketAddr::new(w.address, port);
    if let UpstreamTls::Originate(o) = tls {
        return Ok(base(
            Box::new(o.connect(addr, timeout).await?),
            UNKNOWN.into(),
            false,
        ));
    }
    match tls.mesh_identity(w).map_err(|e| anyhow::anyhow!(e))? {
        None => Ok(base(
            Box::new(plain(addr, timeout).await?),
            UNKNOWN.into(),
            false,
        )),
        Some(id) => {
            let mut tls = ob
                .upstreams
                .mtls(
                    SocketAddr::new(w.address, ports::MTLS),
                    id,
                    transport::ALPN_TCP,
                    timeout,
                )
                .await?;
            let told = format!("{},{}", ob.pod.me.load().text, service.encode());
            tls.write_all(&transport::encode(port, &told)).await?;
            Ok(base(Box::new(tls), id.to_string(), true))
        }
    }
}
