use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;

fn settings(native: bool) -> Settings {
    Settings {
        token_audience: "mesh".into(),
        native_sidecars: native,
        ..Settings::for_image("local/mesh-proxy:0.1.0")
    }
}

fn pod(yaml: &str) -> Pod {
    serde_yaml_ng::from_str(yaml).unwrap()
}

const APP: &str = r#"
metadata:
  name: web-1
  labels: {app: web, version: v2}
spec:
  containers:
  - name: app
    image: web
    ports: [{name: http, containerPort: 8080}]
    readinessProbe: {httpGet: {path: /healthz, port: http}, timeoutSeconds: 3}
    livenessProbe: {tcpSocket: {port: 8080}}
    startupProbe: {exec: {command: [true]}}
"#;

fn enabled() -> BTreeMap<String, String> {
    BTreeMap::from([(NAMESPACE_LABEL.to_string(), "enabled".to_string())])
}

fn run(
    p: &mut Pod,
    labels: &BTreeMap<String, String>,
    s: &Settings,
) -> Result<Outcome, InjectError> {
    let spec = p.spec.as_mut().unwrap();
    inject(
        &mut p.metadata,
        spec,
        Target {
            namespace: "shop",
            namespace_labels: labels,
            workload: "web",
        },
        s,
    )
}

fn names(c: &Option<Vec<Container>>) -> Vec<&str> {
    c.iter().flatten().map(|c| c.name.as_str()).collect()
}

fn env<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)?
        .value
        .as_deref()
}

#[test]
fn a_classic_sidecar_holds_the_app_and_runs_locked_down() {
    let mut p = pod(APP);
    let out = run(&mut p, &enabled(), &settings(false)).unwrap();
    assert_eq!(out, Outcome::Injected { ignored: vec![] });
    let spec = p.spec.as_ref().unwrap();
    assert_eq!(names(&spec.init_containers), [INIT]);
    assert_eq!(names(&Some(spec.containers.clone())), [PROXY, "app"]);
    let init = &spec.init_containers.as_ref().unwrap()[0];
    let caps = init
        .security_context
        .as_ref()
        .unwrap()
        .capabilities
        .as_ref()
        .unwrap();
    assert_eq!(caps.add.as_deref().unwrap(), ["NET_ADMIN", "NET_RAW"]);
    assert_eq!(caps.drop.as_deref().unwrap(), ["ALL"]);
    assert_eq!(init.args.as_deref().unwrap(), ["init", "--proxy-uid=1337"]);
    let proxy = &spec.containers[0];
    let sc = proxy.security_context.as_ref().unwrap();
    assert_eq!(
        (sc.run_as_user, sc.run_as_non_root),
        (Some(1337), Some(true))
    );
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let hook = proxy
        .lifecycle
        .as_ref()
        .unwrap()
        .post_start
        .as_ref()
        .unwrap();
    assert_eq!(
        hook.exec.as_ref().unwrap().command.as_ref().unwrap()[..2],
        ["mesh-proxy", "wait"]
    );
    let requests = proxy.resources.as_ref().unwrap().requests.as_ref().unwrap();
    assert_eq!(requests["cpu"].0, "100m");
    assert_eq!(env(proxy, "MESH_WORKLOAD"), Some("web"));
    assert_eq!(
        env(proxy, "MESH_TOKEN_FILE"),
        Some("/var/run/secrets/mesh/tokens/token")
    );
    let volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(volumes, ["mesh-token", "mesh-anchors"]);
    let token = spec.volumes.as_ref().unwrap()[0]
        .projected
        .as_ref()
        .unwrap()
        .sources
        .as_ref()
        .unwrap()[0]
        .service_account_token
        .as_ref()
        .unwrap();
    assert_eq!(token.audience.as_deref(), Some("mesh"));
    let labels = p.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["service.istio.io/canonical-name"], "web");
    assert_eq!(labels["service.istio.io/canonical-revision"], "v2");
    assert_eq!(labels["security.istio.io/tlsMode"], "istio");
    let annotations = p.metadata.annotations.as_ref().unwrap();
    assert!(annotations[STATUS].contains("\"containers\":[\"mesh-proxy\"]"));
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "15020");
    assert_eq!(annotations["prometheus.io/path"], "/stats/prometheus");
}

#[test]
fn a_pods_own_scrape_annotations_are_kept() {
    let mut p = pod(APP);
    p.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("prometheus.io/port".into(), "9090".into());
    run(&mut p, &enabled(), &settings(false)).unwrap();
    let annotations = p.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations["prometheus.io/port"], "9090");
    assert!(!annotations.contains_key("prometheus.io/path"));
}

