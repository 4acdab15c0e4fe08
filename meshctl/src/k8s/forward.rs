//! Reaching a port inside a pod through the API server, as
//! `kubectl port-forward` does: the proxy's admin endpoint (bound to the
//! pod's loopback) and the controller's debug API.

use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` on `port` of pod `namespace/name`; the body of a 2xx answer.
pub async fn http_get(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    port: u16,
    path: &str,
) -> anyhow::Result<Vec<u8>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let exchange = async {
        let mut pf = pods
            .portforward(name, &[port])
            .await
            .with_context(|| format!("port-forward to {namespace}/{name}:{port}"))?;
        let mut stream = pf
            .take_stream(port)
            .context("the port-forward gave no stream")?;
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        drop(stream);
        let _ = pf.join().await;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| anyhow::anyhow!("{namespace}/{name}:{port} did not answer in 10 s"))??;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("not an HTTP answer")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head.split_whitespace().nth(1).unwrap_or("");
    anyhow::ensure!(
        status.starts_with('2'),
        "{namespace}/{name}:{port}{path} answered {status}: {}",
        String::from_utf8_lossy(&raw[split + 4..]).trim()
    );
    Ok(raw[split + 4..].to_vec())
}

/// A stream to `port` of pod `namespace/name`, open while the returned
/// forwarder lives.
pub async fn open(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    port: u16,
) -> anyhow::Result<(
    impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    kube::api::Portforwarder,
)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut pf = pods
        .portforward(name, &[port])
        .await
        .with_context(|| format!("port-forward to {namespace}/{name}:{port}"))?;
    let stream = pf
        .take_stream(port)
        .context("the port-forward gave no stream")?;
    Ok((stream, pf))
}
