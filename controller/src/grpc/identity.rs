//! `mesh.v1.Identity`: certificates for proxies that prove who they are.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use api::proto::identity_server::Identity;
use api::proto::{CertifyRequest, CertifyResponse};
use api::spiffe::SpiffeId;
use tonic::{Request, Response, Status};

use crate::ca::Ca;
use crate::store::{ReviewError, Store};

/// The identity service.
pub struct IdentityService {
    ca: Arc<Ca>,
    store: Arc<dyn Store>,
    trust_domain: String,
}

impl IdentityService {
    /// Signs with `ca` what `store` vouches for.
    pub fn new(ca: Arc<Ca>, store: Arc<dyn Store>, trust_domain: String) -> Self {
        Self {
            ca,
            store,
            trust_domain,
        }
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn certify(
        &self,
        req: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let r = req.into_inner();
        let id: SpiffeId = r.identity.parse().map_err(|e: api::spiffe::SpiffeError| {
            Status::invalid_argument(format!("identity: {e}"))
        })?;
        if id.trust_domain() != self.trust_domain {
            return Err(Status::permission_denied(format!(
                "trust domain is {}",
                self.trust_domain
            )));
        }
        let review = self
            .store
            .review_token(&r.token)
            .await
            .map_err(|e| match e {
                ReviewError::Rejected => Status::unauthenticated("bootstrap token rejected"),
                ReviewError::Unavailable(m) => Status::unavailable(m),
            })?;
        if review.namespace != id.namespace() || review.service_account != id.service_account() {
            tracing::warn!(%id, pod = %review.pod, "token holder asked for another identity");
            return Err(Status::permission_denied(format!(
                "the token belongs to {}/{} (service account {}), not {id}",
                review.namespace, review.pod, review.service_account
            )));
        }
        let chain = self
            .ca
            .certify(&r.csr_der, &id)
            .map_err(|e| Status::invalid_argument(format!("csr: {e}")))?;
        let not_after = SystemTime::now() + self.ca.lifetime();
        tracing::info!(%id, pod = %review.pod, "certified");
        Ok(Response::new(CertifyResponse {
            chain_der: chain,
            trust_anchors_der: self.ca.anchors_der().to_vec(),
            not_after_unix: not_after
                .duration_since(UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                .unwrap_or(0),
        }))
    }
}
