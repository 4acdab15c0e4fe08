//! What in-process tests of the stacks share: an identity, the handles a
//! stack takes, discovery answers, and upstream servers on loopback
//! addresses (`127.0.0.x`, all on `lo`, no root needed) that count what
//! they get and answer as told.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use api::discovery::{Decoded, Endpoint, Endpoints, Resolved, Service, ServicePort, Workload};
use api::proto::DiscoveryResponse;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::connect::Upstreams;
use crate::discovery::Discovery;
use crate::{Pod, Settings, Telemetry};

/// The service port every test Service has.
pub const PORT: u16 = 8080;

/// A pod's handles, as `run` makes them, without a controller.
pub fn pod(ip: &str) -> Arc<Pod> {
    let root = common::pki::generate_root("cluster.local").unwrap();
    let anchors = common::pki::pem_certs(&root.cert).unwrap();
    let id = api::spiffe::SpiffeId::new("cluster.local", "shop", "client").unwrap();
    Arc::new(Pod::new(
        "client",
        ip.parse().unwrap(),
        common::tls::Identity::new(id, anchors).unwrap(),
        "shop",
    ))
}

/// Telemetry with the access log off.
pub fn telemetry() -> Arc<Telemetry> {
    let metrics = crate::metrics::Metrics::new().unwrap();
    let spans = metrics.span_counters();
    Arc::new(Telemetry {
        metrics,
        access_log: std::sync::OnceLock::new(),
        observe: arc_swap::ArcSwap::from_pointee(crate::observe::Observe::defaults(false)),
        default_log: false,
        spans,
        denials: Default::default(),
        tap: Default::default(),
    })
}

/// Default detection settings.
pub fn settings() -> Settings {
    Settings {
        detect_timeout: Duration::from_millis(100),
        opaque_ports: Vec::new(),
    }
}

/// Upstreams for `pod`.
pub fn upstreams(pod: &Pod) -> Arc<Upstreams> {
    Arc::new(Upstreams::new(&pod.identity).unwrap())
}

/// An unmeshed endpoint at `ip` (its port 8080 at `port`), labelled.
pub fn endpoint(ip: IpAddr, port: u16, labels: &[(&str, &str)]) -> Endpoint {
    Endpoint {
        workload: Workload {
            name: format!("pod-{ip}"),
            namespace: "shop".into(),
            address: ip,
            identity: None,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            workload: format!("pod-{ip}"),
            policy: None,
        },
        ports: [(PORT, port)].into(),
    }
}

/// `host`'s Service at `vip`, routed by a VirtualService spec (`None`:
/// plain balancing), as the controller compiles it.
pub fn service(host: &str, vip: &str, vs: Option<&str>, hosts: &[&str]) -> Service {
    let port = ServicePort {
        name: "http".into(),
        port: PORT,
        protocol: api::protocol::AppProtocol::Http,
    };
    let routing = vs.map(|vs| {
        let vs: api::istio::virtual_service::VirtualServiceSpec =
            serde_yaml_ng::from_str(vs).unwrap();
        let t = api::traffic::ServiceTraffic {
            http: vs.http.unwrap_or_default(),
            backends: hosts
                .iter()
                .chain([&host])
                .map(|h| {
                    (
                        h.to_string(),
                        api::traffic::Backend {
                            ports: vec![port.clone()],
                            ..Default::default()
                        },
                    )
                })
                .collect(),
            ..Default::default()
        };
        Box::new(api::routing::routing(&t, host).unwrap())
    });
    Service {
        name: host.split('.').next().unwrap_or(host).into(),
        namespace: "shop".into(),
        hostname: host.into(),
        addresses: vec![vip.parse().unwrap()],
        ports: vec![port],
        routing,
    }
}

