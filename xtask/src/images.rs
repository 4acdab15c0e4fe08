//! `cargo xtask images`: the controller's and the proxy's container
//! images, built without a container engine or a registry, as OCI image
//! archives that `ctr images import` (containerd) and `docker load` take.
//! Each is one layer: the release binary (stripped), the
//! shared libraries `ldd` lists, and for the proxy the iptables that
//! `mesh-proxy init` runs (iptables-nft with its extensions), `/etc/passwd`
//! naming the proxy's UID 1337. Where docker is at hand, the Containerfiles
//! in `images/` build the same images.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Args;

use crate::run_ok;

pub(crate) mod oci;

/// `cargo xtask images`.
#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Where the archives go.
    #[arg(long, default_value = "target/images")]
    pub out: PathBuf,
    /// The images' tag.
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    pub tag: String,
    /// The repository prefix (`docker.io/local` is what `local/NAME` in a
    /// pod spec resolves to).
    #[arg(long, default_value = "docker.io/local")]
    pub repo: String,
    /// Use the release binaries already built.
    #[arg(long)]
    pub no_build: bool,
}

/// The proxy image must stay under this (the issue's bar).
pub const PROXY_MAX_BYTES: u64 = 20 << 20;

/// Copies the shared libraries `ldd` lists for `file` to the same paths
/// under `rootfs`.
fn copy_libs(rootfs: &Path, file: &Path) -> anyhow::Result<()> {
    let ldd = Command::new("ldd").arg(file).output()?;
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        run_ok(
            Command::new("cp")
                .args(["-L", "--parents", lib])
                .arg(rootfs),
        )?;
    }
    Ok(())
}

/// Copies `file` and its libraries to the same paths under `rootfs`.
pub(crate) fn copy_with_libs(rootfs: &Path, file: &Path) -> anyhow::Result<()> {
    run_ok(
        Command::new("cp")
            .arg("-L")
            .arg("--parents")
            .arg(file)
            .arg(rootfs),
    )?;
    copy_libs(rootfs, file)
}

/// A stripped copy of `bin` at `rootfs/usr/local/bin/NAME`, with its libraries.
fn install_binary(rootfs: &Path, bin: &Path) -> anyhow::Result<()> {
    let name = bin
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("{}: no file name", bin.display()))?;
    let dir = rootfs.join("usr/local/bin");
    std::fs::create_dir_all(&dir)?;
    run_ok(
        Command::new("objcopy")
            .arg("--strip-all")
            .arg(bin)
            .arg(dir.join(name)),
    )?;
    copy_libs(rootfs, bin)
}

pub(crate) fn base_files(rootfs: &Path) -> anyhow::Result<()> {
    for d in ["etc", "tmp", "proc", "sys", "dev", "run", "var/run"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/:/sbin/nologin\nmesh-proxy:x:1337:1337:mesh-proxy:/:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n",
    )?;
    std::fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\nmesh-proxy:x:1337:\nnogroup:x:65534:\n",
    )?;
    std::fs::write(rootfs.join("etc/nsswitch.conf"), "hosts: files dns\n")?;
    Ok(())
}

/// The proxy's root filesystem: the binary and iptables.
fn proxy_rootfs(rootfs: &Path, bin: &Path) -> anyhow::Result<()> {
    base_files(rootfs)?;
    install_binary(rootfs, bin)?;
    let xtables = Path::new("/usr/sbin/xtables-nft-multi");
    anyhow::ensure!(
        xtables.exists(),
        "{} is missing: apt-get install iptables",
        xtables.display()
    );
    iptables(rootfs)
}

/// iptables-nft, its extensions and its usual names, under `rootfs`.
pub(crate) fn iptables(rootfs: &Path) -> anyhow::Result<()> {
    let xtables = Path::new("/usr/sbin/xtables-nft-multi");
    copy_with_libs(rootfs, xtables)?;
    run_ok(
        Command::new("cp")
            .args(["-r", "--parents", "/usr/lib/x86_64-linux-gnu/xtables"])
            .arg(rootfs),
    )?;
    for link in ["iptables", "iptables-save", "iptables-restore"] {
        std::os::unix::fs::symlink("xtables-nft-multi", rootfs.join("usr/sbin").join(link))?;
    }
    Ok(())
}

/// Runs `argv` inside `rootfs` (chroot, as root): the image's files are
/// complete when its programs start with nothing but what it holds.
fn runs_inside(rootfs: &Path, argv: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("chroot").arg(rootfs).args(argv).output()?;
    anyhow::ensure!(
        out.status.success(),
        "{argv:?} does not run inside the image: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Builds both archives; returns their paths and sizes.
pub fn run(a: &ImagesArgs, root: &Path) -> anyhow::Result<Vec<(PathBuf, u64)>> {
    if !a.no_build {
        crate::build_release(root)?;
    }
    let release = root.join("target/release");
    let out = root.join(&a.out);
    std::fs::create_dir_all(&out)?;
    let mut made = Vec::new();
    for (name, entry) in [
        ("mesh-proxy", "/usr/local/bin/mesh-proxy"),
        ("mesh-controller", "/usr/local/bin/mesh-controller"),
    ] {
        let rootfs = out.join(format!("{name}-rootfs"));
        let _ = std::fs::remove_dir_all(&rootfs);
        std::fs::create_dir_all(&rootfs)?;
        let bin = release.join(name);
        if name == "mesh-proxy" {
            proxy_rootfs(&rootfs, &bin)?;
            runs_inside(&rootfs, &["/usr/sbin/iptables-restore", "--version"])?;
        } else {
            base_files(&rootfs)?;
            install_binary(&rootfs, &bin)?;
        }
        runs_inside(&rootfs, &[entry, "--version"])?;
        let reference = format!("{}/{name}:{}", a.repo, a.tag);
        let archive = out.join(format!("{name}.tar"));
        let user = if name == "mesh-proxy" {
            "1337:1337"
        } else {
            "65534:65534"
        };
        let size = oci::pack(&rootfs, &reference, &archive, &[entry], user)?;
        std::fs::remove_dir_all(&rootfs)?;
        eprintln!(
            "{}: {reference}, {:.1} MB",
            archive.display(),
            size as f64 / 1e6
        );
        made.push((archive, size));
    }
    let proxy = made[0].1;
    anyhow::ensure!(
        proxy < PROXY_MAX_BYTES,
        "the proxy image is {proxy} bytes, over the {PROXY_MAX_BYTES} bar"
    );
    Ok(made)
}
