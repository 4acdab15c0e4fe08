//! The admission webhooks over HTTPS, as the API server calls them:
//! `POST /inject` (mutating: the sidecar) and `POST /validate` (mesh
//! resources), each an `AdmissionReview` in and out. The decisions are
//! [`mesh_controller_core::admission`]'s; this is the transport, with a
//! serving certificate from the mesh CA (the webhook configurations'
//! `caBundle` is the trust anchors).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mesh_controller_core::admission::{self, AdmissionReview};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The largest review read (the API server's own limit is 3 MiB).
const MAX_BODY: usize = 4 << 20;

/// The serving certificate, replaced when renewed.
#[derive(Debug)]
pub struct Serving(arc_swap::ArcSwap<rustls::sign::CertifiedKey>);

impl Serving {
    /// From `chain` (leaf first) and its PKCS#8 `key`, DER.
    pub fn new(chain: Vec<Vec<u8>>, key: Vec<u8>) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self(arc_swap::ArcSwap::from_pointee(certified(
            chain, key,
        )?))))
    }

    /// Serves `chain` and `key` from now on.
    pub fn renew(&self, chain: Vec<Vec<u8>>, key: Vec<u8>) -> anyhow::Result<()> {
        self.0.store(Arc::new(certified(chain, key)?));
        Ok(())
    }

    /// TLS settings that serve the current certificate.
    pub fn tls(self: &Arc<Self>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let mut c = rustls::ServerConfig::builder_with_provider(common::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(c))
    }
}

fn certified(chain: Vec<Vec<u8>>, key: Vec<u8>) -> anyhow::Result<rustls::sign::CertifiedKey> {
    let chain = chain
        .into_iter()
        .map(rustls::pki_types::CertificateDer::from)
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.into());
    let signing = common::tls::provider()
        .key_provider
        .load_private_key(key)
        .context("the webhook's key")?;
    Ok(rustls::sign::CertifiedKey::new(chain, signing))
}

impl rustls::server::ResolvesServerCert for Serving {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// Serves on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    settings: api::inject::Settings,
) {
    let acceptor = TlsAcceptor::from(tls);
    let settings = Arc::new(settings);
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            continue;
        };
        let (acceptor, settings) = (acceptor.clone(), settings.clone());
        tokio::spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "webhook TLS handshake failed");
                    return;
                }
            };
            let svc = hyper::service::service_fn(move |req| handle(req, settings.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Binds `addr`.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the webhooks on {addr}"))
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

async fn handle(
    req: Request<Incoming>,
    settings: Arc<api::inject::Settings>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    if req.method() != Method::POST || !matches!(path.as_str(), "/inject" | "/validate") {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            "{\"error\": \"POST /inject or /validate\"}".into(),
        ));
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("{{\"error\": {:?}}}", e.to_string()),
            ));
        }
    };
    let review: AdmissionReview = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                format!(
                    "{{\"error\": {:?}}}",
                    format!("not an AdmissionReview: {e}")
                ),
            ));
        }
    };
    let answer = if path == "/inject" {
        admission::mutate(&review, &settings)
    } else {
        admission::validate(&review)
    };
    Ok(reply(
        StatusCode::OK,
        serde_json::to_string(&answer).unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn answers_reviews_over_tls_with_a_certificate_from_the_mesh_ca() {
        let root = common::pki::generate_root("cluster.local").unwrap();
        let issuer = common::pki::generate_issuer(&root, "cluster.local").unwrap();
        let ca = mesh_controller_core::ca::Ca::new(
            &issuer,
            &root.cert,
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
        let (chain, key) = ca.serving(&["localhost".to_string()]).unwrap();
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let settings = api::inject::Settings::for_image(api::inject::DEFAULT_IMAGE);
        let serving = Serving::new(chain, key).unwrap();
        tokio::spawn(serve(listener, serving.tls().unwrap(), settings));

        // A client that trusts the mesh's root only, as the API server
        // trusts the caBundle.
        let mut roots = rustls::RootCertStore::empty();
        for der in common::pki::pem_certs(&root.cert).unwrap() {
            roots.add(der.into()).unwrap();
        }
        let client = rustls::ClientConfig::builder_with_provider(common::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let body = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {"uid": "u-9", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "namespace": "shop", "operation": "CREATE",
                        "object": {"metadata": {"name": "web"}, "spec": {"containers": [{"name": "main"}]}}}
        })
        .to_string();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        let req = format!(
            "POST /inject HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        tls.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        let _ = tls.read_to_string(&mut out).await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        let json = out.split("\r\n\r\n").nth(1).unwrap();
        let review: AdmissionReview = serde_json::from_str(json).unwrap();
        let resp = review.response.unwrap();
        assert_eq!(resp.uid, "u-9");
        assert!(resp.allowed);
        assert_eq!(resp.patch_type.as_deref(), Some("JSONPatch"));
    }
}