#[test]
fn injecting_twice_changes_nothing() {
    let mut p = pod(APP);
    run(&mut p, &enabled(), &settings(false)).unwrap();
    let once = p.clone();
    let out = run(&mut p, &enabled(), &settings(false)).unwrap();
    assert_eq!(out, Outcome::Skipped("already injected".into()));
    assert_eq!(p, once);
}

#[test]
fn native_sidecars_are_restartable_init_containers() {
    let mut p = pod(APP);
    run(&mut p, &enabled(), &settings(true)).unwrap();
    let spec = p.spec.as_ref().unwrap();
    assert_eq!(names(&spec.init_containers), [INIT, PROXY]);
    assert_eq!(names(&Some(spec.containers.clone())), ["app"]);
    let proxy = &spec.init_containers.as_ref().unwrap()[1];
    assert_eq!(proxy.restart_policy.as_deref(), Some("Always"));
    assert!(proxy.startup_probe.is_some());
    assert!(proxy.lifecycle.is_none());
}

#[test]
fn istios_rules_decide() {
    let none = BTreeMap::new();
    let disabled = BTreeMap::from([(NAMESPACE_LABEL.to_string(), "disabled".to_string())]);
    let cases: [(&str, &BTreeMap<String, String>, bool); 6] = [
        ("metadata: {}", &none, false),
        (
            "metadata: {labels: {sidecar.istio.io/inject: \"true\"}}",
            &none,
            true,
        ),
        (
            "metadata: {labels: {sidecar.istio.io/inject: \"true\"}}",
            &disabled,
            false,
        ),
        (
            "metadata: {annotations: {sidecar.istio.io/inject: \"false\"}}",
            &enabled(),
            false,
        ),
        (
            "metadata: {labels: {sidecar.istio.io/inject: \"false\"}}",
            &enabled(),
            false,
        ),
        ("metadata: {}", &enabled(), true),
    ];
    for (meta, ns, want) in cases {
        let mut p = pod(&format!("{meta}\nspec: {{containers: [{{name: app}}]}}"));
        let out = run(&mut p, ns, &settings(false)).unwrap();
        assert_eq!(
            matches!(out, Outcome::Injected { .. }),
            want,
            "{meta} in {ns:?}: {out:?}"
        );
    }
    let mut p = pod("metadata: {}\nspec: {containers: [{name: app}]}");
    let Outcome::Skipped(why) = run(&mut p, &none, &settings(false)).unwrap() else {
        panic!("injected")
    };
    assert!(why.contains("istio-injection=enabled"), "{why}");
    let mut p = pod("metadata: {}\nspec: {hostNetwork: true, containers: [{name: app}]}");
    assert!(matches!(
        run(&mut p, &enabled(), &settings(false)),
        Ok(Outcome::Skipped(_))
    ));
    let mut p = pod("metadata: {}\nspec: {containers: [{name: app}]}");
    let spec = p.spec.as_mut().unwrap();
    let out = inject(
        &mut p.metadata,
        spec,
        Target {
            namespace: "kube-system",
            namespace_labels: &enabled(),
            workload: "x",
        },
        &settings(false),
    );
    assert!(matches!(out, Ok(Outcome::Skipped(_))));
    let mut s = settings(false);
    s.by_default = true;
    let mut p = pod("metadata: {}\nspec: {containers: [{name: app}]}");
    assert!(matches!(
        run(&mut p, &none, &s),
        Ok(Outcome::Injected { .. })
    ));
}

#[test]
fn annotations_shape_the_sidecar() {
    let mut p = pod(r#"
metadata:
  annotations:
    traffic.sidecar.istio.io/excludeOutboundPorts: "5432,6379"
    traffic.sidecar.istio.io/excludeOutboundIPRanges: "10.0.0.0/8"
    sidecar.istio.io/proxyMemory: 64Mi
    sidecar.istio.io/proxyCPULimit: "1"
    proxy.istio.io/config: |
      holdApplicationUntilProxyStarts: false
      terminationDrainDuration: 10s
      concurrency: 2
    sidecar.istio.io/userVolume: '[{"name":"certs","secret":{"secretName":"certs"}}]'
    sidecar.istio.io/userVolumeMount: '[{"name":"certs","mountPath":"/etc/certs","readonly":true}]'
spec: {containers: [{name: app}]}
"#);
    let out = run(&mut p, &enabled(), &settings(false)).unwrap();
    assert_eq!(
        out,
        Outcome::Injected {
            ignored: vec!["proxy.istio.io/config: concurrency is not supported".into()]
        }
    );
    let spec = p.spec.as_ref().unwrap();
    let init = &spec.init_containers.as_ref().unwrap()[0];
    assert_eq!(
        init.args.as_deref().unwrap(),
        [
            "init",
            "--proxy-uid=1337",
            "--exclude-outbound-ports=5432,6379",
            "--exclude-outbound-cidrs=10.0.0.0/8"
        ]
    );
    let proxy = &spec.containers[0];
    assert!(
        proxy.lifecycle.is_none(),
        "holdApplicationUntilProxyStarts: false"
    );
    assert_eq!(env(proxy, "MESH_DRAIN_GRACE"), Some("10s"));
    let r = proxy.resources.as_ref().unwrap();
    assert_eq!(r.requests.as_ref().unwrap()["memory"].0, "64Mi");
    assert_eq!(r.requests.as_ref().unwrap()["cpu"].0, "100m");
    assert_eq!(r.limits.as_ref().unwrap()["cpu"].0, "1");
    let mount = proxy
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "certs")
        .expect("the user volume is mounted in the proxy");
    assert_eq!(
        (mount.mount_path.as_str(), mount.read_only),
        ("/etc/certs", Some(true))
    );
    assert!(spec.volumes.iter().flatten().any(|v| v.name == "certs"));
    assert!(spec.containers[1].volume_mounts.is_none(), "not in the app");
}

