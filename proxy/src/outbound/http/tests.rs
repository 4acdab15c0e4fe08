//! The outbound HTTP stack in process: a real client connection through
//! the stack to upstream servers on loopback addresses (no root, no
//! controller): retries, mirrors, upgrades, faults and timeouts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{Conn, serve};
use crate::detect::Protocol;
use crate::discovery::{Discovery, Lookup};
use crate::outbound::Outbound;
use crate::testing::{self, Behavior, PORT, endpoint, get, upstream};

const VIP: &str = "10.96.0.10";
const HOST: &str = "orders.shop.svc.cluster.local";

/// A proxy for `VIP:8080` on a loopback port, with what it counts.
async fn proxy(discovery: Arc<Discovery>) -> (SocketAddr, Arc<Outbound>) {
    let pod = testing::pod("127.0.0.1");
    let ob = testing::outbound(pod, discovery);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dst = SocketAddr::new(VIP.parse().unwrap(), PORT);
    let Lookup::Mesh(target) = ob.discovery.lookup(dst.ip()).await else {
        panic!("{VIP} is not published")
    };
    let served = ob.clone();
    tokio::spawn(async move {
        let (_drainer, drain) = crate::drain::channel();
        loop {
            let (tcp, peer) = listener.accept().await.unwrap();
            let (ob, target, drain) = (served.clone(), target.clone(), drain.clone());
            tokio::spawn(async move {
                let conn = Conn {
                    client: peer.ip(),
                    source: ob.pod.source.load_full(),
                    dst,
                    proto: Protocol::Http1,
                };
                serve(&ob, tcp, target, conn, &drain).await;
            });
        }
    });
    (addr, ob)
}

/// Sends `n` GETs of `path` on one connection; their statuses.
async fn statuses(addr: SocketAddr, path: &str, n: usize) -> Vec<u16> {
    let mut c = testing::client(addr).await;
    let mut out = Vec::new();
    for _ in 0..n {
        let r = c.send_request(get("orders:8080", path)).await.unwrap();
        out.push(r.status().as_u16());
        let _ = r.into_body().collect().await;
    }
    out
}

fn metrics(ob: &Outbound) -> String {
    ob.telemetry.metrics.render()
}

#[tokio::test]
async fn a_503_is_retried_on_another_endpoint_and_exhaustion_is_flagged() {
    let bad = upstream("127.0.0.2", Behavior::Status(503)).await;
    let good = upstream("127.0.0.3", Behavior::Ok).await;
    let d = Discovery::offline(Duration::from_secs(1));
    // No retries in the route: Istio's default policy (2 retries on 503).
    testing::publish(
        &d,
        testing::service(HOST, VIP, None, &[]),
        &[(
            HOST,
            vec![
                endpoint(bad.addr.ip(), bad.addr.port(), &[]),
                endpoint(good.addr.ip(), good.addr.port(), &[]),
            ],
        )],
    );
    let (addr, ob) = proxy(d.clone()).await;
    assert_eq!(statuses(addr, "/", 10).await, vec![200; 10]);
    assert!(bad.count() >= 1, "round robin reached the bad endpoint");
    assert_eq!(good.count(), 10);
    // Only bad endpoints: every try fails, the retries run out.
    testing::publish(
        &d,
        testing::service(HOST, VIP, None, &[]),
        &[(HOST, vec![endpoint(bad.addr.ip(), bad.addr.port(), &[])])],
    );
    let before = bad.count();
    assert_eq!(statuses(addr, "/", 2).await, vec![503, 503]);
    assert_eq!(bad.count() - before, 6, "three tries each");
    assert!(
        metrics(&ob).contains("response_flags=\"URX\""),
        "{}",
        metrics(&ob)
    );
}

#[tokio::test]
async fn mirrors_get_a_copy_with_the_shadow_authority() {
    let main = upstream("127.0.0.4", Behavior::Ok).await;
    let shadow = upstream("127.0.0.5", Behavior::Status(500)).await;
    let mirror_host = "shadow.shop.svc.cluster.local";
    let d = Discovery::offline(Duration::from_secs(1));
    testing::publish(
        &d,
        testing::service(
            HOST,
            VIP,
            Some(&format!(
                "http: [{{route: [{{destination: {{host: {HOST}}}}}], mirror: {{host: {mirror_host}}}}}]"
            )),
            &[mirror_host],
        ),
        &[
            (HOST, vec![endpoint(main.addr.ip(), main.addr.port(), &[])]),
            (
                mirror_host,
                vec![endpoint(shadow.addr.ip(), shadow.addr.port(), &[])],
            ),
        ],
    );
    let (addr, _) = proxy(d).await;
    // The mirror's 500s never reach the client.
    assert_eq!(statuses(addr, "/", 5).await, vec![200; 5]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while shadow.count() < 5 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(shadow.count(), 5);
    assert_eq!(main.count(), 5);
    let hosts = shadow.hosts.lock().unwrap().clone();
    assert!(hosts.iter().all(|h| h == "orders-shadow:8080"), "{hosts:?}");
}

#[tokio::test]
async fn an_upgrade_is_tunnelled_to_one_endpoint() {
    let echo = upstream("127.0.0.6", Behavior::Ok).await;
    let d = Discovery::offline(Duration::from_secs(1));
    testing::publish(
        &d,
        testing::service(HOST, VIP, None, &[]),
        &[(HOST, vec![endpoint(echo.addr.ip(), echo.addr.port(), &[])])],
    );
    let (addr, _) = proxy(d).await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        b"GET /ws HTTP/1.1\r\nHost: orders:8080\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        tcp.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tcp.write_all(b"ping over the tunnel").await.unwrap();
    let mut back = [0u8; 20];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"ping over the tunnel");
}

#[tokio::test]
async fn faults_and_route_timeouts_answer_without_the_upstream() {
    let up = upstream("127.0.0.7", Behavior::Ok).await;
    let d = Discovery::offline(Duration::from_secs(1));
    testing::publish(
        &d,
        testing::service(
            HOST,
            VIP,
            Some(&format!(
                "http:
- match: [{{uri: {{prefix: /abort}}}}]
  route: [{{destination: {{host: {HOST}}}}}]
  fault: {{abort: {{httpStatus: 418, percentage: {{value: 100}}}}}}
- match: [{{uri: {{prefix: /slow}}}}]
  route: [{{destination: {{host: {HOST}}}}}]
  fault: {{delay: {{fixedDelay: 2s, percentage: {{value: 100}}}}}}
  timeout: 100ms
- route: [{{destination: {{host: {HOST}}}}}]"
            )),
            &[],
        ),
        &[(HOST, vec![endpoint(up.addr.ip(), up.addr.port(), &[])])],
    );
    let (addr, ob) = proxy(d).await;
    assert_eq!(statuses(addr, "/abort", 2).await, vec![418, 418]);
    assert_eq!(up.count(), 0, "aborted before the upstream");
    // The delay comes before the timeout, which never sees it.
    assert_eq!(statuses(addr, "/slow", 1).await, vec![200]);
    assert_eq!(statuses(addr, "/", 1).await, vec![200]);
    let m = metrics(&ob);
    assert!(m.contains("response_flags=\"FI\""), "{m}");
    assert!(m.contains("response_flags=\"DI\""), "{m}");
}
