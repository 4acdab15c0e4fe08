//! Identity on Kubernetes: the controller's store reviews proxies'
//! ServiceAccount tokens with the real API server, for the mesh's audience
//! only, and the identity service signs exactly the holder's SPIFFE ID.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use api::proto::CertifyRequest;
use api::proto::identity_server::Identity;
use api::spiffe::SpiffeId;
use base64::Engine;
use e2e::k8s::{Node, run_dir};
use mesh_controller_core::store::{ReviewError, Store};

fn token(node: &Node, sa: &str, audience: &str) -> String {
    node.kubectl_ok(&[
        "create",
        "token",
        sa,
        "-n",
        "shop",
        "--audience",
        audience,
        "--duration",
        "10m",
    ])
    .trim()
    .to_string()
}

/// A token for `sa` in `shop`, as the API server mints one, but signed
/// here with the node's ServiceAccount key and expiring at `exp`.
fn minted(node: &Node, sa: &str, exp: SystemTime) -> String {
    let uid = node.kubectl_ok(&[
        "get",
        "serviceaccount",
        "-n",
        "shop",
        sa,
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    let iat = secs(exp) - 3600;
    let claims = serde_json::json!({
        "aud": [api::inject::TOKEN_AUDIENCE],
        "exp": secs(exp), "iat": iat, "nbf": iat,
        "iss": "https://kubernetes.default.svc",
        "sub": format!("system:serviceaccount:shop:{sa}"),
        "kubernetes.io": {"namespace": "shop", "serviceaccount": {"name": sa, "uid": uid}},
    });
    let signing_input = format!(
        "{}.{}",
        b64(&serde_json::json!({"alg": "RS256", "typ": "JWT"})),
        b64(&claims)
    );
    let pem = std::fs::read_to_string(run_dir().join("pki/sa.key")).unwrap();
    let der = pem::parse(pem).unwrap();
    let key = ring::signature::RsaKeyPair::from_pkcs8(der.contents())
        .or_else(|_| ring::signature::RsaKeyPair::from_der(der.contents()))
        .unwrap();
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!(
        "{signing_input}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig)
    )
}

fn certify(id: &str, token: &str) -> tonic::Request<CertifyRequest> {
    let spiffe: SpiffeId = id.parse().unwrap();
    let (_key, csr) = common::pki::new_csr(&spiffe).unwrap();
    tonic::Request::new(CertifyRequest {
        identity: id.into(),
        token: token.into(),
        csr_der: csr,
    })
}

pub fn token_reviews(node: &Node) {
    eprintln!("== TokenReview: the holder's own identity only, our audience only, unexpired only");
    let web = token(node, "web", api::inject::TOKEN_AUDIENCE);
    let default = token(node, "default", api::inject::TOKEN_AUDIENCE);
    let elsewhere = token(node, "web", "someone-else");
    // Minting needs the node's ServiceAccount signing key.
    let minted_pair = (!node.external()).then(|| {
        (
            minted(node, "web", SystemTime::now() - Duration::from_secs(600)),
            minted(node, "web", SystemTime::now() + Duration::from_secs(600)),
        )
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(node.kubeconfig()).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap();
        let client = kube::Client::try_from(config).unwrap();
        // Only its token reviews are asked for here; the changes it
        // watches go nowhere.
        let (feed, _) = mesh_controller_core::index::feed();
        let store = Arc::new(mesh_controller_k8s::KubeStore::start(
            client,
            api::inject::TOKEN_AUDIENCE,
            feed,
        ));
        let review = store.review_token(&web).await.unwrap();
        assert_eq!(
            (review.namespace.as_str(), review.service_account.as_str()),
            ("shop", "web")
        );
        assert!(
            matches!(
                store.review_token(&elsewhere).await,
                Err(ReviewError::Rejected)
            ),
            "a token for another audience was accepted"
        );
        // Signed like the API server's own: accepted while fresh, refused once expired.
        match &minted_pair {
            Some((expired, fresh)) => {
                assert_eq!(
                    store.review_token(fresh).await.unwrap().service_account,
                    "web"
                );
                assert!(
                    matches!(
                        store.review_token(expired).await,
                        Err(ReviewError::Rejected)
                    ),
                    "an expired token was accepted"
                );
            }
            None => eprintln!(
                "   (expired tokens need the node's signing key: left out on this cluster)"
            ),
        }

        let root = common::pki::generate_root("cluster.local").unwrap();
        let issuer = common::pki::generate_issuer(&root, "cluster.local").unwrap();
        let ca = mesh_controller_core::ca::Ca::new(&issuer, &root.cert, Duration::from_secs(600))
            .unwrap();
        let identity = mesh_controller_grpc::identity::IdentityService::new(
            Arc::new(ca),
            store,
            "cluster.local".into(),
        );
        let web_id = "spiffe://cluster.local/ns/shop/sa/web";
        let signed = identity
            .certify(certify(web_id, &web))
            .await
            .unwrap()
            .into_inner();
        let info = common::pki::cert_info(&signed.chain_der[0]).unwrap();
        assert_eq!(info.identity.to_string(), web_id);
        let other = identity
            .certify(certify(web_id, &default))
            .await
            .unwrap_err();
        assert_eq!(other.code(), tonic::Code::PermissionDenied, "{other:?}");
        let wrong_audience = identity
            .certify(certify(web_id, &elsewhere))
            .await
            .unwrap_err();
        assert_eq!(
            wrong_audience.code(),
            tonic::Code::Unauthenticated,
            "{wrong_audience:?}"
        );
    });
}
