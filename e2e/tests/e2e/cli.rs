//! The CLI and the runtime's lifecycle: bad input is rejected alone with
//! the document and field named, and `down` leaves nothing behind.

use std::process::Command;

use e2e::{Cluster, app, bin_dir, client, needs_root, server, text};

#[test]
#[ignore = "needs root"]
fn bad_documents_are_rejected_alone_and_running_pods_are_untouched() {
    needs_root();
    let c = Cluster::up("badinput", &[]);
    c.apply(&client("cli", true));
    c.apply(&app(
        "cli",
        "web",
        1,
        8080,
        &["python3", &server("http_echo.py"), "8080"],
        "",
    ));
    let web = c.wait_ready("cli", "web", 1);

    let mixed = r#"
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: cli}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: nocmd, namespace: cli}
spec:
  selector: {matchLabels: {app: nocmd}}
  template:
    metadata: {labels: {app: nocmd}}
    spec:
      containers: [{name: c, image: nginx}]
---
apiVersion: v1
kind: Service
metadata: {name: lonely, namespace: cli}
spec:
  selector: {app: nobody}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: elsewhere, namespace: missing}
spec:
  ports: [{port: 80}]
"#;
    let out = c.meshctl_input(&["apply", "-f", "-"], mixed);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("-:1 Pod/p: kind: unknown kind \"Pod\""),
        "{err}"
    );
    assert!(
        err.contains("-:2 Deployment/nocmd: spec.template.spec.containers[0].command: required"),
        "{err}"
    );
    assert!(
        err.contains(
            "warning: -:3 Service/lonely: spec.selector: app=nobody matches no Deployment"
        ),
        "{err}"
    );
    assert!(
        err.contains("-:4 Service/elsewhere: metadata.namespace: namespace \"missing\" not found"),
        "{err}"
    );
    // The valid document went in.
    assert!(text(&out.stdout).contains("Service/lonely created"));

    let out = c.meshctl_input(&["apply", "-f", "-"], "kind: [unclosed\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("-:1: malformed YAML"),
        "{}",
        text(&out.stderr)
    );

    let out = c.meshctl(&["apply", "-f", "/nonexistent/app.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/app.yaml"));

    // Nothing that ran was disturbed.
    let after = c.wait_ready("cli", "web", 1);
    assert_eq!(after[0].name, web[0].name);
    assert_eq!(after[0].restarts, 0);
    let out = c.exec_ok(
        "cli",
        "deploy/client",
        &["curl", "-sS", "--max-time", "10", "http://web:8080/"],
    );
    assert!(out.starts_with("pod=web-"), "{out}");
}

