//! The mesh on a real Kubernetes node: `meshctl check --pre`, `install`,
//! `check`, then the scenarios through kubectl with injection by the real
//! webhook, then `uninstall`. One node for the whole run (it takes half a
//! minute to start), so the scenarios are steps of one test, each named
//! in the output; the node is always stopped, and checked clean.

// Scenarios: a step that cannot be taken is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod control;
mod ext_authz;
mod identity;
mod jwt;
mod manifests;
mod security;
mod traffic;
mod upstream_tls;
mod workloads;

use e2e::k8s::{Node, ok};

pub(crate) fn step(name: &str) {
    eprintln!("== {name}");
}

#[test]
#[ignore = "needs root and the Kubernetes node: cargo xtask node prepare"]
fn the_mesh_on_kubernetes() {
    let node = Node::start();
    step("check --pre, install, check");
    let pre = node.meshctl(&["check", "--pre"]);
    ok(pre, "meshctl check --pre");
    control::half_applied(&node);
    ok(node.meshctl(&["install"]), "meshctl install");
    let check = ok(node.meshctl(&["check"]), "meshctl check");
    assert!(check.contains("every check passed"), "{check}");

    step("deploy the shop, injected by the webhook");
    ok(node.apply(manifests::SHOP), "kubectl apply shop");
    for version in ["v1", "v2"] {
        ok(node.apply(&manifests::web(version)), "kubectl apply web");
    }
    for d in ["web-v1", "web-v2", "flaky", "client"] {
        node.rollout("shop", d, 180);
    }
    // The client pod, as the injector left it.
    let client_pod = |jsonpath: &str| {
        node.kubectl_ok(&[
            "get",
            "pods",
            "-n",
            "shop",
            "-l",
            "app=client",
            "-o",
            &format!("jsonpath={jsonpath}"),
        ])
    };
    let containers =
        client_pod("{.items[0].spec.containers[*].name} {.items[0].spec.initContainers[*].name}");
    assert!(
        containers.contains(api::inject::PROXY) && containers.contains(api::inject::INIT),
        "{containers}"
    );
    // Istio's scrape annotations, for a Prometheus' kubernetes-pods job.
    let scrape = client_pod(
        r"{.items[0].metadata.annotations.prometheus\.io/scrape} {.items[0].metadata.annotations.prometheus\.io/port} {.items[0].metadata.annotations.prometheus\.io/path}",
    );
    assert_eq!(scrape.trim(), "true 15020 /stats/prometheus");

    traffic::mtls_with_capture(&node);
    traffic::canary(&node);
    traffic::retries(&node);
    traffic::selectorless(&node);
    workloads::job_completes(&node);
    workloads::opted_out(&node);
    security::policies(&node);
    jwt::tokens_and_claims(&node);
    ext_authz::custom_provider(&node);
    upstream_tls::origination(&node);
    workloads::live_inject(&node);
    control::validation_and_status(&node);
    control::references(&node);
    control::proxy_views(&node);
    control::failover(&node);
    control::analyze_cluster(&node);
    identity::token_reviews(&node);
    control::uninstall(&node);
    node.stop();
}
