//! The mesh on a real Kubernetes node: `meshctl check --pre`, `install`,
//! `check`, then the scenarios through kubectl with injection by the real
//! webhook, then `uninstall`. One node for the whole run (it takes half a
//! minute to start), so the scenarios are steps of one test, each named
//! in the output; the node is always stopped, and checked clean.

// Scenarios: a step that cannot be taken is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod identity;
mod manifests;

use std::time::Duration;

use e2e::k8s::{Node, in_node_net, ok};

fn step(name: &str) {
    eprintln!("== {name}");
}

#[test]
#[ignore = "needs root and the Kubernetes node: cargo xtask node prepare"]
fn the_mesh_on_kubernetes() {
    let node = Node::start();
    step("check --pre, install, check");
    let pre = node.meshctl(&["check", "--pre"]);
    ok(pre, "meshctl check --pre");
    half_applied(&node);
    ok(node.meshctl(&["install"]), "meshctl install");
    let check = ok(node.meshctl(&["check"]), "meshctl check");
    assert!(check.contains("every check passed"), "{check}");

    step("deploy the shop, injected by the webhook");
    ok(node.apply(manifests::SHOP), "kubectl apply shop");
    for version in ["v1", "v2"] {
        ok(node.apply(&manifests::web(version)), "kubectl apply web");
    }
    for d in ["web-v1", "web-v2", "flaky", "client"] {
        node.kubectl_ok(&[
            "rollout",
            "status",
            "-n",
            "shop",
            &format!("deploy/{d}"),
            "--timeout=180s",
        ]);
    }
    let containers = node.kubectl_ok(&[
        "get",
        "pods",
        "-n",
        "shop",
        "-l",
        "app=client",
        "-o",
        "jsonpath={.items[0].spec.containers[*].name} {.items[0].spec.initContainers[*].name}",
    ]);
    assert!(
        containers.contains(api::inject::PROXY) && containers.contains(api::inject::INIT),
        "{containers}"
    );

    mtls_with_capture(&node);
    canary(&node);
    retries(&node);
    job_completes(&node);
    opted_out(&node);
    live_inject(&node);
    validation_and_status(&node);
    proxy_views(&node);
    failover(&node);
    analyze_cluster(&node);
    identity::token_reviews(&node);
    uninstall(&node);
    node.stop();
}

/// An install that fails part-way (its user may create the CRDs and the
/// namespace, nothing else) says what it applied and how to finish or
/// undo; the next install, with the rights, finishes it.
fn half_applied(node: &Node) {
    step("a failed install says what is half-applied and how to finish or undo it");
    ok(
        node.apply(manifests::LIMITED_INSTALLER),
        "apply the limited installer",
    );
    let token = node.kubectl_ok(&["create", "token", "installer", "-n", "default"]);
    let kubeconfig = e2e::k8s::run_dir().join("installer.kubeconfig");
    std::fs::copy(node.kubeconfig(), &kubeconfig).unwrap();
    let kc = kubeconfig.to_str().unwrap();
    node.kubectl_ok(&[
        "--kubeconfig",
        kc,
        "config",
        "set-credentials",
        "installer",
        "--token",
        token.trim(),
    ]);
    node.kubectl_ok(&[
        "--kubeconfig",
        kc,
        "config",
        "set-context",
        "--current",
        "--user",
        "installer",
    ]);
    let out = node.meshctl(&["install", "--kubeconfig", kc]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("applied before the failure:"), "{said}");
    assert!(
        said.contains("CustomResourceDefinition virtualservices.networking.istio.io"),
        "{said}"
    );
    assert!(said.contains("Namespace mesh-system"), "{said}");
    assert!(
        said.contains("run meshctl install again") && said.contains("meshctl uninstall"),
        "{said}"
    );
}

