//! How the mesh ships: the Helm chart against `meshctl install
//! --dry-run` (the same objects for the same values, but the Namespace,
//! which Helm leaves to `--create-namespace`), `helm lint` clean, every
//! manifest valid against the schemas of Kubernetes 1.25 to 1.37, and the
//! users' CI workflow clean under actionlint.
//!
//! The tools come from `scripts/install-deps.sh` (into `$MESH_TOOLS`,
//! default `/opt/mesh-tools`); CI runs these tests with the ignored ones.

// A step that cannot be taken is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn tool(name: &str) -> PathBuf {
    let dir = std::env::var("MESH_TOOLS").unwrap_or_else(|_| "/opt/mesh-tools".into());
    let p = Path::new(&dir).join("bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/install-deps.sh",
        p.display()
    );
    p
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("mesh-chart-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A values file with a fresh identity; `extra` sets more (an
/// `externalSecret` replaces the issuer).
fn values(dir: &Path, extra: Value) -> PathBuf {
    let root = common::pki::generate_root("cluster.local").unwrap();
    let issuer = common::pki::generate_issuer(&root, "cluster.local").unwrap();
    let mut v = serde_json::json!({
        "identity": {
            "trustAnchorsPEM": root.cert,
            "issuer": {"certPEM": issuer.cert, "keyPEM": issuer.key},
        },
    });
    if let Some(secret) = extra.pointer("/identity/externalSecret") {
        v["identity"] = serde_json::json!({"trustAnchorsPEM": root.cert, "externalSecret": secret});
    }
    for (k, x) in extra.as_object().unwrap() {
        if k != "identity" {
            v[k] = x.clone();
        }
    }
    let p = dir.join("values.yaml");
    std::fs::write(&p, serde_yaml_ng::to_string(&v).unwrap()).unwrap();
    p
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn objects(yaml: &str) -> BTreeMap<(String, String), Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .map(|mut v| {
            // The mesh configuration is YAML in a string: compared as
            // what it says, not how it is quoted.
            if v["kind"] == "ConfigMap"
                && let Some(mesh) = v["data"]["mesh"].as_str()
            {
                v["data"]["mesh"] = serde_yaml_ng::from_str(mesh).unwrap();
            }
            let key = (
                v["kind"].as_str().unwrap().to_string(),
                v["metadata"]["name"].as_str().unwrap().to_string(),
            );
            (key, v)
        })
        .collect()
}

fn install_dry_run(values: &Path, sets: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshctl"));
    cmd.args(["install", "--dry-run", "-f"]).arg(values);
    for s in sets {
        cmd.args(["--set", s]);
    }
    // No cluster: what a new installation applies.
    run(cmd
        .env("KUBECONFIG", "/nonexistent")
        .env_remove("KUBERNETES_SERVICE_HOST"))
}

fn helm_template(values: &Path, sets: &[&str]) -> String {
    let mut cmd = Command::new(tool("helm"));
    cmd.args(["template", "mesh"])
        .arg(root().join("charts/mesh"))
        .args(["-n", "mesh-system", "--include-crds", "-f"])
        .arg(values);
    for s in sets {
        cmd.args(["--set", s]);
    }
    run(&mut cmd)
}

fn same_objects(extra: Value, sets: &[&str]) {
    let dir = Scratch::new("same");
    let v = values(&dir.0, extra);
    let mut ours = objects(&install_dry_run(&v, sets));
    let theirs = objects(&helm_template(&v, sets));
    let ns = ours.remove(&("Namespace".into(), "mesh-system".into()));
    assert!(ns.is_some(), "install creates its namespace");
    let ours_keys: Vec<_> = ours.keys().collect();
    let their_keys: Vec<_> = theirs.keys().collect();
    assert_eq!(ours_keys, their_keys);
    for (k, o) in &ours {
        assert_eq!(o, &theirs[k], "{k:?} differs between install and the chart");
    }
}

#[test]
#[ignore = "needs helm: scripts/install-deps.sh"]
fn the_chart_renders_what_install_applies() {
    same_objects(serde_json::json!({"nativeSidecars": false}), &[]);
}

#[test]
#[ignore = "needs helm: scripts/install-deps.sh"]
fn the_chart_and_install_take_the_same_values() {
    same_objects(
        serde_json::json!({
            "nativeSidecars": true,
            "identity": {"externalSecret": "mesh-issuer-by-cert-manager"},
            "meshConfig": {"extensionProviders": [{"name": "ext", "envoyExtAuthzHttp": {
                "service": "ext-authz.foo.svc.cluster.local", "port": "8000",
                "includeRequestHeadersInCheck": ["x-ext-authz"]}}]},
            "prometheus": {"scrapeConfig": false, "podMonitor": true},
        }),
        &[
            "controller.image=registry.example/mesh-controller:1.2.3",
            "proxy.image=registry.example/mesh-proxy:1.2.3",
            "controller.replicas=3",
            "webhook.failurePolicy=Ignore",
        ],
    );
}

#[test]
fn the_charts_defaults_are_installs_defaults() {
    let text = std::fs::read_to_string(root().join("charts/mesh/values.yaml")).unwrap();
    let chart: Value = serde_yaml_ng::from_str(&text).unwrap();
    let ours = serde_json::to_value(meshctl::install::values::Values::default()).unwrap();
    assert_eq!(chart, ours);
}

/// The chart's scrape job, as Prometheus' own checker reads it.
#[test]
#[ignore = "needs promtool (Debian's prometheus): scripts/install-deps.sh"]
fn the_scrape_job_is_a_valid_prometheus_configuration() {
    let dir = Scratch::new("promtool");
    let v = values(&dir.0, serde_json::json!({}));
    let objects = objects(&helm_template(&v, &[]));
    let cm = &objects[&("ConfigMap".to_string(), "mesh-prometheus".to_string())];
    let jobs = cm["data"]["scrape-configs.yaml"].as_str().unwrap();
    assert_eq!(jobs, meshctl::install::render::SCRAPE_CONFIGS.trim_end());
    // Debian's Prometheus is built without Kubernetes discovery: the
    // job's pods are given as a static target, and the rest (relabel
    // rules, their regular expressions and actions) is checked as is.
    let sd = "  kubernetes_sd_configs:\n  - role: pod\n";
    assert!(jobs.contains(sd), "{jobs}");
    let jobs = jobs.replace(sd, "  static_configs: [{targets: [\"127.0.0.1:15020\"]}]\n");
    let indented: String = jobs.lines().map(|l| format!("  {l}\n")).collect();
    let config = dir.0.join("prometheus.yml");
    std::fs::write(&config, format!("scrape_configs:\n{indented}")).unwrap();
    run(Command::new("promtool")
        .args(["check", "config"])
        .arg(&config));
    // It can fail: a broken relabel rule is refused.
    std::fs::write(
        &config,
        format!(
            "scrape_configs:\n{}",
            indented.replace("action: keep", "action: kept")
        ),
    )
    .unwrap();
    let refused = Command::new("promtool")
        .args(["check", "config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!refused.status.success());
}

#[test]
#[ignore = "needs helm: scripts/install-deps.sh"]
fn helm_lint_is_clean() {
    let dir = Scratch::new("lint");
    let v = values(&dir.0, serde_json::json!({}));
    let out = run(Command::new(tool("helm"))
        .args(["lint", "--strict"])
        .arg(root().join("charts/mesh"))
        .arg("-f")
        .arg(&v));
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
#[ignore = "needs kubernetes-validate: scripts/install-deps.sh"]
fn every_manifest_validates_against_kubernetes_1_25_to_1_37() {
    let dir = Scratch::new("validate");
    let v = values(&dir.0, serde_json::json!({}));
    for (name, text) in [
        ("install.yaml", install_dry_run(&v, &[])),
        ("chart.yaml", helm_template(&v, &[])),
    ] {
        let f = dir.0.join(name);
        std::fs::write(&f, text).unwrap();
        for minor in 25..=37 {
            run(Command::new(tool("kubernetes-validate"))
                .args(["--strict", "--quiet", "-k", &format!("1.{minor}.0")])
                .arg(&f));
        }
    }
}

#[test]
#[ignore = "needs kubernetes-validate: scripts/install-deps.sh"]
fn the_validator_refuses_what_a_cluster_refuses() {
    // The check above can fail: an unknown field is an error under --strict.
    let dir = Scratch::new("refuse");
    let f = dir.0.join("bad.yaml");
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 80}], bogus: 1}\n",
    )
    .unwrap();
    let out = Command::new(tool("kubernetes-validate"))
        .args(["--strict", "--quiet", "-k", "1.30.0"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
#[ignore = "needs actionlint: scripts/install-deps.sh"]
fn the_github_workflows_lint_clean() {
    let dir = root().join(".github/workflows");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    assert!(!files.is_empty(), "no workflow in {}", dir.display());
    run(Command::new(tool("actionlint")).args(&files));
    // And the linter finds what it should.
    let scratch = Scratch::new("actionlint");
    let bad = scratch.0.join("bad.yml");
    std::fs::write(&bad, "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n    - run: echo ${{ nothing.here }}\n").unwrap();
    let out = Command::new(tool("actionlint")).arg(&bad).output().unwrap();
    assert!(
        !out.status.success(),
        "actionlint accepted a broken workflow"
    );
}
