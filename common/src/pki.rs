//! Certificates with rcgen: the trust anchor and issuer of a mesh, workload
//! leaf certificates signed from a CSR, and reading the SPIFFE ID back out.
//!
//! Keys are ECDSA P-256 throughout. A leaf carries exactly one SAN, the URI
//! of its SPIFFE ID, and may be used for both TLS server and client auth.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use crate::SpiffeId;

/// Errors of certificate handling.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen failed to build or sign.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A PEM or DER input could not be read.
    #[error("{0}")]
    Parse(String),
    /// A certificate does not name exactly one valid SPIFFE ID.
    #[error("certificate identity: {0}")]
    Identity(String),
}

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct PemPair {
    /// The certificate.
    pub cert: String,
    /// The PKCS#8 private key.
    pub key: String,
}

fn window(lifetime: Duration) -> (OffsetDateTime, OffsetDateTime) {
    // Back-date a little so that peers with a slightly slow clock accept it.
    let now = OffsetDateTime::now_utc();
    (now - Duration::from_secs(60), now + lifetime)
}

fn random_serial() -> SerialNumber {
    let mut b = [0u8; 16];
    for x in &mut b {
        *x = fastrand::u8(..);
    }
    b[0] &= 0x7f;
    SerialNumber::from_slice(&b)
}

fn ca_params(common_name: &str, lifetime: Duration, path_len: Option<u8>) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (p.not_before, p.not_after) = window(lifetime);
    p.serial_number = Some(random_serial());
    p
}

/// A new self-signed trust anchor (10 years).
pub fn generate_root(trust_domain: &str) -> Result<PemPair, PkiError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let params = ca_params(
        &format!("root.{trust_domain}"),
        Duration::from_secs(10 * 365 * 86400),
        None,
    );
    let cert = params.self_signed(&key)?;
    Ok(PemPair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A new intermediate issuer signed by `root` (1 year), as Linkerd's
/// `identity.issuer`.
pub fn generate_issuer(root: &PemPair, trust_domain: &str) -> Result<PemPair, PkiError> {
    let root_key = KeyPair::from_pem(&root.key)?;
    let root_issuer = Issuer::from_ca_cert_pem(&root.cert, root_key)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let params = ca_params(
        &format!("issuer.{trust_domain}"),
        Duration::from_secs(365 * 86400),
        Some(0),
    );
    let cert = params.signed_by(&key, &root_issuer)?;
    Ok(PemPair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Signs workload certificates.
pub struct Signer {
    issuer: Issuer<'static, KeyPair>,
    issuer_der: Vec<u8>,
}

impl Signer {
    /// From the issuer's certificate and key (PEM).
    pub fn new(issuer: &PemPair) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(&issuer.key)?;
        let issuer_der = pem_certs(&issuer.cert)?
            .into_iter()
            .next()
            .ok_or_else(|| PkiError::Parse("issuer PEM has no certificate".into()))?;
        Ok(Self {
            issuer: Issuer::from_ca_cert_pem(&issuer.cert, key)?,
            issuer_der,
        })
    }

    /// The issuer certificate (DER), sent after the leaf.
    pub fn issuer_der(&self) -> &[u8] {
        &self.issuer_der
    }

    /// Certifies the public key of `csr_der` for `id` (already proven by
    /// the caller) for `lifetime`. Everything but the key is set here: the
    /// CSR's subject and extensions are ignored.
    pub fn sign_csr(
        &self,
        csr_der: &[u8],
        id: &SpiffeId,
        lifetime: Duration,
    ) -> Result<Vec<u8>, PkiError> {
        let der = rustls::pki_types::CertificateSigningRequestDer::from(csr_der);
        let mut csr = CertificateSigningRequestParams::from_der(&der)?;
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.subject_alt_names = vec![spiffe_san(id)?];
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.use_authority_key_identifier_extension = true;
        (p.not_before, p.not_after) = window(lifetime);
        p.serial_number = Some(random_serial());
        csr.params = p;
        Ok(csr.signed_by(&self.issuer)?.der().to_vec())
    }
}

impl Signer {
    /// A new key and a server certificate for `dns_names` (the admission
    /// webhooks' Service names), for `lifetime`; the key as PKCS#8 DER.
    pub fn sign_server(
        &self,
        dns_names: &[String],
        lifetime: Duration,
    ) -> Result<(Vec<u8>, Vec<u8>), PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut p = CertificateParams::new(dns_names.to_vec())?;
        p.distinguished_name = DistinguishedName::new();
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        (p.not_before, p.not_after) = window(lifetime);
        p.serial_number = Some(random_serial());
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok((cert.der().to_vec(), key.serialize_der()))
    }
}

/// The one SAN of a workload certificate: its SPIFFE ID as a URI.
fn spiffe_san(id: &SpiffeId) -> Result<SanType, PkiError> {
    let uri = id
        .to_string()
        .try_into()
        .map_err(|e: rcgen::Error| PkiError::Identity(e.to_string()))?;
    Ok(SanType::URI(uri))
}

/// A new workload key and a CSR for `id`; the key stays with the caller.
pub fn new_csr(id: &SpiffeId) -> Result<(KeyPair, Vec<u8>), PkiError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.subject_alt_names = vec![spiffe_san(id)?];
    let csr = p.serialize_request(&key)?;
    Ok((key, csr.der().to_vec()))
}

