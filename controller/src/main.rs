//! `mesh-controller`: the control plane. Reads cluster state from a store,
//! translates it into per-address resources, streams them to proxies on
//! demand, and signs their certificates.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use api::proto::discovery_server::DiscoveryServer;
use api::proto::identity_server::IdentityServer;
use api::spiffe::SpiffeId;
use clap::Parser;
use mesh_controller::{debug, webhook};
use mesh_controller_core::{ca, index, store, sync};
use tokio::sync::watch;

/// The mesh controller.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address of the gRPC endpoint (identity and discovery, TLS).
    #[arg(long, env = "MESH_CONTROLLER_LISTEN", default_value = "0.0.0.0:15012")]
    listen: SocketAddr,
    /// Trust anchors, PEM (one or more roots).
    #[arg(long, env = "MESH_TRUST_ANCHORS")]
    trust_anchors: PathBuf,
    /// Issuer certificate, PEM, signed by a trust anchor.
    #[arg(long, env = "MESH_ISSUER_CERT")]
    issuer_cert: PathBuf,
    /// Issuer private key, PEM.
    #[arg(long, env = "MESH_ISSUER_KEY")]
    issuer_key: PathBuf,
    /// Lifetime of workload certificates (e.g. 24h, 30s).
    #[arg(long, env = "MESH_CERT_LIFETIME", default_value = "24h", value_parser = api::duration::parse)]
    cert_lifetime: Duration,
    /// Trust domain of SPIFFE IDs.
    #[arg(long, env = "MESH_TRUST_DOMAIN", default_value = api::spiffe::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    /// The local runtime's API socket (the local store backend). Without
    /// it the controller reads a Kubernetes API server (in-cluster
    /// configuration, or the kubeconfig).
    #[arg(long, env = "MESH_LOCAL_API")]
    local_api: Option<PathBuf>,
    /// The namespace the controller runs in (its Lease lives there).
    #[arg(long, env = "POD_NAMESPACE", default_value = "mesh-system")]
    namespace: String,
    /// Address of the debug API (`/debug/syncz`), Istio's istiod port.
    #[arg(long, env = "MESH_DEBUG_LISTEN", default_value = "127.0.0.1:15014")]
    debug_listen: SocketAddr,
    /// Also serve the debug API on this Unix socket (the local runtime's
    /// `meshctl proxy-status` reads it there).
    #[arg(long, env = "MESH_DEBUG_SOCKET")]
    debug_socket: Option<PathBuf>,
    /// Serve the admission webhooks (HTTPS; istiod's port is 15017).
    #[arg(long, env = "MESH_WEBHOOK_LISTEN")]
    webhook_listen: Option<SocketAddr>,
    /// DNS names of the webhooks' serving certificate (default: the
    /// controller's Service in its namespace, as the API server calls it).
    #[arg(long, env = "MESH_WEBHOOK_DNS", value_delimiter = ',')]
    webhook_dns: Vec<String>,
    /// The proxy image that injection puts in.
    #[arg(long, env = "MESH_PROXY_IMAGE", default_value = api::inject::DEFAULT_IMAGE)]
    proxy_image: String,
    /// Its pull policy.
    #[arg(
        long,
        env = "MESH_PROXY_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    proxy_image_pull_policy: String,
    /// Inject the proxy as a native sidecar (Kubernetes 1.29 and later).
    #[arg(long, env = "MESH_NATIVE_SIDECARS")]
    native_sidecars: bool,
    /// How often every `jwksUri` is fetched again (Istio's
    /// PILOT_JWT_PUB_KEY_REFRESH_INTERVAL); one that fails is retried
    /// every few seconds.
    #[arg(long, env = "MESH_JWKS_REFRESH_INTERVAL", default_value = "20m", value_parser = api::duration::parse)]
    jwks_refresh_interval: Duration,
    /// This instance's name, shown by `meshctl proxy-status`.
    #[arg(long, env = "POD_NAME", default_value = "mesh-controller")]
    instance: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::logging::init("info");
    let args = Args::parse();
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    let issuer = common::pki::PemPair {
        cert: read(&args.issuer_cert)?,
        key: read(&args.issuer_key)?,
    };
    let anchors_pem = read(&args.trust_anchors)?;
    let ca =
        Arc::new(ca::Ca::new(&issuer, &anchors_pem, args.cert_lifetime).context("loading the CA")?);

    let own_id = SpiffeId::new(&args.trust_domain, "mesh-system", "mesh-controller")?;
    let own = common::tls::Identity::new(own_id.clone(), ca.anchors_der().to_vec())?;
    certify_self(&ca, &own)?;
    tokio::spawn(renew_self(ca.clone(), own.clone()));

    let (feed, changes) = index::feed();
    let store: Arc<dyn store::Store> = match &args.local_api {
        Some(socket) => Arc::new(mesh_controller_local::LocalStore::start(
            socket.clone(),
            feed,
        )),
        None => start_kubernetes(&args, &anchors_pem, feed).await?,
    };
    let changes = mesh_controller::jwks::spawn(changes, args.jwks_refresh_interval);
    let index_rx = spawn_indexer(changes, &args.trust_domain);

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let sync = Arc::new(sync::Registry::default());
    debug::serve(
        args.debug_listen,
        args.debug_socket.as_deref(),
        debug::Debug {
            sync: sync.clone(),
            index: index_rx.clone(),
        },
    )
    .await?;
    if let Some(addr) = args.webhook_listen {
        start_webhooks(&args, addr, ca.clone()).await?;
    }
    tracing::info!(listen = %args.listen, identity = %own_id, "controller serving");
    let tls = own.server_config_optional_client(&[b"h2"])?;
    tonic::transport::Server::builder()
        .add_service(IdentityServer::new(
            mesh_controller_grpc::identity::IdentityService::new(
                ca.clone(),
                store.clone(),
                args.trust_domain.clone(),
            ),
        ))
        .add_service(DiscoveryServer::new(
            mesh_controller_grpc::discovery::DiscoveryService::new(
                index_rx,
                sync,
                args.instance.clone(),
            ),
        ))
        .serve_with_incoming_shutdown(mesh_controller_grpc::incoming(listener, tls), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

fn certify_self(ca: &ca::Ca, own: &common::tls::Identity) -> anyhow::Result<()> {
    let (key, csr) = common::pki::new_csr(own.id())?;
    let chain = ca.certify(&csr, own.id())?;
    own.set_certificate(chain, key.serialize_der())?;
    Ok(())
}

async fn renew_self(ca: Arc<ca::Ca>, own: Arc<common::tls::Identity>) {
    loop {
        tokio::time::sleep(ca.lifetime().mul_f64(0.5)).await;
        if let Err(e) = certify_self(&ca, &own) {
            tracing::error!(%e, "renewing the controller's certificate");
        }
    }
}

/// Serves the admission webhooks on `addr` with a certificate from the
/// CA, renewed at half its lifetime.
async fn start_webhooks(args: &Args, addr: SocketAddr, ca: Arc<ca::Ca>) -> anyhow::Result<()> {
    let service = format!("mesh-controller.{}.svc", args.namespace);
    let dns = if args.webhook_dns.is_empty() {
        vec![service.clone(), format!("{service}.cluster.local")]
    } else {
        args.webhook_dns.clone()
    };
    let (chain, key) = ca.serving(&dns)?;
    let serving = webhook::Serving::new(chain, key)?;
    let settings = api::inject::Settings {
        trust_domain: args.trust_domain.clone(),
        native_sidecars: args.native_sidecars,
        pull_policy: Some(args.proxy_image_pull_policy.clone()),
        controller: format!("{service}:15012"),
        ..api::inject::Settings::for_image(&args.proxy_image)
    };
    tokio::spawn(webhook::serve(
        webhook::bind(addr).await?,
        serving.tls()?,
        settings,
    ));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(ca.lifetime().mul_f64(0.5)).await;
            let renewed = ca
                .serving(&dns)
                .map_err(anyhow::Error::from)
                .and_then(|(chain, key)| serving.renew(chain, key));
            if let Err(e) = renewed {
                tracing::error!(error = %e, "renewing the webhooks' certificate");
            }
        }
    });
    tracing::info!(%addr, "admission webhooks serving");
    Ok(())
}

