//! Getting and renewing the workload certificate.
//!
//! A fresh key and CSR each time; the bootstrap token proves the pod. The
//! certificate is renewed when 70% of its lifetime has passed (Linkerd's
//! rule), and the old one stays in use until the new one is in hand; a
//! failed renewal is retried with backoff, never later than expiry.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use api::proto::CertifyRequest;
use api::proto::identity_client::IdentityClient;
use common::backoff::Backoff;
use common::tls::Identity;

use crate::control::{self, ControllerAddr};

/// Fraction of the lifetime after which the certificate is renewed.
pub const RENEW_AT: f64 = 0.7;

/// Keeps `ident` certified for as long as the proxy runs.
pub async fn run(ctl: ControllerAddr, ident: Arc<Identity>, token_file: PathBuf) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        let wait = match certify(&ctl, &ident, &token_file).await {
            Ok(lifetime) => {
                backoff.reset();
                lifetime.mul_f64(RENEW_AT)
            }
            Err(e) => {
                let d = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?d, "certificate request failed");
                d
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// One certificate request; returns the remaining lifetime of the new one.
async fn certify(
    ctl: &ControllerAddr,
    ident: &Arc<Identity>,
    token_file: &PathBuf,
) -> anyhow::Result<Duration> {
    let token = std::fs::read_to_string(token_file)
        .map_err(|e| anyhow::anyhow!("reading token {}: {e}", token_file.display()))?;
    let (key, csr) = common::pki::new_csr(ident.id())?;
    let mut client = IdentityClient::new(control::channel(ctl, ident)?);
    let resp = client
        .certify(CertifyRequest {
            identity: ident.id().to_string(),
            token: token.trim().to_string(),
            csr_der: csr,
        })
        .await?
        .into_inner();
    if !resp.trust_anchors_der.is_empty() {
        ident.set_anchors(resp.trust_anchors_der)?;
    }
    ident.set_certificate(resp.chain_der, key.serialize_der())?;
    let creds = ident
        .credentials()
        .ok_or_else(|| anyhow::anyhow!("certificate not installed"))?;
    let left = creds
        .info
        .not_after
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tracing::info!(serial = %creds.info.serial, valid_for = ?left, "certificate installed");
    Ok(left)
}
