//! The Kubernetes harness: the project's single-node Kubernetes
//! (`e2e/k8s-node`, built and packed by `cargo xtask node prepare`),
//! started for a scenario and always stopped after it, with kubectl and
//! meshctl pointed at it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Where `cargo xtask node images` packs the node's images.
fn image_dir() -> PathBuf {
    std::env::var_os("IMG")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("mesh-k8s-node-images"))
}

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s-node")
}

/// The node's run directory (its kubeconfig, PKI and logs).
pub fn run_dir() -> PathBuf {
    std::env::var_os("RUN")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("mesh-k8s-node"))
}

/// A running node; stopped on drop (and checked clean by [`Node::stop`]).
/// With `MESH_E2E_KUBECONFIG` set, a cluster of someone else's instead
/// (kind in users' CI), neither started nor stopped here.
pub struct Node {
    kubeconfig: PathBuf,
    stopped: bool,
    external: bool,
}

fn script(name: &str) -> Output {
    Command::new(scripts().join(name))
        .env("IMG", image_dir())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

impl Node {
    /// Starts the node (after stopping what a crashed run left), or takes
    /// the cluster of `MESH_E2E_KUBECONFIG`.
    pub fn start() -> Self {
        if let Some(kc) = std::env::var_os("MESH_E2E_KUBECONFIG") {
            return Self {
                kubeconfig: kc.into(),
                stopped: true,
                external: true,
            };
        }
        crate::needs_root();
        for image in ["pause", "tools", "mesh-proxy", "mesh-controller"] {
            let p = image_dir().join(format!("{image}.tar"));
            assert!(
                p.is_file(),
                "{} is missing: run cargo xtask node prepare",
                p.display()
            );
        }
        let _ = script("stop.sh");
        let out = script("start.sh");
        let node = Self {
            kubeconfig: run_dir().join("kubeconfig"),
            stopped: false,
            external: false,
        };
        assert!(
            out.status.success(),
            "the node did not start:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        node
    }

    /// Whether this is someone else's cluster: the steps that need the
    /// node's own namespaces and keys (captures, minted tokens) are left
    /// out, and say so.
    pub fn external(&self) -> bool {
        self.external
    }

    /// Stops the node; fails when something was left behind.
    pub fn stop(mut self) {
        if self.external {
            return;
        }
        self.stopped = true;
        let out = script("stop.sh");
        assert!(
            out.status.success(),
            "the node did not stop clean:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    /// The kubeconfig to use.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A command with this node's kubeconfig.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env("KUBECONFIG", &self.kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null());
        c
    }

    /// `kubectl ARGS`.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.command(tool("kubectl")).args(args).output().unwrap()
    }

    /// `kubectl ARGS`, which must succeed; its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        ok(self.kubectl(args), &format!("kubectl {}", args.join(" ")))
    }

    /// `kubectl apply -f -` with `yaml`.
    pub fn apply(&self, yaml: &str) -> Output {
        crate::with_input(
            self.command(tool("kubectl")).args(["apply", "-f", "-"]),
            yaml,
        )
    }

    /// Waits (kubectl's own bounded wait) until `deploy` in `ns` has
    /// rolled out.
    pub fn rollout(&self, ns: &str, deploy: &str, timeout_secs: u32) {
        self.kubectl_ok(&[
            "rollout",
            "status",
            "-n",
            ns,
            &format!("deploy/{deploy}"),
            &format!("--timeout={timeout_secs}s"),
        ]);
    }

    /// `meshctl ARGS`.
    pub fn meshctl(&self, args: &[&str]) -> Output {
        self.command(meshctl()).args(args).output().unwrap()
    }

    /// Polls `f` every half second until it returns `Ok`, for at most
    /// `limit`; panics with `what` and the last error otherwise.
    pub fn wait_for<T>(
        &self,
        what: &str,
        limit: Duration,
        f: impl FnMut() -> Result<T, String>,
    ) -> T {
        crate::wait_for(what, limit, f)
    }

    /// Runs `argv` in the `app` container of `target` (`deploy/NAME` or a
    /// pod) in `ns`; its output.
    pub fn exec(&self, ns: &str, target: &str, argv: &[&str]) -> Output {
        let mut args = vec!["exec", "-n", ns, target, "-c", "app", "--"];
        args.extend_from_slice(argv);
        self.kubectl(&args)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = script("stop.sh");
        }
    }
}

/// A tool that `scripts/install-deps.sh` installs.
pub fn tool(name: &str) -> PathBuf {
    let dir = std::env::var("MESH_TOOLS").unwrap_or_else(|_| "/opt/mesh-tools".into());
    let p = Path::new(&dir).join("bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/install-deps.sh",
        p.display()
    );
    p
}

/// The stdout of a successful `out`; panics with its stderr otherwise.
pub fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `argv` inside the node's network namespace (host files).
pub fn in_node_net(argv: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{}", node_netns()))
        .arg("--")
        .args(argv);
    c
}

/// The node's network namespace name.
pub fn node_netns() -> String {
    std::env::var("NODE_NETNS").unwrap_or_else(|_| "meshk8s".into())
}

/// The meshctl binary beside the test executable.
fn meshctl() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().and_then(Path::parent).unwrap().join("meshctl");
    assert!(
        p.is_file(),
        "{} missing: cargo build -p meshctl",
        p.display()
    );
    p
}