/// The client's curl to the server's Service, through both proxies; a
/// capture on the node shows TLS on the wire and no plaintext.
fn mtls_with_capture(node: &Node) {
    step("curl between two injected Deployments over mTLS, captured");
    if node.external() {
        eprintln!("   (the capture needs the project's own node: left out on this cluster)");
        let out = node.exec(
            "shop",
            "deploy/client",
            &[
                "curl",
                "-sf",
                "-m",
                "5",
                "http://web.shop.svc.cluster.local/",
            ],
        );
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
            let out = node.exec(
                "shop",
                "deploy/client",
                &[
                    "curl",
                    "-sf",
                    "-m",
                    "5",
                    "http://web.shop.svc.cluster.local/",
                ],
            );
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

fn canary(node: &Node) {
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

fn retries(node: &Node) {
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

fn job_completes(node: &Node) {
    step("a Job completes although it has a sidecar");
    ok(node.apply(manifests::JOB), "apply Job");
    node.wait_for("the Job completes", Duration::from_secs(120), || {
        let s = node.kubectl_ok(&[
            "get",
            "job",
            "-n",
            "shop",
            "report",
            "-o",
            "jsonpath={.status.succeeded}/{.status.failed}",
        ]);
        if s.starts_with('1') { Ok(()) } else { Err(s) }
    });
    let containers = node.kubectl_ok(&[
        "get",
        "pods",
        "-n",
        "shop",
        "-l",
        "job-name=report",
        "-o",
        "jsonpath={.items[0].spec.containers[*].name}",
    ]);
    assert!(
        containers.contains(api::inject::PROXY),
        "the Job's pod was not injected: {containers}"
    );
}

fn opted_out(node: &Node) {
    step("pods in opted-out namespaces are left untouched");
    ok(
        node.apply(manifests::OPTED_OUT),
        "apply opted-out namespaces",
    );
    for (ns, pod) in [("plain", "bare"), ("optout", "asks")] {
        let names = node.kubectl_ok(&[
            "get",
            "pod",
            "-n",
            ns,
            pod,
            "-o",
            "jsonpath={.spec.containers[*].name}|{.spec.initContainers[*].name}",
        ]);
        assert_eq!(names, "app|", "{ns}/{pod} was changed");
    }
}

fn live_inject(node: &Node) {
    step("inject deploy/NAME -n NS patches a live workload, once");
    ok(node.apply(manifests::SOLO), "apply solo");
    node.kubectl_ok(&[
        "rollout",
        "status",
        "-n",
        "plain",
        "deploy/solo",
        "--timeout=120s",
    ]);
    let first = node.meshctl(&["inject", "deploy/solo", "-n", "plain"]);
    let said = String::from_utf8_lossy(&first.stderr).into_owned();
    ok(first, "meshctl inject deploy/solo");
    assert!(said.contains("deployment/solo: injected"), "{said}");
    node.kubectl_ok(&[
        "rollout",
        "status",
        "-n",
        "plain",
        "deploy/solo",
        "--timeout=180s",
    ]);
    node.wait_for(
        "the new pod carries the proxy",
        Duration::from_secs(60),
        || {
            let names = node.kubectl_ok(&[
                "get",
                "pods",
                "-n",
                "plain",
                "-l",
                "app=solo",
                "-o",
                "jsonpath={.items[*].spec.containers[*].name}",
            ]);
            // One pod left (the old one gone), and it carries the proxy.
            if names.contains(api::inject::PROXY)
                && names.split_whitespace().filter(|n| *n == "app").count() == 1
            {
                Ok(())
            } else {
                Err(names)
            }
        },
    );
    let again = node.meshctl(&["inject", "deploy/solo", "-n", "plain"]);
    let said = String::from_utf8_lossy(&again.stderr).into_owned();
    ok(again, "meshctl inject deploy/solo, again");
    assert!(said.contains("skipped: already injected"), "{said}");
}

fn analyze_cluster(node: &Node) {
    step("analyze reads the cluster's objects");
    // A VirtualService routing to a subset no DestinationRule defines.
    ok(
        node.apply(manifests::UNKNOWN_SUBSET),
        "apply a route to a missing subset",
    );
    let out = node.meshctl(&["analyze", "-o", "json"]);
    let findings: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(
        findings.iter().any(
            |f| f["object"].as_str().is_some_and(|o| o.contains("ghost"))
                && f["message"].as_str().is_some_and(|m| m.contains("v9"))
        ),
        "{findings:?}"
    );
    assert_eq!(out.status.code(), Some(1), "an error finding exits 1");
    // Workloads as Kubernetes runs them are not held to the local
    // runtime's rules (a command instead of the image's).
    assert!(
        !findings.iter().any(|f| f["object"]
            .as_str()
            .is_some_and(|o| o.starts_with("Deployment"))),
        "{findings:?}"
    );
    ok(
        node.kubectl(&["delete", "virtualservice", "-n", "shop", "ghost"]),
        "delete ghost",
    );
}

fn validation_and_status(node: &Node) {
    step(
        "the validating webhook refuses what meshctl validate refuses; status on accepted objects",
    );
    let out = node.apply(manifests::INVALID);
    let refused = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "an invalid VirtualService was accepted"
    );
    let dir = std::env::temp_dir().join(format!("mesh-k8s-invalid-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("broken.yaml");
    std::fs::write(&file, manifests::INVALID).unwrap();
    let validate = node.meshctl(&["validate", "-f", file.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    let ours = String::from_utf8_lossy(&validate.stdout).into_owned()
        + &String::from_utf8_lossy(&validate.stderr);
    let message = ours
        .lines()
        .find_map(|l| {
            l.split_once("spec.http[0].route[0].weight: ")
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| panic!("meshctl validate did not name the field: {ours}"));
    assert!(
        refused.contains("spec.http[0].route[0].weight"),
        "{refused}"
    );
    assert!(
        refused.contains(&message),
        "the webhook's message differs from validate's {message:?}: {refused}"
    );
    node.wait_for(
        "the accepted VirtualService's status",
        Duration::from_secs(30),
        || {
            let s = node.kubectl_ok(&[
                "get",
                "virtualservice",
                "-n",
                "shop",
                "web",
                "-o",
                "jsonpath={.status.conditions[0].type}={.status.conditions[0].status}",
            ]);
            if s == "Accepted=True" { Ok(()) } else { Err(s) }
        },
    );
}

fn proxy_views(node: &Node) {
    step("proxy-config and proxy-status");
    let routes = ok(
        node.meshctl(&[
            "proxy-config",
            "routes",
            "deploy/client",
            "-n",
            "shop",
            "-o",
            "json",
        ]),
        "proxy-config routes",
    );
    let rows: Vec<serde_json::Value> = serde_json::from_str(&routes).unwrap();
    let web = rows
        .iter()
        .find(|r| r["service"] == "web.shop.svc.cluster.local")
        .unwrap_or_else(|| panic!("no route for web: {routes}"));
    let action = web["action"].as_str().unwrap();
    assert!(
        action.contains("v1") && action.contains("50%") && action.contains("v2"),
        "{action}"
    );
    let flaky = rows
        .iter()
        .find(|r| r["service"] == "flaky.shop.svc.cluster.local")
        .unwrap();
    assert_eq!(flaky["retries"], "3");
    let status = node.wait_for("every proxy in sync", Duration::from_secs(30), || {
        let out = node.meshctl(&["proxy-status", "-o", "json"]);
        let rows: Vec<serde_json::Value> =
            serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        let running = rows
            .iter()
            .filter(|r| r["name"].as_str().is_some_and(|n| n.ends_with(".shop")))
            .count();
        if running >= 4 && rows.iter().all(|r| r["status"] == "SYNCED") {
            Ok(rows)
        } else {
            Err(format!("{rows:?}"))
        }
    });
    assert!(
        status
            .iter()
            .any(|r| r["name"].as_str().unwrap().starts_with("client-"))
    );
    let proxy_check = ok(
        node.meshctl(&["check", "--proxy", "-n", "shop"]),
        "check --proxy",
    );
    assert!(proxy_check.contains("every check passed"), "{proxy_check}");
}

fn failover(node: &Node) {
    step(
        "upgrade to two replicas; the Lease moves when its holder goes, and the new leader writes",
    );
    let out = node.meshctl(&["upgrade", "--set", "controller.replicas=2"]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(out, "meshctl upgrade");
    assert!(
        said.contains("kept from the cluster"),
        "upgrade did not keep the CA: {said}"
    );
    let holder = || {
        node.kubectl_ok(&[
            "get",
            "lease",
            "-n",
            "mesh-system",
            "mesh-controller",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
    };
    let first = holder();
    assert!(first.starts_with("mesh-controller-"), "{first:?}");
    node.kubectl_ok(&["delete", "pod", "-n", "mesh-system", &first, "--wait=false"]);
    let second = node.wait_for(
        "another replica takes the Lease",
        Duration::from_secs(90),
        || {
            let h = holder();
            if !h.is_empty() && h != first {
                Ok(h)
            } else {
                Err(h)
            }
        },
    );
    ok(
        node.apply(manifests::FLAKY_POLICY),
        "apply a DestinationRule",
    );
    node.wait_for(
        "the new leader writes its status",
        Duration::from_secs(60),
        || {
            let s = node.kubectl_ok(&[
                "get",
                "destinationrule",
                "-n",
                "shop",
                "flaky",
                "-o",
                "jsonpath={.status.conditions[0].status}",
            ]);
            if s == "True" {
                Ok(())
            } else {
                Err(format!("{second}: {s:?}"))
            }
        },
    );
    let check = node.wait_for("every proxy back in sync", Duration::from_secs(60), || {
        let out = node.meshctl(&["check"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(text)
        } else {
            Err(text)
        }
    });
    assert!(check.contains("2/2 replicas"), "{check}");
}

fn uninstall(node: &Node) {
    step("uninstall leaves no mesh object");
    let out = node.meshctl(&["uninstall"]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(out, "meshctl uninstall");
    assert!(
        said.contains("still carry the mesh's sidecar") && said.contains("shop/"),
        "{said}"
    );
    let left = |args: &[&str]| node.kubectl_ok(args).trim().to_string();
    assert_eq!(
        left(&[
            "get",
            "namespace",
            "mesh-system",
            "--ignore-not-found",
            "-o",
            "name"
        ]),
        ""
    );
    assert_eq!(
        left(&["get", "crd", "-o", "name"])
            .lines()
            .filter(|l| l.contains("istio.io")
                || l.contains("linkerd.io")
                || l.contains("mesh.io")
                || l.contains("smi-spec"))
            .count(),
        0
    );
    for kind in [
        "mutatingwebhookconfigurations",
        "validatingwebhookconfigurations",
        "clusterroles",
        "clusterrolebindings",
    ] {
        assert_eq!(
            left(&[
                "get",
                kind,
                "-l",
                "app.kubernetes.io/part-of=mesh",
                "-o",
                "name"
            ]),
            "",
            "{kind} left"
        );
    }
    assert_eq!(
        left(&[
            "get",
            "configmaps",
            "-A",
            "-l",
            "app.kubernetes.io/part-of=mesh",
            "-o",
            "name"
        ]),
        ""
    );
    // The workloads stay.
    assert!(left(&["get", "deploy", "-n", "shop", "-o", "name"]).contains("web-v1"));
}
