//! Finding and removing what runs left behind. Every run registers its id
//! and daemon PID under `/run/meshctl/runs`; a namespace whose name carries
//! the prefix of a run whose daemon is gone is stale and removed, with its
//! processes and `/etc/netns` files.

use std::path::PathBuf;

use super::netns;

const REGISTRY: &str = "/run/meshctl/runs";

fn entry(id: &str) -> PathBuf {
    PathBuf::from(REGISTRY).join(id)
}

/// Records that run `id` is served by this process.
pub fn register(id: &str, state_dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(REGISTRY)?;
    std::fs::write(
        entry(id),
        format!("{}\n{}\n", std::process::id(), state_dir.display()),
    )
}

/// Forgets run `id`.
pub fn unregister(id: &str) {
    let _ = std::fs::remove_file(entry(id));
}

/// Whether run `id`'s daemon is alive.
pub fn alive(id: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(entry(id)) else {
        return false;
    };
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<u32>().ok())
    else {
        return false;
    };
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("daemon"))
        .unwrap_or(false)
}

/// The run id in a namespace name made by [`netns`], if it is one.
pub fn run_id_of(ns: &str) -> Option<&str> {
    let rest = ns.strip_prefix("mesh-")?;
    let (id, tail) = rest.split_once('-')?;
    let id_ok = id.len() == 6
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    let tail_ok = tail == "node"
        || tail
            .strip_prefix('p')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    (id_ok && tail_ok).then_some(id)
}

/// Removes every namespace of run `id`.
pub async fn remove_run(id: &str) {
    for ns in netns::list().await {
        if run_id_of(&ns) == Some(id) {
            netns::delete(&ns).await;
        }
    }
    // Files of namespaces that no longer exist.
    if let Ok(dir) = std::fs::read_dir("/etc/netns") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if run_id_of(&name) == Some(id) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Removes what dead runs left; returns their ids.
pub async fn sweep() -> Vec<String> {
    let mut ids: Vec<String> = netns::list()
        .await
        .iter()
        .filter_map(|n| run_id_of(n).map(str::to_string))
        .collect();
    if let Ok(dir) = std::fs::read_dir(REGISTRY) {
        ids.extend(
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string()),
        );
    }
    ids.sort();
    ids.dedup();
    let mut swept = Vec::new();
    for id in ids {
        if !alive(&id) {
            remove_run(&id).await;
            unregister(&id);
            swept.push(id);
        }
    }
    swept
}

#[cfg(test)]
mod tests {
    use super::run_id_of;

    #[test]
    fn recognises_only_our_names() {
        assert_eq!(run_id_of("mesh-0a1b2c-node"), Some("0a1b2c"));
        assert_eq!(run_id_of("mesh-0a1b2c-p12"), Some("0a1b2c"));
        assert_eq!(run_id_of("mesh-0a1b2c-p"), None);
        assert_eq!(run_id_of("mesh-0A1B2C-node"), None);
        assert_eq!(run_id_of("mesh-0a1b2-node"), None);
        assert_eq!(run_id_of("mesh-0a1b2c-other"), None);
        assert_eq!(run_id_of("cni-1234"), None);
    }
}
