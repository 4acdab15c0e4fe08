//! The end-to-end harness: a local runtime per scenario, driven through the
//! real `meshctl` binary, with real clients and servers in its pods.
//!
//! Scenarios need root (network namespaces, iptables) and the workspace's
//! binaries (`cargo build --workspace --bins`). They are marked
//! `#[ignore = "needs root"]` and run with `--include-ignored` (CI does):
//! a skipped scenario is reported as ignored, never as passed.

// A test harness: a step that cannot be taken is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use meshctl::local::objects::PodStatus;

pub mod k8s;
pub mod metrics;

/// Runs `cmd` with `input` on its stdin; its output.
pub fn with_input(cmd: &mut Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    child.wait_with_output().expect("output")
}

/// Polls `f` every half second until it returns `Ok`, for at most
/// `limit`; panics with `what` and the last error otherwise.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if start.elapsed() > limit => {
                panic!("{what}: not after {}s; last: {last}", limit.as_secs())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// Asserts that this process is root. Scenarios that need it are
/// `#[ignore = "needs root"]`, so a plain `cargo test` lists them as
/// ignored rather than passed; `cargo test -- --include-ignored` (CI, as
/// root) runs them, and without root they fail here, loudly.
pub fn needs_root() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    assert!(
        root,
        "this end-to-end scenario needs root (network namespaces, iptables): run it as root"
    );
}

/// A process of a scenario's own (a server outside the mesh), killed
/// when the scenario ends, however it ends.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where the workspace's binaries are.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/e2e-HASH -> target/<profile>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    for b in ["meshctl", "mesh-proxy", "mesh-controller"] {
        assert!(
            dir.join(b).is_file(),
            "{} missing: run `cargo build --workspace --bins` first",
            dir.join(b).display()
        );
    }
    dir
}

/// A test server script of this crate.
pub fn server(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("servers")
        .join(name)
        .display()
        .to_string()
}

/// A local runtime for one scenario, torn down on drop.
pub struct Cluster {
    /// Its state directory.
    pub state: PathBuf,
    bin: PathBuf,
}