#[test]
fn bad_annotations_are_named_and_leave_the_pod_alone() {
    for (key, value, says) in [
        (
            "traffic.sidecar.istio.io/excludeInboundPorts",
            "80,http",
            "not a port",
        ),
        ("sidecar.istio.io/proxyMemory", "lots", "not a quantity"),
        (
            "proxy.istio.io/config",
            "holdApplicationUntilProxyStarts: yes please",
            "true or false",
        ),
        (
            "proxy.istio.io/config",
            "terminationDrainDuration: soon",
            "duration",
        ),
    ] {
        let mut p = pod("metadata: {}\nspec: {containers: [{name: app}]}");
        p.metadata.annotations = Some(BTreeMap::from([(key.to_string(), value.to_string())]));
        let before = p.clone();
        let e = run(&mut p, &enabled(), &settings(false)).unwrap_err();
        assert_eq!(e.annotation, key);
        assert!(e.message.contains(says), "{e}");
        assert_eq!(p, before);
    }
}

#[test]
fn app_probes_go_through_the_proxy() {
    let mut p = pod(APP);
    run(&mut p, &enabled(), &settings(false)).unwrap();
    let spec = p.spec.as_ref().unwrap();
    let app = &spec.containers[1];
    let ready = app
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(ready.path.as_deref(), Some("/app-health/app/readyz"));
    assert_eq!(ready.port, IntOrString::Int(HEALTH_PORT));
    let live = app.liveness_probe.as_ref().unwrap();
    assert!(live.tcp_socket.is_none());
    assert_eq!(
        live.http_get.as_ref().unwrap().path.as_deref(),
        Some("/app-health/app/livez")
    );
    // An exec probe runs in the container: left alone.
    assert!(app.startup_probe.as_ref().unwrap().exec.is_some());
    let probers: BTreeMap<String, AppProbe> =
        serde_json::from_str(env(&spec.containers[0], "MESH_APP_PROBERS").unwrap()).unwrap();
    let original = &probers["/app-health/app/readyz"];
    assert_eq!(
        (original.path.as_deref(), original.port),
        (Some("/healthz"), 8080)
    );
    assert_eq!(original.timeout_seconds, Some(3));
    let live = &probers["/app-health/app/livez"];
    assert_eq!((live.path.as_deref(), live.port), (None, 8080));

    let mut p = pod(APP);
    p.metadata.annotations = Some(BTreeMap::from([(
        "sidecar.istio.io/rewriteAppHTTPProbers".to_string(),
        "false".to_string(),
    )]));
    run(&mut p, &enabled(), &settings(false)).unwrap();
    let spec = p.spec.as_ref().unwrap();
    assert_eq!(
        spec.containers[1]
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/healthz")
    );
    assert_eq!(env(&spec.containers[0], "MESH_APP_PROBERS"), None);
}

#[test]
fn the_workload_is_named_as_istio_names_it() {
    let cases = [
        (
            "{name: web-7d9f8-abcde, labels: {pod-template-hash: 7d9f8}, ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-7d9f8, uid: u, controller: true}]}",
            "web",
        ),
        (
            "{name: backup-x1, ownerReferences: [{apiVersion: batch/v1, kind: Job, name: backup, uid: u, controller: true}]}",
            "backup",
        ),
        ("{generateName: lone-}", "lone"),
        ("{name: single}", "single"),
    ];
    for (meta, want) in cases {
        let p = pod(&format!("metadata: {meta}"));
        assert_eq!(workload_of(&p.metadata), want, "{meta}");
    }
}
