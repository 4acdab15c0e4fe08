//! The app's probes, run by the proxy for kubelet: the injector pointed
//! each HTTP or TCP probe of the app at `/app-health/<container>/<kind>`
//! on the health port and gave the originals in `MESH_APP_PROBERS`
//! ([`api::inject::AppProbe`]). The proxy runs the original against the
//! app from its own UID (never redirected) and answers 200 or 503, so
//! kubelet's plaintext probes keep working when mTLS is strict.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use api::inject::AppProbe;
use axum::http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The originals, by path, and the app's address.
#[derive(Debug, Clone, Default)]
pub struct AppProbes {
    by_path: BTreeMap<String, AppProbe>,
    app: Option<IpAddr>,
}

impl AppProbes {
    /// Reads `MESH_APP_PROBERS`'s JSON; probes go to `app`.
    pub fn parse(json: &str, app: IpAddr) -> anyhow::Result<Self> {
        let by_path = serde_json::from_str(json)
            .map_err(|e| anyhow::anyhow!("MESH_APP_PROBERS is not a probe map: {e}"))?;
        Ok(Self {
            by_path,
            app: Some(app),
        })
    }

    /// Runs the probe at `path`: `None` when there is none.
    pub async fn run(&self, path: &str) -> Option<StatusCode> {
        let probe = self.by_path.get(path)?;
        let app = self.app?;
        let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
        let ok = tokio::time::timeout(timeout, check(probe, app))
            .await
            .is_ok_and(|r| r.unwrap_or(false));
        Some(if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        })
    }
}

/// Kubelet's rules: a TCP probe passes when it connects; an HTTP probe
/// when the answer's status is 200-399.
async fn check(probe: &AppProbe, app: IpAddr) -> anyhow::Result<bool> {
    let addr = SocketAddr::new(app, probe.port);
    let mut s = TcpStream::connect(addr).await?;
    let Some(path) = &probe.path else {
        return Ok(true);
    };
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/mesh\r\nConnection: close\r\n"
    );
    for (name, value) in &probe.headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await?;
    let status: u16 = std::str::from_utf8(&head[9..12])?.parse()?;
    Ok(head.starts_with(b"HTTP/1.") && (200..400).contains(&status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn app(answer: &'static str) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let reply = if req.starts_with("GET /healthz ") && req.contains("x-probe: yes") {
                    answer
                } else {
                    "HTTP/1.1 404 Not Found\r\n\r\n"
                };
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        port
    }

    fn probes(json: &str) -> AppProbes {
        AppProbes::parse(json, "127.0.0.1".parse().unwrap()).unwrap()
    }

    #[tokio::test]
    async fn runs_the_original_probe_against_the_app() {
        let up = app("HTTP/1.1 204 No Content\r\n\r\n").await;
        let down = app("HTTP/1.1 500 Oops\r\n\r\n").await;
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let http = |p: u16| {
            format!(r#"{{"path": "/healthz", "port": {p}, "headers": [["x-probe", "yes"]]}}"#)
        };
        let p = probes(&format!(
            r#"{{"/app-health/app/readyz": {}, "/app-health/app/livez": {}, "/app-health/app/startupz": {{"port": {up}}}, "/app-health/x/readyz": {{"port": {closed}}}}}"#,
            http(up),
            http(down)
        ));
        assert_eq!(p.run("/app-health/app/readyz").await, Some(StatusCode::OK));
        assert_eq!(
            p.run("/app-health/app/livez").await,
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
        assert_eq!(
            p.run("/app-health/app/startupz").await,
            Some(StatusCode::OK)
        );
        assert_eq!(
            p.run("/app-health/x/readyz").await,
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
        assert_eq!(p.run("/app-health/y/readyz").await, None);
    }

    #[test]
    fn a_bad_map_is_refused() {
        assert!(AppProbes::parse("[1]", "127.0.0.1".parse().unwrap()).is_err());
    }
}
