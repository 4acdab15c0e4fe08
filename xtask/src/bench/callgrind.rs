//! Instructions per request of each proxy, counted by callgrind: a figure
//! that does not move with the machine's noise. The sidecars of this
//! phase run under `valgrind --tool=callgrind` (the local runtime's
//! `MESH_PROXY_WRAPPER`); each proxy writes its counts when it exits.
//! Two runs that differ only in how many requests they carry give the
//! instructions of those extra requests (start-up and shutdown cancel).

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where the sidecars' profiles go (`%p`: the process ID).
const OUT: &str = "/tmp/mesh-bench-callgrind";

/// The wrapper the runtime runs sidecars under.
pub fn wrapper() -> String {
    format!("valgrind --tool=callgrind --callgrind-out-file={OUT}.%p")
}

fn file(pid: u32) -> PathBuf {
    PathBuf::from(format!("{OUT}.{pid}"))
}

/// The instructions `pid` ran, from the profile it wrote at exit
/// (waiting up to `wait` for it).
pub fn instructions(pid: u32, wait: Duration) -> anyhow::Result<u64> {
    let deadline = Instant::now() + wait;
    loop {
        let text = std::fs::read_to_string(file(pid)).unwrap_or_default();
        if let Some(n) = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("totals:")
                    .or_else(|| l.strip_prefix("summary:"))
            })
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
        {
            return Ok(n);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{}: no totals (the proxy did not exit cleanly?)",
            file(pid).display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Keeps `pid`'s profile at `to` (for `callgrind_annotate`).
pub fn keep(pid: u32, to: &std::path::Path) -> anyhow::Result<()> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::copy(file(pid), to)?;
    Ok(())
}

/// Removes the profiles this run wrote.
pub fn clean() {
    let name = OUT.rsplit('/').next().unwrap_or(OUT);
    if let Ok(dir) = std::fs::read_dir("/tmp") {
        for e in dir.flatten() {
            if e.file_name().to_string_lossy().starts_with(name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}
