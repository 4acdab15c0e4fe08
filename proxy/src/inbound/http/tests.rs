//! The inbound HTTP stack in process: plaintext requests over a real
//! socket through the stack to an app on loopback, under this workload's
//! LocalRateLimit as discovery delivers it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use api::discovery::{Decoded, Resolved, Workload};
use api::proto::DiscoveryResponse;
use http_body_util::BodyExt;
use tokio::net::TcpListener;

use super::serve_plain;
use crate::detect::Protocol;
use crate::discovery::Discovery;
use crate::inbound::Inbound;
use crate::testing::{self, Behavior, get, upstream};

/// This pod's own resource, with `policy`.
fn own(pod: &crate::Pod, policy: &str) -> DiscoveryResponse {
    let spec = serde_yaml_ng::from_str(policy).unwrap();
    let policy = api::routing::workload_policy(&api::traffic::WorkloadPolicy {
        rate_limits: vec![api::traffic::RateLimit {
            name: "shop/api".into(),
            spec,
        }],
        outbound_traffic_policy: None,
    })
    .unwrap();
    let w = Workload {
        name: "api".into(),
        namespace: "shop".into(),
        address: pod.ip,
        identity: Some(pod.identity.id().clone()),
        labels: Default::default(),
        workload: "api".into(),
        policy: Some(Box::new(policy)),
    };
    DiscoveryResponse {
        resources: vec![api::discovery::encode(
            pod.ip.to_string(),
            &Decoded::Address(Resolved::Workload(w)),
        )],
        ..Default::default()
    }
}

/// The inbound plaintext side of `ib`, for the app at `app`.
async fn listen(ib: Arc<Inbound>, app: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (_drainer, drain) = crate::drain::channel();
        loop {
            let (tcp, client) = listener.accept().await.unwrap();
            let (ib, drain) = (ib.clone(), drain.clone());
            tokio::spawn(async move {
                serve_plain(ib, tcp, app, client.ip(), Protocol::Http1, &drain).await
            });
        }
    });
    addr
}

#[tokio::test]
async fn the_workloads_rate_limit_refuses_beyond_its_bucket() {
    let app = upstream("127.0.0.8", Behavior::Ok).await;
    let pod = testing::pod("127.0.0.8");
    let d = Discovery::offline(Duration::from_secs(1));
    d.apply(&own(
        &pod,
        "tokenBucket: {maxTokens: 3, fillInterval: 1h}
routes: [{match: {uri: {prefix: /cheap}}, tokenBucket: {maxTokens: 100, fillInterval: 1h}}]",
    ));
    let ib = Arc::new(Inbound {
        server_tls: pod
            .identity
            .server_config(&[crate::transport::ALPN_H2])
            .unwrap(),
        upstreams: testing::upstreams(&pod),
        outbound: testing::outbound(pod.clone(), d.clone()),
        pod,
        discovery: d,
        telemetry: testing::telemetry(),
        settings: testing::settings(),
        rate_limits: crate::traffic::ratelimit::Policies::default(),
    });
    let addr = listen(ib.clone(), app.addr).await;
    let mut c = testing::client(addr).await;
    let mut codes = Vec::new();
    let mut limited = 0;
    for path in ["/a", "/b", "/c", "/d", "/e", "/cheap", "/cheap"] {
        let r = c.send_request(get("api:8080", path)).await.unwrap();
        codes.push(r.status().as_u16());
        limited += usize::from(r.headers().contains_key("x-ratelimit-limited"));
        let _ = r.into_body().collect().await;
    }
    assert_eq!(codes, [200, 200, 200, 429, 429, 200, 200]);
    assert_eq!(limited, 2);
    assert_eq!(app.count(), 5, "refused requests never reach the app");
    let m = ib.telemetry.metrics.render();
    assert!(m.contains("response_flags=\"RL\""), "{m}");
    assert!(m.contains("reporter=\"destination\""), "{m}");
}
