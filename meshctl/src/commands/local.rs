//! `meshctl local up|down|controller` and the hidden `daemon`.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

use crate::cli::UpArgs;
use crate::local::client::Client;
use crate::local::daemon::{self, DaemonConfig};
use crate::local::objects::RunInfo;
use crate::local::{StateDir, find_binary, sweep};

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

/// What the runtime needs from this host, with what to install.
fn check_prerequisites() -> anyhow::Result<()> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "the local runtime needs root (it creates network namespaces and iptables rules in them); run as root"
    );
    let mut missing = Vec::new();
    for (cmd, pkg) in [
        ("ip", "iproute2"),
        ("iptables-restore", "iptables"),
        ("setpriv", "util-linux"),
    ] {
        if !on_path(cmd) {
            missing.push(format!("{cmd} (apt-get install {pkg})"));
        }
    }
    for bin in ["mesh-proxy", "mesh-controller"] {
        if let Err(e) = find_binary(bin) {
            missing.push(e.to_string());
        }
    }
    anyhow::ensure!(missing.is_empty(), "missing: {}", missing.join("; "));
    Ok(())
}

/// Starts the daemon in the background and waits until it serves.
pub async fn up(state: &StateDir, args: &UpArgs) -> anyhow::Result<i32> {
    check_prerequisites()?;
    api::duration::parse(&args.cert_lifetime)
        .map_err(|e| anyhow::anyhow!("--cert-lifetime: {e}"))?;
    api::duration::parse(&args.jwks_refresh_interval)
        .map_err(|e| anyhow::anyhow!("--jwks-refresh-interval: {e}"))?;
    let client = Client::new(state.clone());
    if client.alive().await {
        eprintln!("local runtime already running ({})", state.0.display());
        return Ok(0);
    }
    std::fs::create_dir_all(&state.0)?;
    std::fs::set_permissions(&state.0, std::fs::Permissions::from_mode(0o755))?;
    if let (Some(cert), Some(key)) = (&args.root_cert, &args.root_key) {
        install_root(state, cert, key)?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state.daemon_log())?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("local")
        .arg(format!("--state-dir={}", state.0.display()))
        .arg("daemon")
        .arg(format!("--cert-lifetime={}", args.cert_lifetime))
        .arg(format!(
            "--jwks-refresh-interval={}",
            args.jwks_refresh_interval
        ))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let tail = std::fs::read_to_string(state.daemon_log()).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(10).collect();
            anyhow::bail!(
                "the runtime's daemon exited ({status}); last lines of {}:\n{}",
                state.daemon_log().display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        if client.alive().await {
            let info: RunInfo = client.get("/info").await?;
            if info.controller_running {
                eprintln!(
                    "local runtime {} up (state in {})",
                    info.id,
                    state.0.display()
                );
                return Ok(0);
            }
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the runtime did not come up within 30s; see {}",
            state.daemon_log().display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn install_root(
    state: &StateDir,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<()> {
    let pem = std::fs::read_to_string(cert)
        .map_err(|e| anyhow::anyhow!("--root-cert {}: {e}", cert.display()))?;
    let key_pem = std::fs::read_to_string(key)
        .map_err(|e| anyhow::anyhow!("--root-key {}: {e}", key.display()))?;
    let der = common::pki::pem_certs(&pem)?;
    anyhow::ensure!(
        !der.is_empty(),
        "--root-cert {}: no certificate in it",
        cert.display()
    );
    // Check that the pair signs: make the issuer now.
    let root = common::pki::PemPair {
        cert: pem,
        key: key_pem,
    };
    let issuer = common::pki::generate_issuer(&root, api::spiffe::DEFAULT_TRUST_DOMAIN)
        .map_err(|e| anyhow::anyhow!("--root-cert/--root-key cannot sign: {e}"))?;
    let ca = state.ca();
    std::fs::create_dir_all(&ca)?;
    for (name, text, mode) in [
        ("root.pem", &root.cert, 0o644),
        ("root.key", &root.key, 0o600),
        ("issuer.pem", &issuer.cert, 0o644),
        ("issuer.key", &issuer.key, 0o600),
    ] {
        std::fs::write(ca.join(name), text)?;
        std::fs::set_permissions(ca.join(name), std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Stops the daemon, which removes everything; sweeps if it is gone.
pub async fn down(state: &StateDir) -> anyhow::Result<i32> {
    let client = Client::new(state.clone());
    if client.alive().await {
        let info: RunInfo = client.get("/info").await?;
        let _: serde_json::Value = client.post("/shutdown", &()).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
        while sweep::alive(&info.id) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if sweep::alive(&info.id) {
            eprintln!("the daemon did not stop in time; killing it");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(info.pid).unwrap_or(0)),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let swept = sweep::sweep().await;
    let _ = std::fs::remove_file(state.socket());
    eprintln!(
        "local runtime stopped{}",
        if swept.is_empty() {
            String::new()
        } else {
            format!(" (removed leftovers of {})", swept.join(", "))
        }
    );
    Ok(0)
}

/// The daemon itself.
pub async fn daemon(state: &StateDir, args: &UpArgs) -> anyhow::Result<i32> {
    daemon::run(DaemonConfig {
        state: state.clone(),
        cert_lifetime: args.cert_lifetime.clone(),
        jwks_refresh_interval: args.jwks_refresh_interval.clone(),
    })
    .await?;
    Ok(0)
}

/// `controller stop|start`.
pub async fn controller(state: &StateDir, action: &str) -> anyhow::Result<i32> {
    let client = Client::new(state.clone());
    let r: serde_json::Value = client.post(&format!("/controller/{action}"), &()).await?;
    eprintln!(
        "controller {}",
        if r["running"] == true {
            "running"
        } else if action == "start" {
            "starting"
        } else {
            "stopped"
        }
    );
    Ok(0)
}
