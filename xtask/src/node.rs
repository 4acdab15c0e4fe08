//! `cargo xtask node`: a real single-node Kubernetes (1.20, from
//! Debian's source package) on this host, for the Kubernetes scenarios,
//! without a container engine or a registry. The node's processes live in
//! their own network and mount namespaces (`e2e/k8s-node/`, derived from
//! the workplace's recipe in `../shared/k8s-node/`); this module builds
//! it, packs the images its pods run, and starts and stops it.
//!
//! - `build`: the Kubernetes binaries (cached in `$W/bin`, default
//!   `/tmp/k8s-node-build/bin`; 7-13 minutes cold on 2 cores).
//! - `images`: `pause` and `tools` (busybox, curl, iptables) for test
//!   pods, and the mesh's own images (`cargo xtask images`), into `$IMG`.
//! - `start`, `stop`: the node; `stop` checks that nothing is left.
//! - `prepare`: `build`, then `images`.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::{Args, Subcommand};

use crate::images::{self, ImagesArgs, oci};
use crate::run_ok;

/// `cargo xtask node`.
#[derive(Args, Debug)]
pub struct NodeArgs {
    #[command(subcommand)]
    cmd: NodeCmd,
}

#[derive(Subcommand, Debug)]
enum NodeCmd {
    /// Build the Kubernetes binaries (skips those already built).
    Build,
    /// Pack the images the node's pods run.
    Images {
        /// Use the release binaries already built.
        #[arg(long)]
        no_build: bool,
    },
    /// Start the node (prints the KUBECONFIG to use).
    Start,
    /// Stop the node and remove everything it made.
    Stop,
    /// Build, then pack the images.
    Prepare,
}

/// Where the node's scripts are.
pub fn scripts(root: &Path) -> PathBuf {
    root.join("e2e/k8s-node")
}

/// Where the node's images are packed (`$IMG`).
pub fn image_dir() -> PathBuf {
    std::env::var_os("IMG")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("mesh-k8s-node-images"))
}

fn script(root: &Path, name: &str) -> anyhow::Result<()> {
    let status = Command::new(scripts(root).join(name))
        .env("IMG", image_dir())
        .status()?;
    anyhow::ensure!(status.success(), "{name} failed ({status})");
    Ok(())
}

/// Runs `cargo xtask node ...`.
pub fn run(a: &NodeArgs, root: &Path) -> anyhow::Result<()> {
    match a.cmd {
        NodeCmd::Build => script(root, "build.sh"),
        NodeCmd::Images { no_build } => pack_images(root, no_build),
        NodeCmd::Start => script(root, "start.sh"),
        NodeCmd::Stop => script(root, "stop.sh"),
        NodeCmd::Prepare => {
            script(root, "build.sh")?;
            pack_images(root, false)
        }
    }
}

fn pack_images(root: &Path, no_build: bool) -> anyhow::Result<()> {
    let out = image_dir();
    std::fs::create_dir_all(&out)?;
    let work = out.join("rootfs");
    let _ = std::fs::remove_dir_all(&work);

    let pause = work.join("pause");
    std::fs::create_dir_all(&pause)?;
    run_ok(
        Command::new("gcc")
            .args(["-static", "-Os", "-s", "-o"])
            .arg(pause.join("pause"))
            .arg(scripts(root).join("pause.c")),
    )?;
    oci::pack(
        &pause,
        "docker.io/local/pause:1",
        &out.join("pause.tar"),
        &["/pause"],
        "0:0",
    )?;

    let tools = work.join("tools");
    tools_rootfs(&tools)?;
    oci::pack(
        &tools,
        "docker.io/local/tools:1",
        &out.join("tools.tar"),
        &["/bin/sh"],
        "0:0",
    )?;
    std::fs::remove_dir_all(&work)?;

    let mesh = images::run(
        &ImagesArgs {
            out: out.clone(),
            tag: env!("CARGO_PKG_VERSION").into(),
            repo: "docker.io/local".into(),
            no_build,
        },
        root,
    )?;
    eprintln!(
        "node images in {}: pause, tools, {}",
        out.display(),
        mesh.iter()
            .filter_map(|(p, _)| p.file_stem()?.to_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// busybox (sh, httpd, nc, wget...), curl, openssl (`s_server`, a TLS
/// server for origination) and iptables: what test pods serve and call
/// with.
fn tools_rootfs(t: &Path) -> anyhow::Result<()> {
    images::base_files(t)?;
    for d in ["bin", "usr/bin", "usr/sbin", "www"] {
        std::fs::create_dir_all(t.join(d))?;
    }
    std::fs::copy("/bin/busybox", t.join("bin/busybox"))
        .map_err(|e| anyhow::anyhow!("/bin/busybox: {e} (apt-get install busybox-static)"))?;
    let list = run_ok(Command::new("/bin/busybox").arg("--list"))?;
    for applet in list.split_whitespace() {
        let link = t.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link)?;
        }
    }
    images::copy_with_libs(t, Path::new("/usr/bin/curl"))?;
    images::copy_with_libs(t, Path::new("/usr/bin/openssl"))?;
    images::iptables(t)?;
    std::fs::write(t.join("www/index.html"), "hello from busybox httpd\n")?;
    Ok(())
}