/// The Kubernetes store, and the leader's writes behind a Lease.
async fn start_kubernetes(
    args: &Args,
    anchors_pem: &str,
    feed: index::Feed,
) -> anyhow::Result<Arc<dyn store::Store>> {
    use mesh_controller_k8s::{KubeStore, leader, lease};
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster, or KUBECONFIG)")?;
    let store = KubeStore::start(client.clone(), api::inject::TOKEN_AUDIENCE, feed);
    let leads = lease::elect(
        client.clone(),
        &args.namespace,
        "mesh-controller",
        &args.instance,
    );
    tokio::spawn(
        leader::Leader {
            client,
            readers: store.readers().clone(),
            verdicts: store.verdicts(),
            anchors_pem: anchors_pem.to_string(),
            leads,
        }
        .run(),
    );
    Ok(Arc::new(store))
}

/// Applies the stores' changes to the index, a batch at a time (with
/// whatever else arrived meanwhile); streams watch the result.
fn spawn_indexer(
    mut changes: index::Changes,
    trust_domain: &str,
) -> watch::Receiver<Arc<index::Index>> {
    let mut indexer = index::Indexer::new(trust_domain);
    let (tx, rx) = watch::channel(Arc::new(index::Index::default()));
    tokio::spawn(async move {
        while let Some(batch) = changes.recv().await {
            indexer.apply(batch);
            while let Ok(more) = changes.try_recv() {
                indexer.apply(more);
            }
            if let Some(idx) = indexer.publish() {
                let (addresses, hosts) = idx.len();
                tracing::debug!(version = idx.version, addresses, hosts, "index updated");
                tx.send_replace(Arc::new(idx));
            }
        }
    });
    rx
}
