//! PeerAuthentication as users write it: STRICT at namespace level refuses
//! a plaintext client before any byte reaches the app (and counts it),
//! while meshed clients keep working; a port-level DISABLE under STRICT
//! opens that port alone; PERMISSIVE and DISABLE at namespace level admit
//! plaintext again. The client outside the mesh reaches the server by its
//! Service name, as on Kubernetes.

use std::time::Duration;

use e2e::{Cluster, client, http_and_tcp_app, needs_root, text, wait_for};

fn policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: pa}}\nspec:\n{spec}"
    )
}

/// `curl` over HTTP from `from` to web's port 8080 by Service name: the
/// body on success, else curl's exit code.
fn http(c: &Cluster, from: &str) -> Result<String, i32> {
    let out = c.exec(
        "pa",
        from,
        &["curl", "-sS", "--max-time", "5", "http://web:8080/strict"],
    );
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(out.status.code().unwrap_or(-1))
    }
}

/// Sends `marker` to web's raw port from `from`; what came back.
fn raw(c: &Cluster, from: &str, marker: &str) -> String {
    c.tcp_send("pa", from, "web", 9091, marker)
}

fn web_log(c: &Cluster) -> String {
    text(&c.meshctl(&["logs", "deploy/web", "-n", "pa"]).stdout)
}

fn refused_count(c: &Cluster, web_ip: &str, port: u16) -> u64 {
    let metrics = c.proxy_metrics("pa", "deploy/outsider", web_ip);
    let series = format!(
        "mesh_inbound_connections_refused_total{{destination_port=\"{port}\",reason=\"plaintext_under_strict\"}} "
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
        .unwrap_or(0)
}

const LIMIT: Duration = Duration::from_secs(30);

#[test]
#[ignore = "needs root"]
fn peer_authentication_modes_as_users_write_them() {
    needs_root();
    let c = Cluster::up("peerauth", &[]);
    c.apply(&client("pa", true));
    c.apply(&client("pa", false));
    c.apply(&http_and_tcp_app("pa", "web"));
    c.wait_ready("pa", "client", 1);
    c.wait_ready("pa", "outsider", 1);
    let web_ip = c.wait_ready("pa", "web", 1)[0]
        .ip
        .expect("web's IP")
        .to_string();

    // No policy: PERMISSIVE, plaintext gets in.
    assert!(http(&c, "deploy/outsider").is_ok_and(|b| b.contains("path=/strict")));
    assert!(raw(&c, "deploy/outsider", "before-strict").contains("ok"));

    // Namespace-wide STRICT: the plaintext client is refused on both
    // ports, the meshed client is not.
    c.apply(&policy("default", "  mtls: {mode: STRICT}\n"));
    wait_for("plaintext refused under STRICT", LIMIT, || {
        match http(&c, "deploy/outsider") {
            Err(code) => Ok(code),
            Ok(body) => Err(body),
        }
    });
    let marker = "strict-secret-4b1e";
    let answer = raw(&c, "deploy/outsider", marker);
    assert!(!answer.contains("ok"), "{answer}");
    assert!(
        http(&c, "deploy/client").is_ok_and(|b| b.contains("path=/strict")),
        "the meshed client was refused"
    );
    assert!(refused_count(&c, &web_ip, 8080) >= 1);
    assert!(refused_count(&c, &web_ip, 9091) >= 1);

    // A port-level DISABLE under STRICT opens that port only.
    let raw_open = policy(
        "web-raw",
        "  selector: {matchLabels: {app: web}}\n  portLevelMtls: {9091: {mode: DISABLE}}\n",
    );
    c.apply(&raw_open);
    wait_for("port 9091 open under port-level DISABLE", LIMIT, || {
        let a = raw(&c, "deploy/outsider", "port-level-open");
        if a.contains("ok") { Ok(()) } else { Err(a) }
    });
    assert!(http(&c, "deploy/outsider").is_err(), "8080 opened too");
    // What STRICT refused never reached the app; what it let in did.
    let log = web_log(&c);
    assert!(
        log.contains("before-strict") && log.contains("port-level-open"),
        "{log}"
    );
    assert!(!log.contains(marker), "{log}");

    // Namespace-wide PERMISSIVE, then DISABLE: plaintext gets in again;
    // the meshed client still gets through.
    let out = c.meshctl_input(&["delete", "-f", "-"], &raw_open);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for mode in ["PERMISSIVE", "DISABLE"] {
        c.apply(&policy("default", &format!("  mtls: {{mode: {mode}}}\n")));
        wait_for(&format!("plaintext admitted under {mode}"), LIMIT, || {
            http(&c, "deploy/outsider").map_err(|code| format!("curl exit {code}"))
        });
        assert!(http(&c, "deploy/client").is_ok());
    }
}
