//! The certificate authority: signs workload CSRs once the store has
//! confirmed who holds the bootstrap token.

use std::time::Duration;

use api::spiffe::SpiffeId;
use common::pki::{PemPair, PkiError, Signer};

/// Issues leaf certificates.
pub struct Ca {
    signer: Signer,
    anchors_der: Vec<Vec<u8>>,
    lifetime: Duration,
}

impl Ca {
    /// From the issuer pair and the trust anchors (PEM, one or more roots).
    pub fn new(issuer: &PemPair, anchors_pem: &str, lifetime: Duration) -> Result<Self, PkiError> {
        let anchors_der = common::pki::pem_certs(anchors_pem)?;
        if anchors_der.is_empty() {
            return Err(PkiError::Parse(
                "trust anchors: no certificate in the PEM".into(),
            ));
        }
        Ok(Self {
            signer: Signer::new(issuer)?,
            anchors_der,
            lifetime,
        })
    }

    /// Roots proxies must trust (DER).
    pub fn anchors_der(&self) -> &[Vec<u8>] {
        &self.anchors_der
    }

    /// Lifetime of issued certificates.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A serving certificate (leaf then issuer, DER) and its key (PKCS#8
    /// DER) for `dns_names`: the admission webhooks'.
    pub fn serving(&self, dns_names: &[String]) -> Result<(Vec<Vec<u8>>, Vec<u8>), PkiError> {
        let (leaf, key) = self.signer.sign_server(dns_names, self.lifetime)?;
        Ok((vec![leaf, self.signer.issuer_der().to_vec()], key))
    }

    /// Leaf then issuer, DER.
    pub fn certify(&self, csr_der: &[u8], id: &SpiffeId) -> Result<Vec<Vec<u8>>, PkiError> {
        let leaf = self.signer.sign_csr(csr_der, id, self.lifetime)?;
        Ok(vec![leaf, self.signer.issuer_der().to_vec()])
    }
}
