//! mTLS between workloads with rustls: TLS 1.3 only, certificates that
//! rotate without a restart, and peers verified as SPIFFE identities.
//!
//! Chain validation is webpki's (through rustls' client verifier, which
//! checks no name); the peer's SPIFFE ID is then read from its one URI SAN
//! and must belong to our trust domain. Which identity a connection must
//! reach is checked by the caller after the handshake
//! ([`peer_identity`]), before any byte of application data is sent.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use crate::SpiffeId;
use crate::pki::{self, CertInfo, PkiError};

/// The crypto provider of the mesh: ring, AES-128-GCM preferred.
pub fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.sort_by_key(|s| match s.suite() {
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => 1,
        _ => 2,
    });
    Arc::new(p)
}

/// Errors building TLS state.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused a configuration or key.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    /// The trust anchors are unusable.
    #[error("trust anchors: {0}")]
    Anchors(String),
    /// Certificate reading failed.
    #[error(transparent)]
    Pki(#[from] PkiError),
}

/// A workload's certificate, as held in memory.
pub struct Credentials {
    /// For rustls.
    pub key: Arc<CertifiedKey>,
    /// For `/config_dump`.
    pub info: CertInfo,
}

/// The certificate and trust anchors of one workload, swapped in place on
/// rotation: new handshakes use the new ones, open connections keep going.
pub struct Identity {
    id: SpiffeId,
    provider: Arc<CryptoProvider>,
    creds: ArcSwap<Option<Arc<Credentials>>>,
    verifier: ArcSwap<Arc<dyn ClientCertVerifier>>,
    anchors_der: ArcSwap<Vec<Vec<u8>>>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn build_verifier(
    provider: &Arc<CryptoProvider>,
    anchors: &[Vec<u8>],
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for a in anchors {
        roots
            .add(CertificateDer::from(a.clone()))
            .map_err(|e| TlsError::Anchors(e.to_string()))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Anchors(e.to_string()))
}

impl Identity {
    /// An identity with trust anchors (DER) and no certificate yet.
    pub fn new(id: SpiffeId, anchors_der: Vec<Vec<u8>>) -> Result<Arc<Self>, TlsError> {
        let provider = provider();
        let verifier = build_verifier(&provider, &anchors_der)?;
        Ok(Arc::new(Self {
            id,
            provider,
            creds: ArcSwap::from_pointee(None),
            verifier: ArcSwap::from_pointee(verifier),
            anchors_der: ArcSwap::from_pointee(anchors_der),
        }))
    }

    /// Who we are.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// The current certificate, if any.
    pub fn credentials(&self) -> Option<Arc<Credentials>> {
        self.creds.load().as_ref().clone()
    }

    /// The trust anchors in force (DER).
    pub fn anchors_der(&self) -> Arc<Vec<Vec<u8>>> {
        self.anchors_der.load_full()
    }

    /// Installs a new certificate chain (leaf first) for `key`. The leaf
    /// must carry our own SPIFFE ID.
    pub fn set_certificate(
        &self,
        chain_der: Vec<Vec<u8>>,
        key_pkcs8: Vec<u8>,
    ) -> Result<(), TlsError> {
        let leaf = chain_der
            .first()
            .ok_or_else(|| TlsError::Pki(PkiError::Parse("empty certificate chain".into())))?;
        let info = pki::cert_info(leaf)?;
        if info.identity != self.id {
            return Err(TlsError::Pki(PkiError::Identity(format!(
                "certificate is for {}, expected {}",
                info.identity, self.id
            ))));
        }
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8));
        let signing = self.provider.key_provider.load_private_key(key)?;
        let chain = chain_der.into_iter().map(CertificateDer::from).collect();
        let certified = Arc::new(CertifiedKey::new(chain, signing));
        self.creds.store(Arc::new(Some(Arc::new(Credentials {
            key: certified,
            info,
        }))));
        Ok(())
    }

    /// Replaces the trust anchors (root rotation: give both roots).
    pub fn set_anchors(&self, anchors_der: Vec<Vec<u8>>) -> Result<(), TlsError> {
        if **self.anchors_der.load() == anchors_der {
            return Ok(());
        }
        self.verifier
            .store(Arc::new(build_verifier(&self.provider, &anchors_der)?));
        self.anchors_der.store(Arc::new(anchors_der));
        Ok(())
    }

    /// Server side of mTLS: requires a client certificate from the mesh.
    pub fn server_config(
        self: &Arc<Self>,
        alpn: &[&[u8]],
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut c = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(SpiffeVerifier {
                identity: self.clone(),
                mandatory: true,
            }))
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        Ok(Arc::new(c))
    }

    /// Server side where a client certificate is optional (the controller,
    /// whose identity service serves proxies that have none yet).
    pub fn server_config_optional_client(
        self: &Arc<Self>,
        alpn: &[&[u8]],
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut c = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(SpiffeVerifier {
                identity: self.clone(),
                mandatory: false,
            }))
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        Ok(Arc::new(c))
    }

    /// Client side: presents our certificate when we have one.
    pub fn client_config(
        self: &Arc<Self>,
        alpn: &[&[u8]],
    ) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let mut c = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SpiffeVerifier {
                identity: self.clone(),
                mandatory: true,
            }))
            .with_client_cert_resolver(Arc::new(Resolver(self.clone())));
        c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        Ok(Arc::new(c))
    }
}

/// The SPIFFE ID of the peer of a finished handshake, from its leaf.
pub fn peer_identity(certs: Option<&[CertificateDer<'_>]>) -> Option<SpiffeId> {
    let leaf = certs?.first()?;
    pki::cert_info(leaf).ok().map(|i| i.identity)
}

/// A server name for `connect`: unused for verification (identities are
/// checked as SPIFFE IDs) but rustls needs one, and it becomes the SNI.
pub fn server_name(id: &SpiffeId) -> ServerName<'static> {
    let label = format!("{}.{}.sa.mesh", id.service_account(), id.namespace());
    ServerName::try_from(label).unwrap_or_else(|_| {
        ServerName::try_from("peer.mesh")
            .unwrap_or(ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()))
    })
}

#[derive(Debug)]
struct Resolver(Arc<Identity>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.credentials().map(|c| c.key.clone())
    }
}

impl rustls::client::ResolvesClientCert for Resolver {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.credentials().map(|c| c.key.clone())
    }

    fn has_certs(&self) -> bool {
        self.0.credentials().is_some()
    }
}

/// Chain to our anchors, then exactly one SPIFFE ID in our trust domain.
#[derive(Debug)]
struct SpiffeVerifier {
    identity: Arc<Identity>,
    mandatory: bool,
}

impl SpiffeVerifier {
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        self.identity
            .verifier
            .load()
            .verify_client_cert(end_entity, intermediates, now)?;
        let info = pki::cert_info(end_entity)
            .map_err(|e| rustls::Error::General(format!("peer certificate: {e}")))?;
        if info.identity.trust_domain() != self.identity.id.trust_domain() {
            return Err(rustls::Error::General(format!(
                "peer {} is outside trust domain {}",
                info.identity,
                self.identity.id.trust_domain()
            )));
        }
        Ok(())
    }

    fn verify13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.identity.provider.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.identity
            .provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ServerCertVerifier for SpiffeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, now)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(
            "TLS 1.2 is not used in the mesh".into(),
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

impl ClientCertVerifier for SpiffeVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, now)?;
        Ok(ClientCertVerified::assertion())
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(
            "TLS 1.2 is not used in the mesh".into(),
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

#[cfg(test)]
mod tests;
