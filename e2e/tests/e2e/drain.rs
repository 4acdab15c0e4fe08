//! Graceful drain: a proxy told to stop (SIGTERM, as a pod's termination
//! sends it) lets the request in flight finish, then exits.

use std::process::Command;
use std::time::{Duration, Instant};

use e2e::{Cluster, client, needs_root, text, versioned};

/// The pid of the `mesh-proxy` process in network namespace `netns`.
fn proxy_pid(netns: &str) -> String {
    let pids = text(
        &Command::new("ip")
            .args(["netns", "pids", netns])
            .output()
            .unwrap()
            .stdout,
    );
    pids.split_whitespace()
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "mesh-proxy")
        })
        .unwrap_or_else(|| panic!("no mesh-proxy in {netns}: {pids}"))
        .to_string()
}

#[test]
#[ignore = "needs root"]
fn sigterm_lets_the_request_in_flight_finish() {
    needs_root();
    let ns = "drain";
    let c = Cluster::up("drain", &[]);
    c.apply(&client(ns, true));
    c.apply(&versioned(ns, "web", 8080, &[("v1", 1, "")]));
    c.wait_ready(ns, "client", 1);
    let web = c.wait_ready(ns, "web-v1", 1).remove(0);
    let pid = proxy_pid(&web.netns);
    // A request the app answers after 2 s, then SIGTERM to the server's
    // proxy while it is in flight.
    let slow = c.spawn_exec(
        ns,
        "deploy/client",
        &[
            "curl",
            "-sS",
            "-w",
            " %{http_code}",
            "http://web:8080/?delay=2000",
        ],
    );
    std::thread::sleep(Duration::from_millis(700));
    let started = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = slow.wait_with_output().unwrap();
    let body = text(&out.stdout);
    assert!(body.ends_with(" 200"), "{body} {}", text(&out.stderr));
    assert!(body.contains("pod=web-v1"), "{body}");
    // Then it leaves, well within the grace period.
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the proxy did not exit after its drain"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
