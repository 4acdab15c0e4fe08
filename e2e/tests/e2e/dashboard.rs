//! `meshctl dashboard` in headless Chromium (Playwright, `playwright-core`
//! with Debian's chromium): under a bounded load through the demo, the
//! page draws frontend -> orders v1/v2 -> payments with non-zero rates and
//! the mTLS mark, RED charts per workload, and every proxy synced with its
//! certificate's expiry. The screenshot is kept under
//! `target/e2e-artifacts/dashboard.png`.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use e2e::{Cluster, needs_root, server, text, wait_for};

const SHOP: &str = include_str!("../../../examples/shop.yaml");
const ADDR: &str = "127.0.0.1:50751";

/// A child process, killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tools() -> PathBuf {
    PathBuf::from(std::env::var("MESH_TOOLS").unwrap_or_else(|_| "/opt/mesh-tools".into()))
}

#[test]
#[ignore = "needs root"]
fn the_dashboard_shows_the_demo_in_chromium() {
    needs_root();
    let c = Cluster::up("dashboard", &[]);
    c.apply(SHOP);
    for d in ["frontend", "orders-v1", "orders-v2", "payments", "client"] {
        c.wait_ready("shop", d, 1);
    }
    // Bounded: at most 900 requests, about 10 a second.
    let _load = Killed(c.spawn_exec(
        "shop",
        "deploy/client",
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 900 ]; do curl -s -o /dev/null --max-time 5 http://frontend:8080/; i=$((i+1)); sleep 0.1; done",
        ],
    ));
    let dashboard = Killed(c.spawn_top(&["dashboard", "--address", ADDR, "--interval", "1s"]));
    wait_for("the dashboard to answer", Duration::from_secs(20), || {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "2",
                &format!("http://{ADDR}/api/graph"),
            ])
            .output()
            .map_err(|e| e.to_string())?;
        let body = text(&out.stdout);
        body.starts_with('{').then_some(()).ok_or(body)
    });

    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/e2e-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let want = [
        "shop/client->shop/frontend",
        "shop/frontend->shop/orders-v1",
        "shop/frontend->shop/orders-v2",
        "shop/orders-v1->shop/payments",
        "shop/orders-v2->shop/payments",
    ];
    let out = Command::new("node")
        .arg(server("dashboard_check.js"))
        .arg(format!("http://{ADDR}/"))
        .arg(&shot)
        .args(want)
        .env("NODE_PATH", tools().join("node_modules"))
        .output()
        .expect("node");
    drop(dashboard);
    assert!(
        out.status.success(),
        "the page: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    for k in want {
        let link = seen["links"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["link"] == k)
            .unwrap_or_else(|| panic!("{k}: {seen}"));
        assert!(link["rps"].as_f64().unwrap() > 0.0, "{link}");
        assert_eq!(link["mtls"], true, "{link}");
        assert!(link["text"].as_str().unwrap().contains("mTLS"), "{link}");
        assert!(link["text"].as_str().unwrap().contains("rps"), "{link}");
    }
    let red: Vec<&str> = seen["red"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    for w in [
        "shop/frontend",
        "shop/orders-v1",
        "shop/orders-v2",
        "shop/payments",
    ] {
        assert!(red.contains(&w), "RED chart of {w}: {red:?}");
    }
    let proxies = seen["proxies"].as_array().unwrap();
    assert!(proxies.len() >= 5, "{proxies:?}");
    for p in proxies {
        let cells: Vec<&str> = p["cells"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c.as_str())
            .collect();
        assert_eq!(cells[3], "connected", "{p}");
        assert_eq!(cells[4], "synced", "{p}");
        assert!(cells[6].ends_with('m'), "certificate expiry shown: {p}");
    }
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
}