/// Tells `d` about `svc` and the endpoints of each host.
pub fn publish(d: &Discovery, svc: Service, endpoints: &[(&str, Vec<Endpoint>)]) {
    let mut resources: Vec<_> = endpoints
        .iter()
        .map(|(h, e)| {
            api::discovery::encode(
                api::discovery::endpoints_name(h),
                &Decoded::Endpoints(Endpoints {
                    host: h.to_string(),
                    endpoints: e.clone(),
                }),
            )
        })
        .collect();
    let vip = svc.addresses[0].to_string();
    resources.push(api::discovery::encode(
        vip,
        &Decoded::Address(Resolved::Service(svc)),
    ));
    let errors = d.apply(&DiscoveryResponse {
        resources,
        ..Default::default()
    });
    assert!(errors.is_empty(), "{errors:?}");
}

/// How a test upstream answers.
#[derive(Clone, Copy)]
pub enum Behavior {
    /// 200 with its name.
    Ok,
    /// This status, always.
    Status(u16),
}

/// A test upstream: its address and what it got.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests received.
    pub hits: Arc<AtomicU32>,
    /// The Host headers it saw.
    pub hosts: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Upstream {
    /// Requests received so far.
    pub fn count(&self) -> u32 {
        self.hits.load(Ordering::SeqCst)
    }
}

/// An HTTP/1.1 server on `ip` (any port) that answers as `behavior`;
/// requests asking to upgrade are switched and echoed back.
pub async fn upstream(ip: &str, behavior: Behavior) -> Upstream {
    let listener = TcpListener::bind((ip.parse::<IpAddr>().unwrap(), 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicU32::new(0));
    let hosts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (h, seen) = (hits.clone(), hosts.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (h, seen) = (h.clone(), seen.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (h, seen) = (h.clone(), seen.clone());
                    async move { Ok::<_, Infallible>(answer(req, behavior, addr, &h, &seen).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Upstream { addr, hits, hosts }
}

async fn answer(
    mut req: Request<Incoming>,
    behavior: Behavior,
    addr: SocketAddr,
    hits: &AtomicU32,
    hosts: &std::sync::Mutex<Vec<String>>,
) -> Response<crate::http::Body> {
    hits.fetch_add(1, Ordering::SeqCst);
    if let Some(h) = req.headers().get(hyper::header::HOST) {
        hosts
            .lock()
            .unwrap()
            .push(h.to_str().unwrap_or_default().to_string());
    }
    let body = |s: String| Full::new(Bytes::from(s)).map_err(|n| match n {}).boxed();
    if crate::http::is_upgrade(&req) {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let (mut r, mut w) = tokio::io::split(&mut io);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut r = Response::new(body(String::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut()
            .insert(hyper::header::UPGRADE, "echo".parse().unwrap());
        r.headers_mut()
            .insert(hyper::header::CONNECTION, "upgrade".parse().unwrap());
        return r;
    }
    let _ = req.into_body().collect().await;
    let mut r = Response::new(body(format!("{addr}\n")));
    if let Behavior::Status(s) = behavior {
        *r.status_mut() = StatusCode::from_u16(s).unwrap();
    }
    r
}

/// An HTTP/1.1 client connection to `addr`.
pub async fn client(
    addr: SocketAddr,
) -> hyper::client::conn::http1::SendRequest<crate::http::Body> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// A GET of `path` with `Host: host`.
pub fn get(host: &str, path: &str) -> Request<crate::http::Body> {
    Request::builder()
        .uri(path)
        .header(hyper::header::HOST, host)
        .body(crate::http::Body::default())
        .unwrap()
}

/// An outbound side for `pod` resolving with `discovery`.
pub fn outbound(
    pod: Arc<crate::Pod>,
    discovery: Arc<crate::discovery::Discovery>,
) -> Arc<crate::outbound::Outbound> {
    Arc::new(crate::outbound::Outbound {
        upstreams: upstreams(&pod),
        pod,
        discovery,
        telemetry: telemetry(),
        settings: settings(),
        speakers: crate::outbound::Speakers::default(),
    })
}
