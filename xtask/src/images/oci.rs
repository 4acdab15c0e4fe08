//! An OCI image archive of one layer (the layout `ctr images import` and
//! `docker load` read): `oci-layout`, `index.json` naming the image, and
//! the layer, config and manifest as content-addressed blobs. The layer is
//! reproducible: sorted, owned by root, all times zero.

use std::path::Path;
use std::process::Command;

use crate::run_ok;

fn sha256(path: &Path) -> anyhow::Result<String> {
    let out = run_ok(Command::new("sha256sum").arg(path))?;
    out.split_whitespace()
        .next()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("sha256sum printed nothing"))
}

/// Moves `file` into `blobs/sha256/<digest>`; its digest and size.
fn blob(dir: &Path, file: &Path) -> anyhow::Result<(String, u64)> {
    let digest = sha256(file)?;
    let size = std::fs::metadata(file)?.len();
    std::fs::rename(file, dir.join("blobs/sha256").join(&digest))?;
    Ok((digest, size))
}

/// Packs `rootfs` as `reference` into `archive` with `entrypoint`, run as
/// `user`; the archive's size.
pub fn pack(
    rootfs: &Path,
    reference: &str,
    archive: &Path,
    entrypoint: &[&str],
    user: &str,
) -> anyhow::Result<u64> {
    let dir = archive.with_extension("oci");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("blobs/sha256"))?;
    let layer = dir.join("layer.tar");
    run_ok(
        Command::new("tar")
            .args([
                "--numeric-owner",
                "--owner=0",
                "--group=0",
                "--sort=name",
                "--mtime=@0",
                "-C",
            ])
            .arg(rootfs)
            .arg("-cf")
            .arg(&layer)
            .arg("."),
    )?;
    let (layer_digest, layer_size) = blob(&dir, &layer)?;
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": entrypoint,
            "User": user,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
    });
    let config_file = dir.join("config.json");
    std::fs::write(&config_file, config.to_string())?;
    let (config_digest, config_size) = blob(&dir, &config_file)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{config_digest}"), "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": format!("sha256:{layer_digest}"), "size": layer_size}],
    });
    let manifest_file = dir.join("manifest.json");
    std::fs::write(&manifest_file, manifest.to_string())?;
    let (manifest_digest, manifest_size) = blob(&dir, &manifest_file)?;
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let tag = reference.rsplit_once(':').map_or("latest", |(_, t)| t);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest_size,
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": reference, "org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(dir.join("index.json"), index.to_string())?;
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&dir)
            .arg("-cf")
            .arg(archive)
            .args(["oci-layout", "index.json", "blobs"]),
    )?;
    std::fs::remove_dir_all(&dir)?;
    Ok(std::fs::metadata(archive)?.len())
}
