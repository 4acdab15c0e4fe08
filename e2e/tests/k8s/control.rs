//! The control plane's side: install and its failures, validation and
//! status, the proxy views, failover, analyze, uninstall.

use std::time::Duration;

use e2e::k8s::{Node, ok};

use crate::{manifests, step};

/// An install that fails part-way (its user may create the CRDs and the
/// namespace, nothing else) says what it applied and how to finish or
/// undo; the next install, with the rights, finishes it.
pub fn half_applied(node: &Node) {
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

pub fn analyze_cluster(node: &Node) {
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

pub fn validation_and_status(node: &Node) {
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

pub fn proxy_views(node: &Node) {
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

pub fn failover(node: &Node) {
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

pub fn uninstall(node: &Node) {
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

/// The controller names what a policy refers to and the cluster lacks,
/// in the policy's status, by field path (Istio's
/// ReferencedResourceNotFound), and keeps it accepted.
pub fn references(node: &Node) {
    step("a principal naming a missing ServiceAccount gets a warning in status");
    ok(
        node.apply(manifests::MISNAMED_PRINCIPAL),
        "apply AuthorizationPolicy",
    );
    let messages = node.wait_for("the policy's warnings", Duration::from_secs(30), || {
        let s = node.kubectl_ok(&[
            "get",
            "authorizationpolicy",
            "-n",
            "shop",
            "web-callers",
            "-o",
            "jsonpath={.status.conditions[0].status} {.status.validationMessages}",
        ]);
        if s.contains("principals[1]") {
            Ok(s)
        } else {
            Err(s)
        }
    });
    assert!(messages.starts_with("True "), "{messages}");
    assert!(
        messages.contains("clinet") && messages.contains("does not exist in namespace"),
        "{messages}"
    );
    assert!(!messages.contains("principals[0]"), "{messages}");
    ok(
        node.kubectl(&["delete", "-n", "shop", "authorizationpolicy/web-callers"]),
        "delete AuthorizationPolicy",
    );
}
