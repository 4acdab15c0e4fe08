//! `cargo xtask`: project automation.
//!
//! - `codegen`: writes the CRDs generated from the api crate's types into
//!   the chart.
//! - `bench`: the data-plane benchmark on the local runtime (a report,
//!   never a test): fixed-rate HTTP/1.1 load from a client pod to a server
//!   pod, direct, through the mesh and through HAProxy in the same run.
//! - `bench-controller`: the controller at scale (a report).
//! - `images`: the controller's and the proxy's images as OCI archives,
//!   without a container engine.
//! - `node`: a real single-node Kubernetes for the Kubernetes scenarios
//!   (build, images, start, stop).
//! - `loadgen` and `serve` (hidden): the load generator and the HTTP
//!   server that `bench` runs inside pods.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::{Parser, Subcommand};

mod bench;
mod bench_controller;
mod images;
mod loadgen;
mod node;
mod serve;

#[derive(Parser)]
#[command(about = "Project automation")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write generated files (the CRDs in charts/).
    Codegen,
    /// Benchmark the data plane: direct vs. two proxies with mTLS.
    Bench(bench::BenchArgs),
    /// The controller at scale: 10k Services, 5k subscribed proxies.
    BenchController(bench_controller::Args),
    /// Build the controller's and the proxy's images as OCI archives.
    Images(images::ImagesArgs),
    /// A real single-node Kubernetes on this host (build, images, start, stop).
    Node(node::NodeArgs),
    /// Generate HTTP/1.1 load (run inside a pod by `bench`).
    #[command(hide = true)]
    Loadgen(loadgen::LoadArgs),
    /// Serve fixed-size HTTP responses (run inside a pod by `bench`).
    #[command(hide = true)]
    Serve(serve::ServeArgs),
}

/// The workspace's root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the release binaries of the mesh, always as one set (the same
/// feature unification whoever asks, so nothing is rebuilt between
/// `bench` and `images`), without the variables `cargo run` set for xtask
/// itself: build scripts that watch them (ring's watches
/// `CARGO_MANIFEST_DIR`) would otherwise rebuild the whole release tree.
fn build_release(root: &Path) -> anyhow::Result<()> {
    eprintln!("building release binaries");
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root).args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "meshctl",
        "-p",
        "mesh-proxy",
        "-p",
        "mesh-controller",
    ]);
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        if n.starts_with("CARGO_PKG_")
            || n.starts_with("CARGO_MANIFEST_")
            || matches!(
                &*n,
                "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE"
            )
        {
            cmd.env_remove(&name);
        }
    }
    run_ok(&mut cmd).map(drop)
}

/// Runs `cmd`; its stdout, or an error with its stderr.
fn run_ok(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Codegen => {
            let path = root().join(api::crd::CHART_PATH);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&path, api::crd::render())?;
            eprintln!("wrote {}", path.display());
            Ok(())
        }
        Cmd::Bench(a) => bench::run(&a),
        Cmd::BenchController(a) => bench_controller::run(&a),
        Cmd::Images(a) => images::run(&a, &root()).map(|_| ()),
        Cmd::Node(a) => node::run(&a, &root()),
        Cmd::Loadgen(a) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?
            .block_on(loadgen::run(a)),
        Cmd::Serve(a) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?
            .block_on(serve::run(a)),
    }
}
