//! `mesh.v1.Identity`: certificates for proxies that prove who they are.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use api::proto::identity_server::Identity;
use api::proto::{CertifyRequest, CertifyResponse};
use api::spiffe::SpiffeId;
use tonic::{Request, Response, Status};

use mesh_controller_core::ca::Ca;
use mesh_controller_core::store::{ReviewError, Store};

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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use api::cluster::TokenReview;

    use super::*;
    use mesh_controller_core::store::BoxFuture;

    /// A store that knows one token.
    struct OneToken;

    impl Store for OneToken {
        fn review_token<'a>(
            &'a self,
            token: &'a str,
        ) -> BoxFuture<'a, Result<TokenReview, ReviewError>> {
            Box::pin(async move {
                (token == "good")
                    .then(|| TokenReview {
                        pod: "orders-1".into(),
                        namespace: "shop".into(),
                        service_account: "orders".into(),
                    })
                    .ok_or(ReviewError::Rejected)
            })
        }
    }

    fn service() -> IdentityService {
        let root = common::pki::generate_root("cluster.local").unwrap();
        let issuer = common::pki::generate_issuer(&root, "cluster.local").unwrap();
        let ca = Ca::new(&issuer, &root.cert, Duration::from_secs(60)).unwrap();
        let store = OneToken;
        IdentityService::new(Arc::new(ca), Arc::new(store), "cluster.local".into())
    }

    fn request(identity: &str, token: &str) -> Request<CertifyRequest> {
        let id: SpiffeId = identity
            .parse()
            .unwrap_or_else(|_| "spiffe://cluster.local/ns/x/sa/y".parse().unwrap());
        let (_key, csr) = common::pki::new_csr(&id).unwrap();
        Request::new(CertifyRequest {
            identity: identity.into(),
            token: token.into(),
            csr_der: csr,
        })
    }

    #[tokio::test]
    async fn certifies_the_token_holder_only_for_its_own_identity() {
        let svc = service();
        let ok = svc
            .certify(request("spiffe://cluster.local/ns/shop/sa/orders", "good"))
            .await
            .unwrap()
            .into_inner();
        let info = common::pki::cert_info(&ok.chain_der[0]).unwrap();
        assert_eq!(
            info.identity.to_string(),
            "spiffe://cluster.local/ns/shop/sa/orders"
        );
        assert_eq!(ok.chain_der.len(), 2);
        assert_eq!(ok.trust_anchors_der.len(), 1);

        let bad_token = svc
            .certify(request(
                "spiffe://cluster.local/ns/shop/sa/orders",
                "stolen?",
            ))
            .await
            .unwrap_err();
        assert_eq!(bad_token.code(), tonic::Code::Unauthenticated);
        let other = svc
            .certify(request(
                "spiffe://cluster.local/ns/shop/sa/payments",
                "good",
            ))
            .await
            .unwrap_err();
        assert_eq!(other.code(), tonic::Code::PermissionDenied);
        assert!(
            other
                .message()
                .contains("not spiffe://cluster.local/ns/shop/sa/payments"),
            "{}",
            other.message()
        );
        let foreign = svc
            .certify(request("spiffe://evil.example/ns/shop/sa/orders", "good"))
            .await
            .unwrap_err();
        assert_eq!(foreign.code(), tonic::Code::PermissionDenied);
        let garbage = svc.certify(request("not-an-id", "good")).await.unwrap_err();
        assert_eq!(garbage.code(), tonic::Code::InvalidArgument);
        let mut bad_csr = request("spiffe://cluster.local/ns/shop/sa/orders", "good");
        bad_csr.get_mut().csr_der = b"junk".to_vec();
        assert_eq!(
            svc.certify(bad_csr).await.unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
