//! Destinations outside the mesh: passed through under ALLOW_ANY (the
//! default), refused under a Sidecar's REGISTRY_ONLY (502 for HTTP, as
//! Istio's BlackHoleCluster), and reachable again once a ServiceEntry
//! registers them, with VirtualService routing applied to the entry's host.
//! The "external" server runs in the node's namespace, outside every pod.

use std::process::Command;
use std::time::Duration;

use e2e::{Cluster, Killed, client, needs_root, server};

use super::*;

const REGISTRY_ONLY: &str = r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: ext}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"#;

const ENTRY: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: ext}
spec:
  hosts: [legacy.example.com]
  addresses: [10.244.0.1]
  ports: [{number: 18080, name: http, protocol: HTTP}]
  location: MESH_EXTERNAL
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: legacy, namespace: ext}
spec:
  hosts: [legacy.example.com]
  http:
  - route: [{destination: {host: legacy.example.com}}]
    headers: {request: {set: {x-via: mesh}}}
"#;

#[test]
#[ignore = "needs root"]
fn registry_only_blocks_unknown_hosts_until_a_service_entry_names_them() {
    needs_root();
    let c = Cluster::up("egress", &[]);
    c.apply(&client("ext", true));
    c.wait_ready("ext", "client", 1);
    let dir = c.state.join("external");
    std::fs::create_dir_all(&dir).unwrap();
    let _external = Killed(
        Command::new("ip")
            .args(["netns", "exec", &c.node_ns(), "python3"])
            .arg(server("testserver.py"))
            .arg("18080")
            .current_dir(&dir)
            .env("POD_NAME", "external")
            .spawn()
            .unwrap(),
    );
    let get = |args: &[&str]| {
        let mut a = vec!["-s", "-o", "/dev/null", "-w", "%{http_code}"];
        a.extend(args);
        let mut argv = vec!["curl", "--max-time", "10"];
        argv.extend(a);
        e2e::text(&c.exec("ext", "deploy/client", &argv).stdout)
    };
    until("the external server", Duration::from_secs(10), || {
        get(&["http://10.244.0.1:18080/"]) == "200"
    });
    c.apply(REGISTRY_ONLY);
    until("REGISTRY_ONLY", Duration::from_secs(5), || {
        get(&["http://10.244.0.1:18080/"]) == "502"
    });
    for _ in 0..5 {
        assert_eq!(get(&["http://10.244.0.1:18080/"]), "502");
    }
    let metrics = curl(&c, "ext", &["http://127.0.0.1:15020/metrics"]);
    assert!(
        metrics.contains("destination_service=\"BlackHoleCluster\""),
        "{metrics}"
    );

    c.apply(ENTRY);
    let via = || {
        e2e::text(
            &c.exec(
                "ext",
                "deploy/client",
                &[
                    "curl",
                    "-s",
                    "--max-time",
                    "10",
                    "--resolve",
                    "legacy.example.com:18080:10.244.0.1",
                    "http://legacy.example.com:18080/x",
                ],
            )
            .stdout,
        )
    };
    until("the ServiceEntry", Duration::from_secs(5), || {
        via().starts_with("pod=external")
    });
    let out = via();
    assert!(
        out.contains("host=legacy.example.com:18080") && out.contains("h:x-via=mesh"),
        "{out}"
    );
}
