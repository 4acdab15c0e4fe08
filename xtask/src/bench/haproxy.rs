//! The HAProxy pair of the benchmark, as `shared/BENCHMARKING.md` sets it
//! up: Debian's haproxy 2.6, one in the unmeshed client pod and one in the
//! unmeshed server pod, mTLS both ways (client certificates, `verify
//! required`, TLS 1.3 with AES-128-GCM, P-256 keys from a throwaway CA),
//! one thread each. The load goes to side A on 127.0.0.1:18001 inside the
//! client pod; side B listens on 18443 and passes to the app on 8080.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::run_ok;

/// Where the load goes, inside the client pod.
pub const FRONTEND: &str = "127.0.0.1:18001";

/// The two HAProxy processes; killed on drop.
pub struct Pair {
    a: Child,
    b: Child,
}

impl Pair {
    /// The processes (client side, server side).
    pub fn pids(&self) -> (u32, u32) {
        (self.a.id(), self.b.id())
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for c in [&mut self.a, &mut self.b] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    run_ok(Command::new("openssl").current_dir(dir).args(args)).map(|_| ())
}

/// A CA and one certificate per side, each PEM with its key.
fn certificates(dir: &Path) -> anyhow::Result<()> {
    let p256 = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=bench-ca"];
    ca.extend(p256);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca)?;
    for side in ["a", "b"] {
        let (key, csr, crt) = (
            format!("{side}.key"),
            format!("{side}.csr"),
            format!("{side}.crt"),
        );
        let subj = format!("/CN={side}.mesh");
        let mut req = vec!["req", "-subj", &subj];
        req.extend(p256);
        req.extend(["-keyout", &key, "-out", &csr]);
        openssl(dir, &req)?;
        let ext = dir.join(format!("{side}.ext"));
        std::fs::write(&ext, format!("subjectAltName=DNS:{side}.mesh\n"))?;
        let ext = ext.display().to_string();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &crt,
            ],
        )?;
        let pem = [
            std::fs::read(dir.join(&crt))?,
            std::fs::read(dir.join(&key))?,
        ]
        .concat();
        std::fs::write(dir.join(format!("{side}.pem")), pem)?;
    }
    Ok(())
}

const TLS: &str = "ssl-min-ver TLSv1.3 ciphersuites TLS_AES_128_GCM_SHA256";

fn config(dir: &Path, side: &str, server_ip: &str) -> String {
    let d = dir.display();
    let global = "global\n  nbthread 1\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n  http-reuse always\n";
    match side {
        "a" => format!(
            "{global}frontend in\n  bind {FRONTEND}\n  default_backend b\nbackend b\n  server b {server_ip}:18443 ssl crt {d}/a.pem ca-file {d}/ca.pem verify required sni str(b.mesh) verifyhost b.mesh alpn http/1.1 {TLS}\n"
        ),
        _ => format!(
            "{global}frontend in\n  bind 0.0.0.0:18443 ssl crt {d}/b.pem ca-file {d}/ca.pem verify required alpn http/1.1 {TLS}\n  default_backend app\nbackend app\n  server app 127.0.0.1:8080\n"
        ),
    }
}

fn start(ns: &str, cfg: &Path, log: &Path) -> anyhow::Result<Child> {
    Ok(Command::new("ip")
        .args(["netns", "exec", ns, "haproxy", "-db", "-f"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()?)
}

/// Sets up and starts the pair between the unmeshed pods; waits until a
/// request goes through.
pub fn start_pair(
    work: &Path,
    client_ns: &str,
    server_ns: &str,
    server_ip: &str,
    probe: impl Fn() -> bool,
) -> anyhow::Result<Pair> {
    anyhow::ensure!(
        Command::new("haproxy").arg("-v").output().is_ok(),
        "haproxy is not installed: apt-get install haproxy (Debian's 2.6), or --no-haproxy"
    );
    let dir: PathBuf = work.join("haproxy");
    std::fs::create_dir_all(&dir)?;
    certificates(&dir)?;
    for side in ["a", "b"] {
        std::fs::write(
            dir.join(format!("{side}.cfg")),
            config(&dir, side, server_ip),
        )?;
    }
    let b = start(server_ns, &dir.join("b.cfg"), &dir.join("b.log"))?;
    let a = start(client_ns, &dir.join("a.cfg"), &dir.join("a.log"))?;
    let pair = Pair { a, b };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !probe() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the HAProxy pair does not pass requests; see {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(pair)
}
