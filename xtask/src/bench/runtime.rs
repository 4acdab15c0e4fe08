//! The local runtime a benchmark phase runs on: brought up with the
//! phase's environment (access log on or off, a profiler for the
//! sidecars), the bench pods applied and waited for, torn down on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::run_ok;

/// One runtime, down on drop.
pub struct Runtime {
    meshctl: PathBuf,
    state: String,
    env: Vec<(String, String)>,
}

/// The bench pods of a runtime.
pub struct Pods {
    /// The meshed client's network namespace.
    pub client_ns: String,
    /// The unmeshed client's.
    pub direct_ns: String,
    /// The unmeshed server's.
    pub server_direct_ns: String,
    /// The unmeshed server's address.
    pub server_direct_ip: String,
    /// The Service, through the mesh.
    pub mesh_target: String,
    /// The unmeshed server, directly.
    pub direct_target: String,
    /// The client's and the server's proxy processes.
    pub proxies: (u32, u32),
}

impl Runtime {
    /// Brings a runtime up with `env` (on top of the access log off).
    pub fn up(meshctl: &Path, tag: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut all = vec![("MESH_ACCESS_LOG".to_string(), "off".to_string())];
        for (k, v) in env {
            all.retain(|(a, _)| a != k);
            all.push((k.to_string(), v.to_string()));
        }
        let rt = Self {
            meshctl: meshctl.to_path_buf(),
            state: format!("/tmp/mesh-bench-{}-{tag}", std::process::id()),
            env: all,
        };
        let _ = std::fs::remove_dir_all(&rt.state);
        run_ok(&mut rt.cmd(&["up"]))?;
        Ok(rt)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.meshctl);
        c.arg("local")
            .arg(format!("--state-dir={}", self.state))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c
    }

    /// `get WHAT` of the bench's namespace (`get` reads `default`
    /// unless told), as JSON.
    fn json(&self, what: &str) -> anyhow::Result<Vec<Value>> {
        Ok(serde_json::from_str(&run_ok(
            &mut self.cmd(&["get", what, "-n", "bench", "-o", "json"]),
        )?)?)
    }

    /// Applies the bench manifest and waits (up to `wait`) for its pods.
    pub fn pods(&self, xtask: &Path, size: usize, wait: Duration) -> anyhow::Result<Pods> {
        let mut apply = self.cmd(&["apply", "-f", "-"]);
        apply
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null());
        let mut child = apply.spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            std::io::Write::write_all(&mut stdin, manifest(xtask, size).as_bytes())?;
        }
        anyhow::ensure!(child.wait()?.success(), "bench manifest rejected");
        let deadline = Instant::now() + wait;
        let pods = loop {
            let pods = self.json("pods")?;
            if pods.len() == 4 && pods.iter().all(|p| p["ready"] == true) {
                break pods;
            }
            anyhow::ensure!(Instant::now() < deadline, "bench pods not ready: {pods:?}");
            std::thread::sleep(Duration::from_millis(200));
        };
        let pod = |d: &str| {
            pods.iter()
                .find(|p| p["deployment"] == d)
                .cloned()
                .unwrap_or_default()
        };
        let s = |v: &Value| v.as_str().unwrap_or("").to_string();
        let svc_ip = self
            .json("services")?
            .first()
            .map(|s| s["cluster_ip"].as_str().unwrap_or("").to_string())
            .unwrap_or_default();
        let server_direct_ip = s(&pod("server-direct")["ip"]);
        Ok(Pods {
            client_ns: s(&pod("client")["netns"]),
            direct_ns: s(&pod("client-direct")["netns"]),
            server_direct_ns: s(&pod("server-direct")["netns"]),
            direct_target: format!("{server_direct_ip}:8080"),
            server_direct_ip,
            mesh_target: format!("{svc_ip}:8080"),
            proxies: (
                proxy_pid(&s(&pod("client")["name"]))?,
                proxy_pid(&s(&pod("server")["name"]))?,
            ),
        })
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self.cmd(&["down"]).output();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

fn manifest(xtask: &Path, size: usize) -> String {
    let xtask = xtask.display();
    let deploy = |name: &str, meshed: bool, cmd: &str| {
        let ann = if meshed {
            ""
        } else {
            "\n      annotations: {sidecar.istio.io/inject: \"false\"}"
        };
        format!(
            "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: bench}}\nspec:\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}{ann}\n    spec:\n      containers:\n      - name: main\n        command: {cmd}\n"
        )
    };
    let server = format!("[\"{xtask}\", \"serve\", \"--port\", \"8080\", \"--size\", \"{size}\"]");
    let server_ports = "        ports: [{containerPort: 8080}]\n";
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: bench}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: server, namespace: bench}}\nspec:\n  selector: {{app: server}}\n  ports: [{{name: http, port: 8080, targetPort: 8080}}]\n{}{}{}{}",
        deploy("server", true, &server) + server_ports,
        deploy("server-direct", false, &server) + server_ports,
        deploy("client", true, "[sleep, infinity]"),
        deploy("client-direct", false, "[sleep, infinity]"),
    )
}

/// The process of the proxy of `pod` (also when run under a profiler).
pub fn proxy_pid(pod: &str) -> anyhow::Result<u32> {
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        // The pod's name is in the proxy's environment (the injector's
        // downward API), not on its command line.
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        let env = String::from_utf8_lossy(&env);
        if cmd.contains("mesh-proxy")
            && cmd.contains("run")
            && env.split('\0').any(|v| v == format!("POD_NAME={pod}"))
        {
            return Ok(pid);
        }
    }
    anyhow::bail!("no proxy process for pod {pod}")
}
