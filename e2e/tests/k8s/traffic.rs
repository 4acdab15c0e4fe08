//! Traffic through injected workloads: mTLS on the wire, the canary
//! split, retries.

use std::time::Duration;

use e2e::k8s::{Node, in_node_net, ok};

use crate::{manifests, step};

/// The client's curl to the server's Service, through both proxies; a
/// capture on the node shows TLS on the wire and no plaintext.
pub fn mtls_with_capture(node: &Node) {
    step("curl between two injected Deployments over mTLS, captured");
    if node.external() {
        eprintln!("   (the capture needs the project's own node: left out on this cluster)");
        let out = curl_web(node);
        ok(out, "curl web");
        return;
    }
    let pcap = std::env::temp_dir().join(format!("mesh-k8s-{}.pcap", std::process::id()));
    let mut tcpdump = in_node_net(&[
        "timeout",
        "60",
        "tcpdump",
        "-i",
        "any",
        "-U",
        "-s",
        "0",
        "-w",
        pcap.to_str().unwrap(),
        "tcp port 8080 or tcp port 15008",
    ])
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    // tcpdump says "listening on" once it captures.
    let mut err = tcpdump.stderr.take().unwrap();
    let mut seen = Vec::new();
    let start = std::time::Instant::now();
    while !String::from_utf8_lossy(&seen).contains("listening on") {
        use std::io::Read;
        let mut buf = [0u8; 256];
        let n = err.read(&mut buf).unwrap();
        assert!(
            n > 0 && start.elapsed() < Duration::from_secs(20),
            "tcpdump did not start"
        );
        seen.extend_from_slice(&buf[..n]);
    }
    let body = node.wait_for(
        "the server answers the client",
        Duration::from_secs(60),
        || {
            let out = curl_web(node);
            let body = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() && body.starts_with('v') {
                Ok(body)
            } else {
                Err(format!("{out:?}"))
            }
        },
    );
    assert!(body == "v1\n" || body == "v2\n", "{body:?}");
    for _ in 0..5 {
        ok(
            node.exec(
                "shop",
                "deploy/client",
                &["curl", "-sf", "-m", "5", "http://web/"],
            ),
            "curl web",
        );
    }
    std::thread::sleep(Duration::from_secs(1));
    // SIGINT to timeout and tcpdump both (their arguments name the file).
    let _ = std::process::Command::new("pkill")
        .args(["-INT", "-f", pcap.to_str().unwrap()])
        .status();
    let _ = tcpdump.wait();
    let captured = std::fs::read(&pcap).unwrap();
    let _ = std::fs::remove_file(&pcap);
    let has = |needle: &[u8]| captured.windows(needle.len()).any(|w| w == needle);
    // The proxies speak mTLS to each other on 15008; the app's port sees
    // nothing in clear either.
    assert!(
        captured.len() > 200,
        "nothing captured on ports 8080 and 15008"
    );
    // TLS application data records (0x17 0x03 0x03), and neither the
    // request nor the answer in clear.
    assert!(has(&[0x17, 0x03, 0x03]), "no TLS record on the wire");
    assert!(!has(b"GET / HTTP/1.1"), "the request crossed in plaintext");
    assert!(
        !has(b"Content-Type: text/html"),
        "the answer crossed in plaintext"
    );
}

/// The client's `curl -sf` to the server's Service, by its full name.
fn curl_web(node: &Node) -> std::process::Output {
    curl(node, "http://web.shop.svc.cluster.local/")
}

/// The client's `curl -sf` to `url`.
fn curl(node: &Node, url: &str) -> std::process::Output {
    node.exec("shop", "deploy/client", &["curl", "-sf", "-m", "5", url])
}

/// Counts the answers `v1` and `v2` to `n` requests from the client.
fn versions(node: &Node, n: u32) -> (u32, u32) {
    let script = format!("for i in $(seq 1 {n}); do curl -s -m 5 http://web/; done");
    let out = ok(
        node.exec("shop", "deploy/client", &["sh", "-c", &script]),
        "curl loop",
    );
    let count = |v: &str| u32::try_from(out.lines().filter(|l| *l == v).count()).unwrap_or(0);
    (count("v1"), count("v2"))
}