impl Cluster {
    /// Starts a runtime named after the scenario, with extra `up` flags.
    pub fn up(name: &str, up_args: &[&str]) -> Self {
        let state = PathBuf::from(format!("/tmp/mesh-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        let c = Self {
            state,
            bin: bin_dir(),
        };
        let mut args = vec!["up"];
        args.extend(up_args);
        let out = c.meshctl(&args);
        assert!(
            out.status.success(),
            "local up failed: {}",
            text(&out.stderr)
        );
        c
    }

    /// `meshctl local --state-dir S ARGS`.
    pub fn meshctl(&self, args: &[&str]) -> Output {
        self.meshctl_input(args, "")
    }

    /// `meshctl ARGS --state-dir=S`: a top-level command on this runtime.
    pub fn meshctl_top(&self, args: &[&str]) -> Output {
        with_input(
            Command::new(self.bin.join("meshctl"))
                .args(args)
                .arg(format!("--state-dir={}", self.state.display())),
            "",
        )
    }

    /// The `/metrics` of the proxy of `deploy`'s pod in `ns`.
    pub fn deploy_metrics(&self, ns: &str, deploy: &str) -> String {
        self.exec_ok(
            ns,
            &format!("deploy/{deploy}"),
            &["curl", "-sS", "http://127.0.0.1:15020/metrics"],
        )
    }

    /// [`Self::meshctl_top`] without waiting (a server: `dashboard`);
    /// stdout and stderr piped.
    pub fn spawn_top(&self, args: &[&str]) -> std::process::Child {
        Command::new(self.bin.join("meshctl"))
            .args(args)
            .arg(format!("--state-dir={}", self.state.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn meshctl")
    }

    /// The same, with `input` on stdin.
    pub fn meshctl_input(&self, args: &[&str], input: &str) -> Output {
        with_input(
            Command::new(self.bin.join("meshctl"))
                .arg("local")
                .arg(format!("--state-dir={}", self.state.display()))
                .args(args),
            input,
        )
    }

    /// Applies YAML; panics if rejected.
    pub fn apply(&self, yaml: &str) {
        let out = self.meshctl_input(&["apply", "-f", "-"], yaml);
        assert!(
            out.status.success(),
            "apply failed:\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }

    /// All pods.
    pub fn pods(&self) -> Vec<PodStatus> {
        let out = self.meshctl(&["get", "pods", "-A", "-o", "json"]);
        assert!(out.status.success(), "get pods: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("pods JSON")
    }

    /// Waits (bounded) until Deployment `ns/deploy` has exactly `n` ready pods.
    pub fn wait_ready(&self, ns: &str, deploy: &str, n: usize) -> Vec<PodStatus> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let pods: Vec<PodStatus> = self
                .pods()
                .into_iter()
                .filter(|p| p.namespace == ns && p.deployment == deploy)
                .collect();
            if pods.len() == n && pods.iter().all(|p| p.ready) {
                return pods;
            }
            if Instant::now() > deadline {
                let logs = self.meshctl(&["logs", &format!("deploy/{deploy}"), "-n", ns]);
                let proxy =
                    self.meshctl(&["logs", &format!("deploy/{deploy}"), "-n", ns, "-c", "proxy"]);
                panic!(
                    "{ns}/{deploy}: wanted {n} ready pods, have {pods:#?}\napp log:\n{}\nproxy log:\n{}",
                    text(&logs.stdout),
                    text(&proxy.stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `argv` in a pod (`deploy/NAME` or a pod name) of `ns`.
    pub fn exec(&self, ns: &str, pod: &str, argv: &[&str]) -> Output {
        let mut args = vec!["exec", pod, "-n", ns, "--"];
        args.extend(argv);
        self.meshctl(&args)
    }

    /// Starts [`Self::exec`] without waiting; stdout and stderr piped.
    pub fn spawn_exec(&self, ns: &str, pod: &str, argv: &[&str]) -> std::process::Child {
        Command::new(self.bin.join("meshctl"))
            .arg("local")
            .arg(format!("--state-dir={}", self.state.display()))
            .args(["exec", pod, "-n", ns, "--"])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn meshctl exec")
    }

    /// Like [`Self::exec`], panicking unless it succeeds; returns stdout.
    pub fn exec_ok(&self, ns: &str, pod: &str, argv: &[&str]) -> String {
        let out = self.exec(ns, pod, argv);
        assert!(
            out.status.success(),
            "{argv:?} in {ns}/{pod} failed: {}\n{}",
            out.status,
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// The metrics of the proxy at `ip`, read from pod `from` of `ns`.
    pub fn proxy_metrics(&self, ns: &str, from: &str, ip: &str) -> String {
        let url = format!("http://{ip}:15020/metrics");
        text(&self.exec(ns, from, &["curl", "-sS", &url]).stdout)
    }

    /// Sends `marker` over TCP from pod `from` of `ns` to `host:port`; what
    /// came back (or the error).
    pub fn tcp_send(&self, ns: &str, from: &str, host: &str, port: u16, marker: &str) -> String {
        let code = format!(
            "import socket\ns = socket.create_connection(('{host}', {port}), 5)\ns.sendall(b'{marker}')\ntry:\n    print(s.recv(100))\nexcept OSError as e:\n    print('error', e)\n"
        );
        text(&self.exec(ns, from, &["python3", "-c", &code]).stdout)
    }

    /// The chain a meshed pod's proxy presents on its mTLS port, fetched
    /// with `openssl s_client` from pod `from` (outside the mesh); written
    /// as PEM files, returned as (leaf, issuer).
    pub fn served_chain(&self, ns: &str, from: &str, ip: &str) -> (PathBuf, PathBuf) {
        let cmd = format!(
            "openssl s_client -connect {ip}:15008 -alpn mesh-tcp/1 -showcerts </dev/null 2>/dev/null"
        );
        let shown = text(&self.exec(ns, from, &["sh", "-c", &cmd]).stdout);
        let pems: Vec<String> = shown
            .split("-----BEGIN CERTIFICATE-----")
            .skip(1)
            .filter_map(|b| {
                b.split_once("-----END CERTIFICATE-----").map(|(body, _)| {
                    format!("-----BEGIN CERTIFICATE-----{body}-----END CERTIFICATE-----\n")
                })
            })
            .collect();
        assert_eq!(
            pems.len(),
            2,
            "expected leaf and issuer from s_client:\n{shown}"
        );
        let (leaf, issuer) = (
            self.state.join(format!("leaf-{ip}.pem")),
            self.state.join(format!("issuer-{ip}.pem")),
        );
        std::fs::write(&leaf, &pems[0]).expect("write leaf");
        std::fs::write(&issuer, &pems[1]).expect("write issuer");
        (leaf, issuer)
    }

    /// The run's node namespace.
    pub fn node_ns(&self) -> String {
        let pods = self.pods();
        let netns = &pods.first().expect("a pod").netns;
        let prefix = netns.rsplit_once('-').expect("netns name").0;
        format!("{prefix}-node")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let out = self.meshctl(&["down"]);
        if !out.status.success() {
            eprintln!("local down failed: {}", text(&out.stderr));
        }
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// Bytes as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A namespace, a ServiceAccount `name` and a Service `name` selecting
/// `app: name` on `port` (named `port_name`).
fn service_head(ns: &str, name: &str, port_name: &str, port: u16) -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {name}, namespace: {ns}}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: {port_name}, port: {port}, targetPort: {port}}}]
"#
    )
}

/// A namespace with a Deployment and a Service for it; `pod_spec` is put
/// into the pod spec as is (e.g. a `securityContext` line, indented 6).
pub fn app(
    ns: &str,
    name: &str,
    replicas: u32,
    port: u16,
    argv: &[&str],
    pod_spec: &str,
) -> String {
    let cmd = serde_json::to_string(argv).expect("argv JSON");
    let head = service_head(ns, name, "main", port);
    format!(
        r#"{head}---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      serviceAccountName: {name}
{pod_spec}
      containers:
      - name: main
        command: {cmd}
        ports: [{{containerPort: {port}}}]
"#
    )
}

/// A Service and Deployment `name` in `ns` (with its ServiceAccount)
/// serving HTTP on 8080 (`http_echo.py`) and raw TCP on 9091
/// (`tcp_log.py`, which logs every byte that reaches it).
pub fn http_and_tcp_app(ns: &str, name: &str) -> String {
    let script = format!(
        "python3 {} 8080 & exec python3 {} 9091",
        server("http_echo.py"),
        server("tcp_log.py")
    );
    let cmd = serde_json::to_string(&["sh", "-c", &script]).expect("argv JSON");
    format!(
        r#"
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {name}, namespace: {ns}}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  selector: {{app: {name}}}
  ports:
  - {{name: http, port: 8080, targetPort: 8080}}
  - {{name: tcp-raw, port: 9091, targetPort: 9091}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      serviceAccountName: {name}
      containers:
      - name: main
        command: {cmd}
        ports: [{{containerPort: 8080}}, {{containerPort: 9091}}]
"#
    )
}

/// A client Deployment that sleeps, to exec clients in.
pub fn client(ns: &str, meshed: bool) -> String {
    let name = if meshed { "client" } else { "outsider" };
    let annotations = if meshed {
        ""
    } else {
        "      annotations: {sidecar.istio.io/inject: \"false\"}\n"
    };
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}
{annotations}    spec:
      containers:
      - name: main
        command: [sleep, infinity]
"#
    )
}

/// A Service `name` on `port` over Deployments `name-<version>` running
/// the traffic test server, each pod labelled `app: name, version: V`;
/// `versions` gives (version, replicas, env lines such as `STATUS: "500"`).
pub fn versioned(ns: &str, name: &str, port: u16, versions: &[(&str, u32, &str)]) -> String {
    versioned_on(ns, name, "http", port, versions)
}

/// [`versioned`] with the Service port named `port_name` (its protocol).
pub fn versioned_on(
    ns: &str,
    name: &str,
    port_name: &str,
    port: u16,
    versions: &[(&str, u32, &str)],
) -> String {
    let server = server("testserver.py");
    let mut out = service_head(ns, name, port_name, port);
    for (v, replicas, env) in versions {
        let env: String = env
            .split(',')
            .filter(|e| !e.trim().is_empty())
            .map(|e| {
                let (k, val) = e.split_once('=').expect("env as K=V");
                format!("\n        - {{name: {k}, value: \"{val}\"}}")
            })
            .collect();
        let env = if env.is_empty() {
            String::new()
        } else {
            format!("\n        env:{env}")
        };
        out.push_str(&format!(
            r#"---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}-{v}, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}, version: {v}}}}}
  template:
    metadata:
      labels: {{app: {name}, version: {v}}}
    spec:
      serviceAccountName: {name}
      containers:
      - name: main
        command: [python3, "{server}", "{port}"]
        ports: [{{containerPort: {port}}}]{env}
"#
        ));
    }
    out
}

/// The named steps of one scenario. A step that fails is reported and the
/// next ones still run, so that one failure does not hide the rest; the
/// scenario fails at the end, listing every failed step.
#[derive(Default)]
pub struct Steps {
    failed: Vec<String>,
}

impl Steps {
    /// No step run yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs the step `name`; a panic in it is recorded, not propagated.
    pub fn step(&mut self, name: &str, f: impl FnOnce()) {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(()) => eprintln!("step ok: {name}"),
            Err(e) => {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                eprintln!("step FAILED: {name}");
                self.failed.push(format!("{name}: {why}"));
            }
        }
    }

    /// Fails the scenario if a step failed.
    pub fn finish(self) {
        assert!(
            self.failed.is_empty(),
            "{} step(s) failed:\n{}",
            self.failed.len(),
            self.failed.join("\n---\n")
        );
    }
}

#[cfg(test)]
mod steps_tests {
    use super::Steps;

    #[test]
    fn a_failed_step_does_not_hide_the_next_and_fails_the_scenario() {
        let mut ran = Vec::new();
        let mut steps = Steps::new();
        steps.step("first", || ran.push(1));
        steps.step("broken", || panic!("expected 2, got 3"));
        steps.step("after", || ran.push(3));
        assert_eq!(ran, [1, 3]);
        let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| steps.finish()))
            .expect_err("the scenario fails");
        let text = report.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            text.contains("1 step(s) failed") && text.contains("broken: expected 2, got 3"),
            "{text}"
        );
    }
}
