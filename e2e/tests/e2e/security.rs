//! What mTLS must guarantee: traffic between meshed pods is encrypted
//! (TLS 1.3 on the wire, no plaintext), pods outside the mesh still reach
//! meshed ones, directly and through a Service (permissive for now), and
//! certificate rotation under load fails no request.

use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::{Cluster, app, client, needs_root, server, text};

/// The ServerHello's supported_versions extension selecting TLS 1.3.
const TLS13_SELECTED: &[u8] = &[0x00, 0x2b, 0x00, 0x02, 0x03, 0x04];

/// POSTs `body` to `url` with curl from `from` in `sec`; the answer.
fn post(c: &Cluster, from: &str, body: &str, url: &str) -> String {
    c.exec_ok(
        "sec",
        from,
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--data-binary",
            body,
            url,
        ],
    )
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
#[ignore = "needs root"]
fn traffic_between_pods_is_tls13_and_outsiders_still_get_in() {
    needs_root();
    let c = Cluster::up("encryption", &[]);
    c.apply(&client("sec", true));
    c.apply(&client("sec", false));
    c.apply(&app(
        "sec",
        "web",
        1,
        8080,
        &["python3", &server("http_echo.py"), "8080"],
        "",
    ));
    c.wait_ready("sec", "client", 1);
    c.wait_ready("sec", "outsider", 1);
    let web = c.wait_ready("sec", "web", 1).remove(0);
    let web_ip = web.ip.expect("pod IP").to_string();

    let pcap = c.state.join("bridge.pcap");
    let mut tcpdump = Command::new("ip")
        .args([
            "netns",
            "exec",
            &c.node_ns(),
            "tcpdump",
            "-i",
            "br0",
            "-U",
            "-s",
            "0",
            "-w",
        ])
        .arg(&pcap)
        .arg("tcp")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tcpdump (apt-get install tcpdump)");
    // tcpdump writes the file's header once it captures.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&pcap).map_or(0, |m| m.len()) < 24 {
        assert!(
            std::time::Instant::now() < deadline,
            "tcpdump did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let meshed_secret = "meshed-secret-7f3a9c";
    let out = post(&c, "deploy/client", meshed_secret, "http://web:8080/");
    assert_eq!(out, meshed_secret);
    // A pod without a sidecar reaches the meshed pod's port directly, in
    // plaintext: accepted (permissive), and visible on the wire, which
    // also shows that the capture sees request bodies.
    let plain_secret = "outsider-visible-51be0d";
    let out = post(
        &c,
        "deploy/outsider",
        plain_secret,
        &format!("http://{web_ip}:8080/"),
    );
    assert_eq!(out, plain_secret);
    // The local runtime plays kube-proxy: the outsider reaches the
    // Service by name (its cluster IP) as on Kubernetes, and a Service
    // without endpoints refuses at once instead of timing out.
    let by_name = post(
        &c,
        "deploy/outsider",
        "by-name",
        "http://web.sec.svc.cluster.local:8080/",
    );
    assert_eq!(by_name, "by-name");
    c.apply(
        "apiVersion: v1
kind: Service
metadata: {name: nobody, namespace: sec}
spec:
  selector: {app: nobody}
  ports: [{name: http, port: 80, targetPort: 8080}]
",
    );
    let started = std::time::Instant::now();
    let refused = e2e::wait_for("nobody refuses", Duration::from_secs(20), || {
        let out = c.exec(
            "sec",
            "deploy/outsider",
            &["curl", "-sS", "--max-time", "5", "http://nobody/"],
        );
        // curl's 7: could not connect (refused); 6: the name is not known yet.
        match out.status.code() {
            Some(7) => Ok(text(&out.stderr)),
            other => Err(format!("{other:?} {}", text(&out.stderr))),
        }
    });
    assert!(started.elapsed() < Duration::from_secs(20), "{refused}");

    // `-U` writes each packet as it comes: wait for the outsider's.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read(&pcap).is_ok_and(|b| contains(&b, plain_secret.as_bytes()))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = tcpdump.kill();
    let _ = tcpdump.wait();
    let bytes = std::fs::read(&pcap).expect("capture file");
    assert!(
        contains(&bytes, plain_secret.as_bytes()),
        "the capture missed the plaintext request: capture broken"
    );
    assert!(
        !contains(&bytes, meshed_secret.as_bytes()),
        "meshed request body seen in plaintext on the bridge"
    );
    assert!(
        contains(&bytes, TLS13_SELECTED),
        "no TLS 1.3 ServerHello on the bridge"
    );

    // The certificate the server's proxy presents chains to the trust
    // anchor for openssl, and names exactly one identity, as a URI SAN.
    let (leaf, issuer) = c.served_chain("sec", "deploy/outsider", &web_ip);
    openssl_verify(&c.state.join("ca/root.pem"), &issuer, &leaf);
    let san = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(&leaf)
        .output()
        .expect("openssl x509");
    let san = text(&san.stdout);
    let names: Vec<&str> = san
        .lines()
        .skip(1)
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .collect();
    assert_eq!(names, ["URI:spiffe://cluster.local/ns/sec/sa/web"], "{san}");
}

#[test]
#[ignore = "needs root"]
fn certificate_rotation_under_traffic_fails_no_request() {
    needs_root();
    let c = Cluster::up("rotation", &["--cert-lifetime", "5s"]);
    c.apply(&client("rot", true));
    c.apply(&app(
        "rot",
        "web",
        1,
        8080,
        &["python3", &server("http_echo.py"), "8080"],
        "",
    ));
    c.wait_ready("rot", "client", 1);
    c.wait_ready("rot", "web", 1);
    let serial = |pod: &str| {
        let dump = c.exec_ok(
            "rot",
            pod,
            &[
                "curl",
                "-sS",
                "--max-time",
                "5",
                "http://127.0.0.1:15000/config_dump",
            ],
        );
        let v: serde_json::Value = serde_json::from_str(&dump).expect("config_dump JSON");
        v["certificate"]["serial"]
            .as_str()
            .expect("serial")
            .to_string()
    };
    let (client_before, web_before) = (serial("deploy/client"), serial("deploy/web"));
    // About 15 s of requests, each on a new connection: three lifetimes.
    let out = c.exec(
        "rot",
        "deploy/client",
        &[
            "sh",
            "-c",
            "for i in $(seq 1 120); do curl -s -o /dev/null -w '%{http_code}\\n' --max-time 5 http://web:8080/; sleep 0.1; done",
        ],
    );
    let codes = text(&out.stdout);
    let ok = codes.lines().filter(|l| *l == "200").count();
    assert_eq!(ok, 120, "failed requests during rotation: {codes}");
    assert_ne!(
        serial("deploy/client"),
        client_before,
        "client certificate did not rotate"
    );
    assert_ne!(
        serial("deploy/web"),
        web_before,
        "server certificate did not rotate"
    );
}

fn openssl_verify(root: &std::path::Path, issuer: &std::path::Path, leaf: &std::path::Path) {
    let verify = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(root)
        .arg("-untrusted")
        .arg(issuer)
        .arg(leaf)
        .output()
        .expect("openssl");
    assert!(
        verify.status.success() && text(&verify.stdout).contains(": OK"),
        "openssl verify: {}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );
}

#[test]
#[ignore = "needs root"]
fn a_root_brought_by_the_user_signs_the_workloads() {
    needs_root();
    // A root made by someone else's tool.
    let dir = std::path::PathBuf::from(format!("/tmp/mesh-e2e-byo-root-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (root, key) = (dir.join("root.pem"), dir.join("root.key"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "30",
        ])
        .args([
            "-subj",
            "/CN=my-own-root",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
        ])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&root)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{}", text(&made.stderr));
    let (root_s, key_s) = (root.display().to_string(), key.display().to_string());
    let c = Cluster::up("byoroot", &["--root-cert", &root_s, "--root-key", &key_s]);
    c.apply(&client("byo", true));
    c.apply(&client("byo", false));
    c.apply(&app(
        "byo",
        "web",
        1,
        8080,
        &["python3", &server("http_echo.py"), "8080"],
        "",
    ));
    c.wait_ready("byo", "client", 1);
    c.wait_ready("byo", "outsider", 1);
    let web = c.wait_ready("byo", "web", 1).remove(0);
    let out = c.exec_ok(
        "byo",
        "deploy/client",
        &["curl", "-sS", "--max-time", "10", "http://web:8080/"],
    );
    assert!(out.starts_with("pod=web-"), "{out}");
    let (leaf, issuer) = c.served_chain("byo", "deploy/outsider", &web.ip.expect("ip").to_string());
    openssl_verify(&root, &issuer, &leaf);
    let _ = std::fs::remove_dir_all(&dir);
}
