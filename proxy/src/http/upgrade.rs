//! HTTP/1.1 upgrades (WebSocket and the like) carried on a connection of
//! their own: the request goes over it, and once both sides switched
//! protocols the bytes are copied both ways.

use http_body_util::BodyExt;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::Body;
use crate::connect::Io;

/// Sends the upgrade request `req` over `io`; once both sides switched,
/// copies bytes both ways.
pub async fn tunnel_over(
    io: Box<dyn Io>,
    mut req: Request<Body>,
) -> anyhow::Result<Response<Body>> {
    let client_side = hyper::upgrade::on(&mut req);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut resp = sender.send_request(req).await?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let server_side = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            if let (Ok(a), Ok(b)) = tokio::join!(client_side, server_side) {
                let _ =
                    tokio::io::copy_bidirectional(&mut TokioIo::new(a), &mut TokioIo::new(b)).await;
            }
        });
    }
    Ok(resp.map(BodyExt::boxed))
}
