//! What the injector does to workloads: a Job that completes, namespaces
//! left alone, a live workload patched by name.

use std::time::Duration;

use e2e::k8s::{Node, ok};

use crate::{manifests, step};

pub fn job_completes(node: &Node) {
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

pub fn opted_out(node: &Node) {
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

pub fn live_inject(node: &Node) {
    step("inject deploy/NAME -n NS patches a live workload, once");
    ok(node.apply(manifests::SOLO), "apply solo");
    node.rollout("plain", "solo", 120);
    let first = node.meshctl(&["inject", "deploy/solo", "-n", "plain"]);
    let said = String::from_utf8_lossy(&first.stderr).into_owned();
    ok(first, "meshctl inject deploy/solo");
    assert!(said.contains("deployment/solo: injected"), "{said}");
    node.rollout("plain", "solo", 180);
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
