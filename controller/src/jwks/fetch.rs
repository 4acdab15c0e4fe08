//! One JWKS fetched over HTTP or HTTPS (the system's trust roots), within
//! a deadline, at most 1 MiB; an OpenID discovery document is followed to
//! its `jwks_uri`. Redirects are not followed.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::Uri;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

const MAX_BODY: usize = 1 << 20;

/// Istio's default `jwtRule.timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The JWKS at `source` (a JWKS, or an OpenID discovery document).
pub async fn jwks(source: &str, timeout: Duration) -> Result<String, String> {
    let doc = get(source, timeout).await?;
    if !source.ends_with("/.well-known/openid-configuration") {
        return Ok(doc);
    }
    let discovery: serde_json::Value =
        serde_json::from_str(&doc).map_err(|e| format!("{source}: not JSON: {e}"))?;
    let uri = discovery["jwks_uri"]
        .as_str()
        .ok_or_else(|| format!("{source}: no jwks_uri"))?;
    get(uri, timeout).await
}

async fn get(url: &str, timeout: Duration) -> Result<String, String> {
    tokio::time::timeout(timeout, get_now(url))
        .await
        .map_err(|_| format!("GET {url}: no answer within {timeout:?}"))?
        .map_err(|e| format!("GET {url}: {e}"))
}

async fn get_now(url: &str) -> Result<String, String> {
    let uri: Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    let host = uri.host().ok_or("no host")?.to_string();
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("only http and https are fetched".into()),
    };
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| e.to_string())?;
    if !tls {
        return exchange(tcp, &uri).await;
    }
    let name = rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
        .map_err(|e| e.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(client_config()?)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    exchange(stream, &uri).await
}

fn client_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!("no system trust roots: HTTPS jwksUris cannot be fetched");
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

async fn exchange<IO>(io: IO, uri: &Uri) -> Result<String, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let authority = uri.authority().map_or("", |a| a.as_str()).to_string();
    let req = hyper::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "mesh-controller")
        .header(hyper::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    if resp.status() != hyper::StatusCode::OK {
        return Err(format!("status {}", resp.status()));
    }
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| "the body is not UTF-8".into())
}
