//! The accept loop every listener of the proxy runs: each connection on a
//! task of its own, failures logged, never fatal.

use std::future::Future;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// Accepts until the process ends; `what` names the listener in logs.
pub async fn serve<F, Fut>(listener: TcpListener, what: &'static str, handler: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let conn = handler(tcp);
                tokio::spawn(async move {
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
