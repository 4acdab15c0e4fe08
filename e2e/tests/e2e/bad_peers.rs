//! Bad peers against STRICT: a workload under a namespace-wide STRICT
//! PeerAuthentication and an AuthorizationPolicy that names one caller
//! refuses plaintext, a client certificate from another CA, an expired
//! certificate, a valid certificate of an identity the policy does not
//! name, no client certificate, a TLS 1.2-only client and garbage after
//! the handshake; none of their bytes reaches the app, the proxy stays
//! ready and the meshed caller keeps working. A valid certificate of the
//! named identity, made the same way, gets through: the bad peers fail
//! for their fault alone.

use std::path::{Path, PathBuf};
use std::process::Command;

use e2e::{Cluster, client, http_and_tcp_app, needs_root, text, wait_for};

/// A TLS client to the mTLS port, run in a pod: sends the transport
/// header for 9091 (or garbage) and `marker`; prints what came back.
const PEER: &str = r#"
import socket, ssl, sys
ip, cert, key, tls12, garbage, marker = sys.argv[1:7]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["mesh-tcp/1"])
if cert:
    ctx.load_cert_chain(cert, key)
if tls12 == "1":
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
try:
    s = ctx.wrap_socket(socket.create_connection((ip, 15008), 5))
    head = b"\x16\x03garbage!" if garbage == "1" else b"MSH1" + (9091).to_bytes(2, "big")
    s.sendall(head + marker.encode())
    s.settimeout(5)
    print("answer", s.recv(100))
except Exception as e:
    print("refused", type(e).__name__, e)
"#;

/// A certificate chain and its key.
type Credentials = (PathBuf, PathBuf);

/// A bad peer: its name, its credentials, TLS 1.2 only, garbage instead
/// of the transport header.
type BadPeer<'a> = (&'a str, Option<&'a Credentials>, bool, bool);

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        text(&out.stderr)
    );
}

/// Signs a client certificate for `spiffe` with the CA in `ca` (its
/// `.pem` and `.key`), valid from `start` to `end` (openssl ca dates);
/// returns (cert, key).
fn leaf(
    dir: &Path,
    name: &str,
    ca: (&Path, &Path),
    spiffe: &str,
    dates: (&str, &str),
) -> Credentials {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("index.txt"), "").unwrap();
    std::fs::write(d.join("serial"), "1000\n").unwrap();
    std::fs::write(
        d.join("ext"),
        format!("subjectAltName=URI:{spiffe}\nextendedKeyUsage=clientAuth\n"),
    )
    .unwrap();
    std::fs::write(
        d.join("ca.cnf"),
        "[ca]\ndefault_ca = x\n[x]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\ndefault_md = sha256\npolicy = p\nunique_subject = no\n[p]\ncommonName = optional\n",
    )
    .unwrap();
    openssl(
        &d,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "key.pem",
        ],
    );
    openssl(
        &d,
        &[
            "req", "-new", "-key", "key.pem", "-subj", "/CN=peer", "-out", "req.csr",
        ],
    );
    let (ca_cert, ca_key) = (ca.0.to_str().unwrap(), ca.1.to_str().unwrap());
    openssl(
        &d,
        &[
            "ca",
            "-batch",
            "-notext",
            "-config",
            "ca.cnf",
            "-cert",
            ca_cert,
            "-keyfile",
            ca_key,
            "-in",
            "req.csr",
            "-out",
            "cert.pem",
            "-extfile",
            "ext",
            "-startdate",
            dates.0,
            "-enddate",
            dates.1,
        ],
    );
    // The chain a workload presents: its leaf, then the issuer.
    let chain = std::fs::read_to_string(d.join("cert.pem")).unwrap()
        + &std::fs::read_to_string(ca.0).unwrap();
    std::fs::write(d.join("chain.pem"), chain).unwrap();
    (d.join("chain.pem"), d.join("key.pem"))
}

const STRICT_AND_ALLOW: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: bp}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: callers, namespace: bp}
spec:
  selector: {matchLabels: {app: web}}
  rules: [{from: [{source: {principals: ["cluster.local/ns/bp/sa/client", "cluster.local/ns/bp/sa/default"]}}]}]
"#;

