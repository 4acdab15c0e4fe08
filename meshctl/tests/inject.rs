//! `meshctl inject` as users run it: multi-document YAML on stdin, the
//! injected manifests on stdout, a report on stderr.

// A step that cannot be taken is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use serde_yaml_ng::Value;

const INPUT: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: main
        image: web:1
        ports: [{containerPort: 8080}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: report, namespace: shop}
spec:
  schedule: "*/5 * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: report, image: report:1}]
---
apiVersion: v1
kind: Pod
metadata:
  name: debug
  namespace: shop
  annotations: {sidecar.istio.io/inject: "false"}
spec:
  containers: [{name: sh, image: busybox}]
"#;

fn inject(input: &str, extra: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["inject", "-f", "-"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

fn names(v: &Value) -> Vec<String> {
    v.as_sequence()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn injects_workloads_passes_the_rest_and_is_idempotent() {
    let (code, out, err) = inject(INPUT, &[]);
    assert_eq!(code, 0, "{err}");
    let input = docs(INPUT);
    let output = docs(&out);
    assert_eq!(output.len(), 4, "{out}");
    assert_eq!(output[0], input[0], "a Service passes through unchanged");
    let pod = &output[1]["spec"]["template"]["spec"];
    assert_eq!(names(&pod["initContainers"]), ["mesh-init"]);
    assert_eq!(names(&pod["containers"]), ["mesh-proxy", "main"]);
    assert_eq!(output[1]["spec"]["replicas"], input[1]["spec"]["replicas"]);
    let job = &output[2]["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(names(&job["containers"]), ["mesh-proxy", "report"]);
    assert_eq!(output[3], input[3], "an opted-out pod is left alone");
    assert!(err.contains("deployment/web: injected"), "{err}");
    assert!(err.contains("cronjob/report: injected"), "{err}");
    assert!(
        err.contains("pod/debug: skipped: the pod says sidecar.istio.io/inject: \"false\""),
        "{err}"
    );

    let (code, again, err) = inject(&out, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(docs(&again), output, "injecting twice changes nothing");
    assert!(
        err.contains("deployment/web: skipped: already injected"),
        "{err}"
    );
}

#[test]
fn native_sidecars_and_the_image_come_from_flags() {
    let (code, out, err) = inject(
        INPUT,
        &[
            "--native-sidecars",
            "--proxy-image",
            "reg.example/mesh-proxy:9",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let pod = &docs(&out)[1]["spec"]["template"]["spec"];
    assert_eq!(names(&pod["initContainers"]), ["mesh-init", "mesh-proxy"]);
    assert_eq!(pod["initContainers"][1]["restartPolicy"], "Always");
    assert_eq!(
        pod["initContainers"][1]["image"],
        "reg.example/mesh-proxy:9"
    );
    assert_eq!(names(&pod["containers"]), ["main"]);
}

#[test]
fn a_bad_annotation_names_the_document_and_leaves_it() {
    let bad = INPUT.replace(
        "      labels: {app: web}\n",
        "      labels: {app: web}\n      annotations: {traffic.sidecar.istio.io/excludeInboundPorts: \"80,http\"}\n",
    );
    let (code, out, err) = inject(&bad, &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("error: -:2 deployment/web: metadata.annotations[\"traffic.sidecar.istio.io/excludeInboundPorts\"]"),
        "{err}"
    );
    let output = docs(&out);
    assert_eq!(output[1], docs(&bad)[1], "left unchanged");
    assert!(
        err.contains("cronjob/report: injected"),
        "the others still are: {err}"
    );
}
