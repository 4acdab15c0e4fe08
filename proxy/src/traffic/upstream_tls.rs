//! A DestinationRule's `trafficPolicy.tls`: how the proxy connects to a
//! destination's endpoints.
//!
//! - unset: mesh mTLS to endpoints with a proxy, plaintext to the others
//!   (Istio's auto mTLS);
//! - `ISTIO_MUTUAL`: mesh mTLS, and an endpoint without a proxy is not
//!   dialed at all (it could not answer mTLS);
//! - `DISABLE`: plaintext, even to endpoints with a proxy;
//! - `SIMPLE` and `MUTUAL`: TLS originated to the endpoint's own port, the
//!   server certificate checked against `caCertificates` (else the
//!   system's roots) and `subjectAltNames` (else the SNI), with the client
//!   certificate of `MUTUAL`. The files are read when the configuration
//!   arrives, as Envoy reads them; one that cannot be read leaves this
//!   destination failing with the reason (503 `UF`), nothing else.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use api::discovery::Workload;
use api::proto::{self, TlsMode};
use api::spiffe::SpiffeId;
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::http::Body;

/// How endpoints of one subset are connected to.
#[derive(Clone, Default)]
pub enum UpstreamTls {
    /// Mesh mTLS where the endpoint has a proxy.
    #[default]
    Auto,
    /// Mesh mTLS only.
    IstioMutual,
    /// Plaintext.
    Disable,
    /// TLS originated by the proxy.
    Originate(Arc<Origination>),
    /// Origination asked for and impossible: why.
    Broken(Arc<str>),
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl UpstreamTls {
    /// From the subset's `spec`, for destination `host`.
    pub fn compile(spec: Option<&proto::UpstreamTls>, host: &str) -> Self {
        let Some(spec) = spec else {
            return Self::Auto;
        };
        match spec.mode() {
            TlsMode::Auto => Self::Auto,
            TlsMode::IstioMutual => Self::IstioMutual,
            TlsMode::Disable => Self::Disable,
            TlsMode::Simple | TlsMode::Mutual => match Origination::new(spec, host) {
                Ok(o) => Self::Originate(Arc::new(o)),
                Err(e) => {
                    let e = format!("{host}: trafficPolicy.tls: {e}");
                    tracing::warn!(error = %e, "TLS origination impossible: requests fail");
                    Self::Broken(e.into())
                }
            },
        }
    }

    /// The mode's name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::IstioMutual => "ISTIO_MUTUAL",
            Self::Disable => "DISABLE",
            Self::Originate(o) if o.mutual => "MUTUAL",
            Self::Originate(_) => "SIMPLE",
            Self::Broken(_) => "broken",
        }
    }

    /// The identity to dial `w` with over mesh mTLS (`None`: not over
    /// mesh mTLS); `Err` when it cannot be dialed as asked.
    pub fn mesh_identity<'a>(&self, w: &'a Workload) -> Result<Option<&'a SpiffeId>, String> {
        match (self, &w.identity) {
            (Self::Auto | Self::IstioMutual, Some(id)) => Ok(Some(id)),
            (Self::Auto | Self::Disable | Self::Originate(_), _) => Ok(None),
            (Self::IstioMutual, None) => Err(format!(
                "ISTIO_MUTUAL: {} has no proxy to answer mTLS",
                w.address
            )),
            (Self::Broken(e), _) => Err(e.to_string()),
        }
    }
}

/// TLS originated to one destination's endpoints.
pub struct Origination {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
    mutual: bool,
    /// Pooled keep-alive HTTP/1.1 over it.
    pub http1: hyper_util::client::legacy::Client<TlsConnect, Body>,
}

fn read(path: &str, what: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{what} {path}: {e}"))
}

fn certs(path: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path, what)?;
    let der = common::pki::pem_certs(&pem).map_err(|e| format!("{what} {path}: {e}"))?;
    if der.is_empty() {
        return Err(format!("{what} {path}: no PEM certificate in it"));
    }
    Ok(der.into_iter().map(CertificateDer::from).collect())
}

fn key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(path, "privateKey")?;
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| format!("privateKey {path}: {e}"))?
        .ok_or_else(|| format!("privateKey {path}: no PEM private key in it"))
}

fn roots(spec: &proto::UpstreamTls) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    if spec.ca_certificates.is_empty() {
        let found = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(found.certs);
        if roots.is_empty() {
            return Err("no caCertificates given and no system roots found".into());
        }
    } else {
        for c in certs(&spec.ca_certificates, "caCertificates")? {
            roots
                .add(c)
                .map_err(|e| format!("caCertificates {}: {e}", spec.ca_certificates))?;
        }
    }
    Ok(roots)
}