pub fn canary(node: &Node) {
    step("the canary split");
    ok(node.apply(manifests::SUBSETS), "apply DestinationRule");
    ok(
        node.apply(&manifests::split(0)),
        "apply VirtualService 0/100",
    );
    node.wait_for("all traffic on v2", Duration::from_secs(60), || {
        let (v1, v2) = versions(node, 10);
        if v1 == 0 && v2 == 10 {
            Ok(())
        } else {
            Err(format!("v1 {v1}, v2 {v2}"))
        }
    });
    ok(
        node.apply(&manifests::split(50)),
        "apply VirtualService 50/50",
    );
    node.wait_for(
        "traffic split between v1 and v2",
        Duration::from_secs(60),
        || {
            let (v1, v2) = versions(node, 40);
            if v1 >= 8 && v2 >= 8 && v1 + v2 == 40 {
                Ok(())
            } else {
                Err(format!("v1 {v1}, v2 {v2}"))
            }
        },
    );
}

pub fn retries(node: &Node) {
    step("a retry scenario");
    let get = || {
        let out = node.exec(
            "shop",
            "deploy/client",
            &[
                "curl",
                "-s",
                "-m",
                "10",
                "-w",
                " %{http_code}",
                "http://flaky/cgi-bin/flaky",
            ],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // Without a retry policy on 500, failures reach the client.
    let before: Vec<String> = (0..6).map(|_| get()).collect();
    assert!(before.iter().any(|r| r.ends_with(" 500")), "{before:?}");
    ok(node.apply(manifests::RETRIES), "apply retries");
    node.wait_for(
        "every request succeeds through retries",
        Duration::from_secs(60),
        || {
            let answers: Vec<String> = (0..6).map(|_| get()).collect();
            if answers
                .iter()
                .all(|a| a.starts_with("ok ") && a.ends_with(" 200"))
            {
                Ok(())
            } else {
                Err(format!("{answers:?}"))
            }
        },
    );
    // The server counts three tries per request: each answer is a multiple of 3.
    let last = get();
    let n: u32 = last
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert_eq!(n % 3, 0, "{last}");
}

/// A Service without a selector, whose endpoints a user wrote as an
/// Endpoints object: Kubernetes mirrors it into an EndpointSlice
/// (`discovery.k8s.io/v1beta1` on the 1.20 node, `v1` on current
/// clusters), which the controller watches. The listed pod is known, so
/// the endpoint carries its identity and traffic goes over mTLS.
pub fn selectorless(node: &Node) {
    step("a selector-less Service's endpoints, from its EndpointSlice");
    let pod = node.kubectl_ok(&[
        "get",
        "pods",
        "-n",
        "shop",
        "-l",
        "app=web,version=v1",
        "-o",
        "jsonpath={.items[0].metadata.name} {.items[0].status.podIP}",
    ]);
    let (name, ip) = pod.trim().split_once(' ').expect("a web-v1 pod with an IP");
    ok(
        node.apply(&manifests::selectorless(name, ip)),
        "apply legacy",
    );
    let body = node.wait_for("legacy answers", Duration::from_secs(60), || {
        let out = curl(node, "http://legacy.shop.svc.cluster.local/");
        let body = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() {
            Ok(body)
        } else {
            Err(format!("{out:?}"))
        }
    });
    assert_eq!(body, "v1");
    let endpoints = ok(
        node.meshctl(&[
            "proxy-config",
            "endpoints",
            "deploy/client",
            "-n",
            "shop",
            "-o",
            "json",
        ]),
        "proxy-config endpoints",
    );
    let rows: Vec<serde_json::Value> = serde_json::from_str(&endpoints).unwrap();
    let row = rows
        .iter()
        .find(|r| r.to_string().contains("legacy.shop.svc.cluster.local"))
        .unwrap_or_else(|| panic!("no endpoint for legacy: {endpoints}"));
    assert!(
        row.to_string().contains(name) && row.to_string().contains(ip),
        "the endpoint is not the pod {name} at {ip}: {row}"
    );
    // Known as that pod, it is dialed with its identity: over mTLS.
    assert!(
        row.to_string()
            .contains("spiffe://cluster.local/ns/shop/sa/web"),
        "the endpoint has no identity: {row}"
    );
    ok(
        // The Endpoints go with their Service, or else here.
        node.kubectl(&[
            "delete",
            "-n",
            "shop",
            "service/legacy",
            "endpoints/legacy",
            "--ignore-not-found",
        ]),
        "delete legacy",
    );
}
