//! The accept loop every listener of the proxy runs: each connection on a
//! task of its own, failures logged, never fatal; it stops at the drain.

use std::future::Future;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::drain::Watch;

/// Accepts until the drain starts (the listener then closes); `what`
/// names the listener in logs. Each connection counts for the drain.
pub async fn serve<F, Fut>(listener: TcpListener, what: &'static str, drain: Watch, handler: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = drain.signaled() => {
                tracing::debug!("{what}: draining, no longer accepting");
                return;
            }
        };
        match accepted {
            Ok((tcp, peer)) => {
                let conn = handler(tcp);
                let guard = drain.guard();
                tokio::spawn(async move {
                    let _guard = guard;
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "{what} connection failed");
                    }
                });
            }
            Err(e) => {
                // Out of descriptors, say: do not spin.
                tracing::warn!(error = %e, "{what} accept");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