impl Origination {
    fn new(spec: &proto::UpstreamTls, host: &str) -> Result<Self, String> {
        let provider = common::tls::provider();
        let sni = if spec.sni.is_empty() { host } else { &spec.sni };
        let name =
            ServerName::try_from(sni.to_string()).map_err(|e| format!("sni {sni:?}: {e}"))?;
        let verifier = Verifier::new(spec, &provider)?;
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let mutual = spec.mode() == TlsMode::Mutual;
        let config = if mutual {
            if spec.client_certificate.is_empty() || spec.private_key.is_empty() {
                return Err("MUTUAL needs clientCertificate and privateKey".into());
            }
            builder
                .with_client_auth_cert(
                    certs(&spec.client_certificate, "clientCertificate")?,
                    key(&spec.private_key)?,
                )
                .map_err(|e| format!("clientCertificate and privateKey: {e}"))?
        } else {
            builder.with_no_client_auth()
        };
        let mut http = config.clone();
        http.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connect = TlsConnect {
            connector: tokio_rustls::TlsConnector::from(Arc::new(http)),
            name: name.clone(),
        };
        let http1 =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .build(connect);
        Ok(Self {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            name,
            mutual,
            http1,
        })
    }

    /// A TLS connection to `addr`, within `timeout`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> anyhow::Result<TlsStream<TcpStream>> {
        handshake(&self.connector, &self.name, addr, timeout).await
    }
}

async fn handshake(
    connector: &tokio_rustls::TlsConnector,
    name: &ServerName<'static>,
    addr: SocketAddr,
    timeout: Duration,
) -> anyhow::Result<TlsStream<TcpStream>> {
    let tcp = crate::connect::plain(addr, timeout).await?;
    tokio::time::timeout(timeout, connector.connect(name.clone(), tcp))
        .await
        .map_err(|_| anyhow::anyhow!("TLS handshake with {addr} timed out"))?
        .map_err(|e| anyhow::anyhow!("TLS handshake with {addr}: {e}"))
}

/// Checks the server's certificate: its chain against the roots, its
/// name against `subjectAltNames` (any one) or else the SNI; nothing
/// with `insecureSkipVerify`.
#[derive(Debug)]
struct Verifier {
    inner: Option<Arc<WebPkiServerVerifier>>,
    names: Vec<ServerName<'static>>,
    provider: Arc<CryptoProvider>,
}

impl Verifier {
    fn new(spec: &proto::UpstreamTls, provider: &Arc<CryptoProvider>) -> Result<Self, String> {
        let inner = if spec.insecure_skip_verify {
            None
        } else {
            let roots = Arc::new(roots(spec)?);
            Some(
                WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| e.to_string())?,
            )
        };
        let names = spec
            .subject_alt_names
            .iter()
            .map(|n| {
                ServerName::try_from(n.clone()).map_err(|_| {
                    format!("subjectAltNames: {n:?} is neither a DNS name nor an IP address")
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            inner,
            names,
            provider: provider.clone(),
        })
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(inner) = &self.inner else {
            return Ok(ServerCertVerified::assertion());
        };
        if self.names.is_empty() {
            return inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        }
        let mut last = None;
        for n in &self.names {
            match inner.verify_server_cert(end_entity, intermediates, n, ocsp, now) {
                Ok(v) => return Ok(v),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| rustls::Error::General("no subjectAltName".into())))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Connects the pooled HTTP/1.1 client over TLS to the URI's address.
#[derive(Clone)]
pub struct TlsConnect {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

/// A TLS connection as hyper's client takes it.
pub struct TlsIo(TokioIo<TlsStream<TcpStream>>);

impl Connection for TlsIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for TlsIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for TlsIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

type Connecting = Pin<Box<dyn std::future::Future<Output = Result<TlsIo, std::io::Error>> + Send>>;

impl tower::Service<Uri> for TlsConnect {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (connector, name) = (self.connector.clone(), self.name.clone());
        Box::pin(async move {
            let addr: SocketAddr = uri
                .authority()
                .and_then(|a| a.as_str().parse().ok())
                .ok_or_else(|| std::io::Error::other(format!("{uri}: not an endpoint address")))?;
            let timeout = crate::traffic::limits::CONNECT_TIMEOUT;
            handshake(&connector, &name, addr, timeout)
                .await
                .map(|s| TlsIo(TokioIo::new(s)))
                .map_err(std::io::Error::other)
        })
    }
}