#[test]
#[ignore = "needs root"]
fn demo_serves_traffic_and_down_removes_every_trace() {
    needs_root();
    let state = format!("/tmp/mesh-e2e-demo-{}", std::process::id());
    let _ = std::fs::remove_dir_all(&state);
    let meshctl = bin_dir().join("meshctl");
    let out = Command::new(&meshctl)
        .args(["demo", "--state-dir", &state, "--requests", "10"])
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    let ok = out.status.success();
    let pods = Command::new(&meshctl)
        .args([
            "local",
            "--state-dir",
            &state,
            "get",
            "pods",
            "-A",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    let pods: Vec<serde_json::Value> = serde_json::from_slice(&pods.stdout).unwrap_or_default();
    // The hints are commands to paste as they are: run the first one.
    let hint = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.ends_with("get pods -n shop"))
        .unwrap_or_else(|| panic!("no get pods hint in:\n{stdout}"));
    let pasted = Command::new("sh").args(["-c", hint]).output().unwrap();
    assert!(
        pasted.status.success() && text(&pasted.stdout).contains("frontend-"),
        "{hint}: {}{}",
        text(&pasted.stdout),
        text(&pasted.stderr)
    );
    // Every proxy of the demo is in sync with the controller (bounded
    // wait: the last responses may still be on their way).
    let meshed = pods.iter().filter(|p| p["meshed"] == true).count();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (synced, table) = loop {
        let json = Command::new(&meshctl)
            .args(["proxy-status", "--state-dir", &state, "-o", "json"])
            .output()
            .unwrap();
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap_or_default();
        let synced = rows.len() == meshed && rows.iter().all(|r| r["status"] == "SYNCED");
        if synced || std::time::Instant::now() > deadline {
            let table = Command::new(&meshctl)
                .args(["proxy-status", "--state-dir", &state])
                .output()
                .unwrap();
            break (
                synced,
                format!("{}{}", text(&table.stdout), text(&json.stderr)),
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    // What the frontend's proxy holds, typed, and as a table.
    let config = |format: &[&str]| {
        let mut args = vec![
            "proxy-config",
            "deploy/frontend",
            "-n",
            "shop",
            "--state-dir",
            &state,
        ];
        args.extend_from_slice(format);
        Command::new(&meshctl).args(&args).output().unwrap()
    };
    let dump_out = config(&["-o", "json"]);
    let dump: api::config_dump::ConfigDump = serde_json::from_slice(&dump_out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&dump_out.stdout), text(&dump_out.stderr)));
    let config_table = text(&config(&[]).stdout);
    let down = Command::new(&meshctl)
        .args(["local", "--state-dir", &state, "down"])
        .output()
        .unwrap();
    assert!(ok, "demo failed:\n{stdout}\n{}", text(&out.stderr));
    assert!(dump.identity.ends_with("/ns/shop/sa/frontend"), "{dump:?}");
    assert!(
        dump.certificate.is_some() && !dump.version.is_empty(),
        "{dump:?}"
    );
    let orders = dump
        .targets
        .values()
        .find_map(|t| match t {
            api::config_dump::Target::Known(k) if k.name == "orders.shop.svc.cluster.local" => {
                Some(k)
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("orders is not known: {dump:?}"));
    assert!(
        !orders.routes.is_empty() && !orders.backends.is_empty(),
        "{orders:?}"
    );
    assert!(
        dump.endpoints["orders.shop.svc.cluster.local"]
            .iter()
            .all(|e| e.circuit == api::config_dump::Circuit::Closed
                && e.pod.starts_with("shop/orders")),
        "{dump:?}"
    );
    for section in [
        "ROUTES",
        "CLUSTERS",
        "ENDPOINTS",
        "orders.shop.svc.cluster.local",
    ] {
        assert!(config_table.contains(section), "{config_table}");
    }
    assert!(down.status.success(), "{}", text(&down.stderr));
    assert!(meshed >= 4, "{pods:?}");
    assert!(synced, "not every proxy is SYNCED:\n{table}");
    assert_eq!(
        table.lines().filter(|l| l.contains(" SYNCED ")).count(),
        meshed,
        "{table}"
    );
    assert!(
        stdout.contains("frontend -> orders-v1 -> payments"),
        "{stdout}"
    );
    assert!(
        stdout.contains("frontend -> orders-v2 -> payments"),
        "{stdout}"
    );
    assert!(
        stdout.contains("meshctl local"),
        "no next steps printed: {stdout}"
    );

    let netns = pods[0]["netns"].as_str().expect("netns").to_string();
    let prefix = format!("{}-", netns.rsplit_once('-').unwrap().0);
    let left = text(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    );
    assert!(!left.contains(&prefix), "namespaces left: {left}");
    let etc: Vec<String> = std::fs::read_dir("/etc/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !etc.iter().any(|n| n.starts_with(&prefix)),
        "/etc/netns entries left: {etc:?}"
    );
    let procs = text(
        &Command::new("pgrep")
            .args(["-af", &state])
            .output()
            .unwrap()
            .stdout,
    );
    assert!(procs.trim().is_empty(), "processes left: {procs}");
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
#[ignore = "needs root"]
fn istio_traffic_annotations_shape_the_redirect_rules() {
    needs_root();
    let c = Cluster::up("annotations", &[]);
    let annotated = client("ann", true).replace(
        "      labels: {app: client}\n",
        "      labels: {app: client}\n      annotations:\n        traffic.sidecar.istio.io/excludeInboundPorts: \"2222\"\n        traffic.sidecar.istio.io/excludeOutboundPorts: \"5353,9999\"\n        traffic.sidecar.istio.io/excludeOutboundIPRanges: \"192.0.2.0/24\"\n",
    );
    assert!(annotated.contains("excludeInboundPorts"), "{annotated}");
    c.apply(&annotated);
    c.wait_ready("ann", "client", 1);
    let rules = c.exec_ok("ann", "deploy/client", &["iptables-save", "-t", "nat"]);
    for want in [
        "-A MESH_INBOUND -p tcp -m tcp --dport 2222 -j RETURN",
        "-A MESH_OUTPUT -p tcp -m tcp --dport 5353 -j RETURN",
        "-A MESH_OUTPUT -p tcp -m tcp --dport 9999 -j RETURN",
        "-A MESH_OUTPUT -d 192.0.2.0/24 -j RETURN",
    ] {
        assert!(rules.contains(want), "missing {want:?} in:\n{rules}");
    }
    // A bad value is refused when applied, naming the annotation.
    let bad = annotated
        .replace("\"5353,9999\"", "\"dns\"")
        .replace("name: client", "name: client2")
        .replace("app: client", "app: client2");
    let out = c.meshctl_input(&["apply", "-f", "-"], &bad);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("spec.template.metadata.annotations[\"traffic.sidecar.istio.io/excludeOutboundPorts\"]: \"dns\" is not a port"),
        "{err}"
    );
}

#[test]
#[ignore = "needs root"]
fn a_crashed_runtime_is_swept_by_the_next_down() {
    needs_root();
    let c = Cluster::up("crash", &[]);
    c.apply(&client("crash", true));
    let pod = c.wait_ready("crash", "client", 1).remove(0);
    let prefix = format!("{}-", pod.netns.rsplit_once('-').unwrap().0);
    let id = prefix
        .trim_start_matches("mesh-")
        .trim_end_matches('-')
        .to_string();
    let registry =
        std::fs::read_to_string(format!("/run/meshctl/runs/{id}")).expect("run registered");
    let pid = registry.lines().next().unwrap().trim().to_string();
    // The daemon dies without cleaning up; its pods live on until the
    // next `up` or `down` of any run sweeps them (scenarios run in
    // parallel, so another run's may come first).
    assert!(
        Command::new("kill")
            .args(["-9", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "daemon {pid} still alive"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = c.meshctl(&["down"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let left = text(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    );
    assert!(
        !left.contains(&prefix),
        "namespaces left after the sweep: {left}"
    );
    let procs = text(
        &Command::new("pgrep")
            .args(["-af", &c.state.display().to_string()])
            .output()
            .unwrap()
            .stdout,
    );
    assert!(
        procs.trim().is_empty(),
        "processes left after the sweep: {procs}"
    );
    assert!(
        !std::path::Path::new(&format!("/run/meshctl/runs/{id}")).exists(),
        "run still registered"
    );
}

const GOOD_DR: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  subsets: [{name: v1, labels: {version: v1}}]\n";

#[test]
fn validate_reports_every_problem_with_file_document_and_field() {
    let dir = std::path::PathBuf::from(format!("/tmp/mesh-e2e-validate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("nested")).unwrap();
    let good = GOOD_DR;
    let bad = "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n      weight: 70\n    - destination: {host: reviews, subset: v2}\n      weight: 20\n    timeout: 5 seconds\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ratings}\nspec:\n  hots: ratings\n";
    std::fs::write(dir.join("good.yaml"), good).unwrap();
    std::fs::write(dir.join("nested/bad.yml"), bad).unwrap();
    let meshctl = bin_dir().join("meshctl");

    let out = Command::new(&meshctl)
        .arg("validate")
        .arg("-f")
        .arg(dir.join("good.yaml"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let out = Command::new(&meshctl)
        .arg("validate")
        .arg("-f")
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let bad_file = dir.join("nested/bad.yml").display().to_string();
    let lines = text(&out.stdout);
    for want in [
        format!(
            "{bad_file}:1 VirtualService/reviews: spec.http[0].route: weights sum to 90, expected 100"
        ),
        format!(
            "{bad_file}:1 VirtualService/reviews: spec.http[0].timeout: \"5 seconds\" is not a duration"
        ),
        format!(
            "{bad_file}:2 DestinationRule/ratings: spec.hots: unknown field \"hots\"; did you mean \"host\"?"
        ),
    ] {
        assert!(lines.contains(&want), "missing {want:?} in:\n{lines}");
    }
    assert!(!lines.contains("good.yaml"), "{lines}");

    let out = Command::new(&meshctl)
        .args(["validate", "-o", "json", "-f"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let errors: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("JSON errors");
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors.iter().all(|e| e["source"] == bad_file.as_str()));

    // Linkerd's kinds are shown as what they become.
    let split = dir.join("split.yaml");
    std::fs::write(&split, "apiVersion: split.smi-spec.io/v1alpha2\nkind: TrafficSplit\nmetadata: {name: canary}\nspec:\n  service: web\n  backends: [{service: web-v1, weight: 900m}, {service: web-v2, weight: 100m}]\n").unwrap();
    let out = Command::new(&meshctl)
        .args(["validate", "-o", "yaml", "-f"])
        .arg(&split)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let yaml = text(&out.stdout);
    assert!(
        yaml.contains("TrafficSplit/canary becomes:") && yaml.contains("kind: VirtualService"),
        "{yaml}"
    );
    assert!(
        yaml.contains("host: web-v1\n      weight: 90")
            && yaml.contains("host: web-v2\n      weight: 10"),
        "{yaml}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The runtime takes mesh resources as it takes the rest.
#[test]
#[ignore = "needs root"]
fn the_runtime_stores_mesh_resources() {
    needs_root();
    let good = GOOD_DR;
    let c = Cluster::up("meshkinds", &[]);
    let out = c.meshctl_input(&["apply", "-f", "-"], good);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("DestinationRule/reviews created"),
        "{}",
        text(&out.stdout)
    );
    let out = c.meshctl_input(&["apply", "-f", "-"], good);
    assert!(
        text(&out.stdout).contains("DestinationRule/reviews unchanged"),
        "{}",
        text(&out.stdout)
    );
    // Enforced, with a field that is stored and not acted on: accepted,
    // and said so.
    let telemetry = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: mesh-default, namespace: default}\nspec:\n  accessLogging: [{providers: [{name: envoy}]}]\n  metrics: [{reportingInterval: 5s}]\n";
    let out = c.meshctl_input(&["apply", "-f", "-"], telemetry);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Telemetry/mesh-default created"),
        "{}",
        text(&out.stdout)
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("spec.metrics[0].reportingInterval: stored but not used"),
        "{stderr}"
    );
    assert!(!stderr.contains("without effect"), "{stderr}");
}

#[test]
#[ignore = "needs root"]
fn analyze_checks_the_runtime_and_files_together() {
    needs_root();
    let c = Cluster::up("analyze", &[]);
    c.apply(&app(
        "an",
        "reviews",
        1,
        8080,
        &["python3", &server("http_echo.py"), "8080"],
        "",
    ));
    c.wait_ready("an", "reviews", 1);
    let broken = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: an}\nspec:\n  hosts: [reviews]\n  http: [{route: [{destination: {host: reviews, subset: v2}}]}]\n";
    c.apply(broken);
    let meshctl = bin_dir().join("meshctl");
    let state = format!("--state-dir={}", c.state.display());
    let out = Command::new(&meshctl)
        .args(["analyze", &state])
        .output()
        .unwrap();
    let lines = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{lines}{}", text(&out.stderr));
    assert!(
        lines.contains("error: cluster VirtualService/reviews: spec.http[0].route[0].destination.subset: subset \"v2\" of reviews.an.svc.cluster.local is defined by no DestinationRule"),
        "{lines}"
    );
    // A file that adds the subset, but with labels no pod has: the error
    // goes, a warning stays (exit 2).
    let dir = c.state.join("fix");
    std::fs::create_dir_all(&dir).unwrap();
    let fix = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: an}\nspec:\n  host: reviews\n  subsets: [{name: v2, labels: {version: v2}}]\n";
    std::fs::write(dir.join("dr.yaml"), fix).unwrap();
    let out = Command::new(&meshctl)
        .args(["analyze", &state, "-f"])
        .arg(&dir)
        .output()
        .unwrap();
    let lines = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{lines}{}", text(&out.stderr));
    let dr = dir.join("dr.yaml").display().to_string();
    assert!(lines.contains(&format!("warning: {dr}:1 DestinationRule/reviews: spec.subsets[0].labels: subset \"v2\" matches no pod")), "{lines}");
    assert!(!lines.contains("error:"), "{lines}");
}