#[test]
#[ignore = "needs root"]
fn bad_peers_against_strict_are_refused_and_harm_nothing() {
    needs_root();
    let c = Cluster::up("badpeers", &[]);
    c.apply(&client("bp", true));
    c.apply(&client("bp", false));
    c.apply(&http_and_tcp_app("bp", "web"));
    c.wait_ready("bp", "client", 1);
    c.wait_ready("bp", "outsider", 1);
    let ip = c.wait_ready("bp", "web", 1)[0]
        .ip
        .expect("web's IP")
        .to_string();
    c.apply(STRICT_AND_ALLOW);
    let meshed_ok = || {
        let out = c.exec(
            "bp",
            "deploy/client",
            &["curl", "-sS", "--max-time", "5", "http://web:8080/fine"],
        );
        text(&out.stdout).contains("path=/fine")
    };
    wait_for(
        "STRICT in force",
        std::time::Duration::from_secs(30),
        || {
            let out = c.exec(
                "bp",
                "deploy/outsider",
                &["curl", "-sS", "--max-time", "5", "http://web:8080/"],
            );
            if out.status.success() {
                Err(text(&out.stdout))
            } else {
                Ok(())
            }
        },
    );
    assert!(meshed_ok());

    let dir = c.state.join("peers");
    std::fs::create_dir_all(&dir).unwrap();
    let ca = c.state.join("ca");
    let issuer = (ca.join("issuer.pem"), ca.join("issuer.key"));
    let mesh = (issuer.0.as_path(), issuer.1.as_path());
    let valid = ("20200101000000Z", "20991231000000Z");
    let allowed = leaf(
        &dir,
        "allowed",
        mesh,
        "spiffe://cluster.local/ns/bp/sa/default",
        valid,
    );
    let intruder = leaf(
        &dir,
        "intruder",
        mesh,
        "spiffe://cluster.local/ns/bp/sa/intruder",
        valid,
    );
    let expired = leaf(
        &dir,
        "expired",
        mesh,
        "spiffe://cluster.local/ns/bp/sa/default",
        ("20200101000000Z", "20200102000000Z"),
    );
    // Another CA: self-signed, the same identity.
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    openssl(
        &other,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ca.key",
        ],
    );
    openssl(
        &other,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=other",
            "-days",
            "2",
            "-out",
            "ca.pem",
        ],
    );
    let foreign = leaf(
        &dir,
        "foreign",
        (&other.join("ca.pem"), &other.join("ca.key")),
        "spiffe://cluster.local/ns/bp/sa/default",
        valid,
    );

    let peer = |name: &str, cert: Option<&Credentials>, tls12: bool, garbage: bool| -> String {
        let (cert, key) = cert.map_or((String::new(), String::new()), |(c, k)| {
            (c.display().to_string(), k.display().to_string())
        });
        let marker = format!("marker-{name}");
        let out = c.exec(
            "bp",
            "deploy/outsider",
            &[
                "python3",
                "-c",
                PEER,
                &ip,
                &cert,
                &key,
                if tls12 { "1" } else { "0" },
                if garbage { "1" } else { "0" },
                &marker,
            ],
        );
        text(&out.stdout)
    };

    // The control: the allowed identity's certificate, made like the others.
    let answer = peer("allowed", Some(&allowed), false, false);
    assert!(
        answer.contains("answer b'ok"),
        "the control peer failed: {answer}"
    );

    let bad: [BadPeer<'_>; 6] = [
        ("foreign", Some(&foreign), false, false),
        ("expired", Some(&expired), false, false),
        ("intruder", Some(&intruder), false, false),
        ("nocert", None, false, false),
        ("tls12", Some(&allowed), true, false),
        ("garbage", Some(&allowed), false, true),
    ];
    for (name, cert, tls12, garbage) in bad {
        let answer = peer(name, cert, tls12, garbage);
        assert!(!answer.contains("b'ok"), "{name} got through: {answer}");
        let ready = c.exec(
            "bp",
            "deploy/outsider",
            &[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("http://{ip}:15020/ready"),
            ],
        );
        assert_eq!(
            text(&ready.stdout),
            "200",
            "the proxy is not ready after {name}"
        );
        assert!(meshed_ok(), "the meshed caller failed after {name}");
    }
    let log = text(&c.meshctl(&["logs", "deploy/web", "-n", "bp"]).stdout);
    assert!(log.contains("marker-allowed"), "{log}");
    for (name, ..) in bad {
        assert!(
            !log.contains(&format!("marker-{name}")),
            "{name} reached the app: {log}"
        );
    }
}