/// Every certificate of a PEM text, DER.
pub fn pem_certs(pem: &str) -> Result<Vec<Vec<u8>>, PkiError> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .map(|c| {
            c.map(|c| c.to_vec())
                .map_err(|e| PkiError::Parse(format!("PEM: {e}")))
        })
        .collect()
}

/// DER to PEM.
pub fn der_to_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der))
}

/// What a certificate says of itself.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CertInfo {
    /// The SPIFFE ID of its one URI SAN.
    pub identity: SpiffeId,
    /// Serial number, hex.
    pub serial: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

/// Reads a workload certificate: it must carry exactly one URI SAN, a valid
/// SPIFFE ID.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, PkiError> {
    use x509_parser::prelude::*;
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| PkiError::Parse(format!("certificate: {e}")))?;
    let uris: Vec<&str> = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::Parse(format!("subjectAltName: {e}")))?
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(*u),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let [uri] = uris.as_slice() else {
        return Err(PkiError::Identity(format!(
            "expected exactly one URI SAN, found {}",
            uris.len()
        )));
    };
    let identity = uri
        .parse()
        .map_err(|e: api::spiffe::SpiffeError| PkiError::Identity(e.to_string()))?;
    let ts = |t: ASN1Time| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or(0))
    };
    Ok(CertInfo {
        identity,
        serial: cert.raw_serial_as_string().replace(':', ""),
        not_before: ts(cert.validity().not_before),
        not_after: ts(cert.validity().not_after),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_leaf_with_one_spiffe_uri() {
        let root = generate_root("cluster.local").unwrap();
        let issuer = generate_issuer(&root, "cluster.local").unwrap();
        let signer = Signer::new(&issuer).unwrap();
        let id: SpiffeId = "spiffe://cluster.local/ns/shop/sa/orders".parse().unwrap();
        let other: SpiffeId = "spiffe://cluster.local/ns/shop/sa/evil".parse().unwrap();
        // The CSR asks for another identity: the CA sets the one proven.
        let (_key, csr) = new_csr(&other).unwrap();
        let leaf = signer
            .sign_csr(&csr, &id, Duration::from_secs(3600))
            .unwrap();
        let info = cert_info(&leaf).unwrap();
        assert_eq!(info.identity, id);
        let life = info.not_after.duration_since(info.not_before).unwrap();
        assert_eq!(life, Duration::from_secs(3660));
        // The CA certificates have no URI SAN.
        let issuer_der = pem_certs(&issuer.cert).unwrap().remove(0);
        assert!(matches!(cert_info(&issuer_der), Err(PkiError::Identity(_))));
    }

    #[test]
    fn pem_round_trip() {
        let root = generate_root("cluster.local").unwrap();
        let der = pem_certs(&root.cert).unwrap().remove(0);
        assert_eq!(pem_certs(&der_to_pem(&der)).unwrap(), vec![der]);
    }
}

/// What any certificate says of its names and validity (trust anchors and
/// issuers carry no SPIFFE ID).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertValidity {
    /// Subject, as text.
    pub subject: String,
    /// Issuer, as text.
    pub issuer: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// Whether it may sign certificates.
    pub is_ca: bool,
}

/// Reads the names and validity of a certificate.
pub fn validity(der: &[u8]) -> Result<CertValidity, PkiError> {
    use x509_parser::prelude::*;
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| PkiError::Parse(format!("certificate: {e}")))?;
    let time = |t: ASN1Time| {
        SystemTime::UNIX_EPOCH
            + std::time::Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or(0))
    };
    Ok(CertValidity {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_before: time(cert.validity().not_before),
        not_after: time(cert.validity().not_after),
        is_ca: cert.is_ca(),
    })
}
