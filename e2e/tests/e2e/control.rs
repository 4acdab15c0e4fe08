//! The control plane's part: endpoint changes reach proxies in seconds,
//! and the data plane survives the controller's absence.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use e2e::{Cluster, app, client, needs_root, server};

fn web(replicas: u32) -> String {
    app(
        "ctl",
        "web",
        replicas,
        8080,
        &["python3", &server("http_echo.py"), "8080"],
        "",
    )
}

fn pods_answering(c: &Cluster, n: usize) -> BTreeSet<String> {
    let out = c.exec_ok(
        "ctl",
        "deploy/client",
        &[
            "sh",
            "-c",
            &format!("for i in $(seq 1 {n}); do curl -s --max-time 5 http://web:8080/; done"),
        ],
    );
    out.lines()
        .filter_map(|l| {
            l.strip_prefix("pod=")
                .and_then(|r| r.split_whitespace().next())
                .map(str::to_string)
        })
        .collect()
}

#[test]
#[ignore = "needs root"]
fn endpoint_changes_reach_proxies_within_a_second() {
    needs_root();
    let c = Cluster::up("scale", &[]);
    c.apply(&client("ctl", true));
    c.apply(&web(1));
    c.wait_ready("ctl", "client", 1);
    let first = c.wait_ready("ctl", "web", 1);
    assert_eq!(
        pods_answering(&c, 3),
        BTreeSet::from([first[0].name.clone()])
    );

    c.apply(&web(3));
    let pods = c.wait_ready("ctl", "web", 3);
    // The endpoint change reaches the client's proxy within a second of
    // the pods being ready...
    assert_eq!(endpoints_within_a_second(&c, 3), 3);
    // ...and requests spread over all three.
    let want: BTreeSet<String> = pods.iter().map(|p| p.name.clone()).collect();
    assert_eq!(pods_answering(&c, 30), want);

    // Scaling down (pods going away) reaches it as fast, and the node's
    // address keeps its MAC (a bridge that took a leaving port's MAC
    // would cut every pod off the controller until ARP expired).
    let gateway_mac = || {
        let out = std::process::Command::new("ip")
            .args(["-n", &c.node_ns(), "-br", "link", "show", "br0"])
            .output()
            .expect("ip link");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_string()
    };
    let mac = gateway_mac();
    c.apply(&web(1));
    assert_eq!(endpoints_within_a_second(&c, 1), 1);
    assert_eq!(pods_answering(&c, 6).len(), 1);
    assert_eq!(gateway_mac(), mac, "the bridge changed its MAC");
}

/// Polls the client proxy's config for web's endpoint count until it is
/// `want`, for at most a second; returns the last count seen.
fn endpoints_within_a_second(c: &Cluster, want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let dump = c.exec_ok(
            "ctl",
            "deploy/client",
            &[
                "curl",
                "-sS",
                "--max-time",
                "1",
                "http://127.0.0.1:15000/config_dump",
            ],
        );
        let v: serde_json::Value = serde_json::from_str(&dump).expect("config_dump JSON");
        let n = v["endpoints"]["web.ctl.svc.cluster.local"]
            .as_array()
            .map_or(0, Vec::len);
        if n == want || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "needs root"]
fn data_plane_keeps_serving_without_the_controller_and_new_pods_join_after() {
    needs_root();
    let c = Cluster::up("ctldown", &[]);
    c.apply(&client("ctl", true));
    c.apply(&web(2));
    c.wait_ready("ctl", "client", 1);
    c.wait_ready("ctl", "web", 2);
    assert_eq!(pods_answering(&c, 4).len(), 2);

    let out = c.meshctl(&["controller", "stop"]);
    assert!(out.status.success());
    // New connections, balanced over both pods, with no controller.
    assert_eq!(
        pods_answering(&c, 10).len(),
        2,
        "traffic stopped without the controller"
    );

    // A pod made now cannot get a certificate: not ready.
    c.apply(&app(
        "ctl",
        "late",
        1,
        8080,
        &["python3", &server("http_echo.py"), "8080"],
        "",
    ));
    std::thread::sleep(Duration::from_secs(3));
    let late: Vec<_> = c
        .pods()
        .into_iter()
        .filter(|p| p.deployment == "late")
        .collect();
    assert!(
        late.len() == 1 && !late[0].ready,
        "a new pod became ready without the controller: {late:?}"
    );

    let out = c.meshctl(&["controller", "start"]);
    assert!(out.status.success());
    c.wait_ready("ctl", "late", 1);
    // The client's proxy reconnects with backoff (up to 5 s); until then it
    // cannot learn new addresses.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let dump = c.exec_ok(
            "ctl",
            "deploy/client",
            &[
                "curl",
                "-sS",
                "--max-time",
                "2",
                "http://127.0.0.1:15000/config_dump",
            ],
        );
        let v: serde_json::Value = serde_json::from_str(&dump).expect("config_dump JSON");
        if v["controller"]["connected"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the client's proxy did not reconnect to the controller"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = c.exec_ok(
        "ctl",
        "deploy/client",
        &["curl", "-sS", "--max-time", "10", "http://late:8080/"],
    );
    assert!(out.starts_with("pod=late-"), "{out}");
    assert_eq!(pods_answering(&c, 4).len(), 2);
}
