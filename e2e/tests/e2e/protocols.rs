//! Every protocol the data plane carries, with real clients and servers:
//! HTTP/1.1 (keep-alive, chunked), HTTP/2, gRPC with trailers, WebSocket,
//! redis and postgres.

use e2e::{Cluster, app, client, needs_root, server};

#[test]
#[ignore = "needs root"]
fn http1_http2_grpc_and_websocket_through_the_mesh() {
    needs_root();
    let c = Cluster::up("protocols", &[]);
    let http = server("http_echo.py");
    let grpc = server("grpc_echo.py");
    let ws = server("ws_echo.py");
    let h2_root = c.state.join("h2-docs");
    std::fs::create_dir_all(&h2_root).unwrap();
    std::fs::write(h2_root.join("hello.txt"), "hello over h2\n").unwrap();
    let h2_root = h2_root.display().to_string();
    c.apply(&client("proto", true));
    c.apply(&app(
        "proto",
        "web",
        1,
        8080,
        &["python3", &http, "8080"],
        "",
    ));
    c.apply(&app(
        "proto",
        "h2",
        1,
        8081,
        &["nghttpd", "--no-tls", "-d", &h2_root, "8081"],
        "",
    ));
    c.apply(&app(
        "proto",
        "grpc",
        1,
        50051,
        &["python3", &grpc, "server", "50051"],
        "",
    ));
    c.apply(&app(
        "proto",
        "ws",
        1,
        8765,
        &["python3", &ws, "server", "8765"],
        "",
    ));
    for d in ["client", "web", "h2", "grpc", "ws"] {
        c.wait_ready("proto", d, 1);
    }

    let mut steps = e2e::Steps::new();
    steps.step(
        "HTTP/1.1: two requests on one kept-alive connection, then a chunked",
        || {
            // HTTP/1.1: two requests on one kept-alive connection, then a chunked
            // upload echoed back chunked.
            let out = c.exec_ok(
                "proto",
                "deploy/client",
                &[
                    "curl",
                    "-sS",
                    "--max-time",
                    "10",
                    "-w",
                    "%{num_connects}\n",
                    "http://web:8080/a",
                    "http://web:8080/b",
                ],
            );
            assert!(out.contains("path=/a") && out.contains("path=/b"), "{out}");
            assert!(
                out.lines().filter(|l| *l == "1").count() == 1 && out.contains("\n0"),
                "keep-alive not used: {out}"
            );
            let body = "x".repeat(20_000);
            let out = c.exec_ok(
                "proto",
                "deploy/client",
                &[
                    "curl",
                    "-sS",
                    "--max-time",
                    "10",
                    "-H",
                    "Transfer-Encoding: chunked",
                    "--data-binary",
                    &body,
                    "http://web.proto:8080/up",
                ],
            );
            assert_eq!(out, body);
        },
    );

    steps.step("HTTP/2 with prior knowledge", || {
        // HTTP/2 with prior knowledge.
        let out = c.exec_ok(
            "proto",
            "deploy/client",
            &[
                "curl",
                "-sS",
                "--max-time",
                "10",
                "--http2-prior-knowledge",
                "-w",
                "\nversion=%{http_version}",
                "http://h2:8081/hello.txt",
            ],
        );
        assert!(
            out.contains("hello over h2") && out.ends_with("version=2"),
            "{out}"
        );
        let out = c.exec_ok(
            "proto",
            "deploy/client",
            &[
                "nghttp",
                "-n",
                "-s",
                "http://h2.proto.svc.cluster.local:8081/hello.txt",
            ],
        );
        assert!(out.contains("hello.txt") || out.contains("200"), "{out}");
    });

    steps.step("gRPC: unary with its trailer, and a server stream", || {
        // gRPC: unary with its trailer, and a server stream.
        let out = c.exec_ok(
            "proto",
            "deploy/client",
            &["python3", &grpc, "client", "grpc:50051"],
        );
        assert!(out.contains("reply echo:hello"), "{out}");
        assert!(out.contains("trailer kept"), "trailers lost: {out}");
        assert!(out.contains("stream 0,1,2,3,4"), "{out}");
    });

    steps.step("WebSocket upgrade and frames both ways", || {
        // WebSocket upgrade and frames both ways.
        let out = c.exec_ok(
            "proto",
            "deploy/client",
            &["python3", &ws, "client", "ws://ws:8765/"],
        );
        assert_eq!(out, "echo:m0\necho:m1\necho:m2\n");
        // The proxies parsed HTTP and gRPC (Istio's request metrics), and the
        // client's many connections to web rode one connection between proxies.
        for _ in 0..3 {
            c.exec_ok(
                "proto",
                "deploy/client",
                &["curl", "-sS", "--max-time", "10", "http://web:8080/again"],
            );
        }
        let metrics = c.exec_ok(
            "proto",
            "deploy/client",
            &["curl", "-sS", "http://127.0.0.1:15020/metrics"],
        );
        let http_ok = metrics.lines().any(|l| {
            l.starts_with("istio_requests_total{")
                && l.contains("destination_service=\"web.proto.svc.cluster.local\"")
                && l.contains("request_protocol=\"http\"")
                && l.contains("response_code=\"200\"")
                && l.contains("reporter=\"source\"")
        });
        assert!(http_ok, "no HTTP request metrics for web:\n{metrics}");
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("istio_requests_total{")
                    && l.contains("request_protocol=\"grpc\"")),
            "no gRPC request metrics:\n{metrics}"
        );
        let conns = c.exec_ok(
            "proto",
            "deploy/web",
            &["ss", "-Htn", "state", "established", "( sport = :15008 )"],
        );
        assert_eq!(
            conns.lines().count(),
            1,
            "expected one multiplexed connection from the client's proxy:\n{conns}"
        );
    });

    steps.finish();
}

#[test]
#[ignore = "needs root"]
fn a_server_that_speaks_first_is_not_stalled() {
    needs_root();
    let c = Cluster::up("serverfirst", &[]);
    // A banner before anything is read, on a port nothing declares.
    let banner = "import socket\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('', 2525)); s.listen()\nwhile True:\n    c, _ = s.accept(); c.sendall(b'220 ready\\r\\n'); c.close()\n";
    c.apply(&client("sf", true));
    c.apply(&app("sf", "smtp", 1, 2525, &["python3", "-c", banner], ""));
    c.wait_ready("sf", "client", 1);
    c.wait_ready("sf", "smtp", 1);
    let read = "import socket, time\nt = time.time(); s = socket.create_connection(('smtp', 2525), timeout=5)\nprint(s.recv(100).decode().strip(), round(time.time() - t, 3))\n";
    let out = c.exec_ok("sf", "deploy/client", &["python3", "-c", read]);
    let (text, secs) = out.trim().rsplit_once(' ').expect("banner and time");
    assert_eq!(text, "220 ready");
    let secs: f64 = secs.parse().unwrap();
    assert!(
        secs < 1.0,
        "banner took {secs}s: detection stalled a server-first protocol"
    );
}

#[test]
#[ignore = "needs root"]
fn idle_clients_of_a_client_first_destination_open_no_upstream_connections() {
    needs_root();
    let c = Cluster::up("idle", &[]);
    // A client-first server on a port nothing declares.
    c.apply(&client("idle", true));
    c.apply(&app(
        "idle",
        "quiet",
        1,
        7070,
        &["python3", "-m", "http.server", "7070"],
        "",
    ));
    c.wait_ready("idle", "client", 1);
    c.wait_ready("idle", "quiet", 1);
    // One silent client teaches the proxy that the server waits for the
    // client (no banner within a second); 40 more silent clients then get
    // no upstream connection each. The count is of the client proxy's
    // mTLS connections to the server's proxy.
    let script = "import socket, subprocess, time
first = socket.create_connection(('quiet', 7070)); time.sleep(1.8)
more = [socket.create_connection(('quiet', 7070)) for _ in range(40)]
time.sleep(0.8)
out = subprocess.run(['ss', '-Htn', 'state', 'established', '( dport = :15008 )'], capture_output=True, text=True).stdout
print(len([l for l in out.splitlines() if l.strip()]))
for s in more: s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')
codes = [s.recv(12).decode()[9:12] for s in more]
print(codes.count('200'))
";
    let out = c.exec_ok("idle", "deploy/client", &["python3", "-c", script]);
    let mut lines = out.lines();
    let upstream: usize = lines.next().unwrap_or("").trim().parse().expect(&out);
    let answered: usize = lines.next().unwrap_or("").trim().parse().expect(&out);
    assert!(
        upstream <= 2,
        "{upstream} upstream connections for 41 idle clients"
    );
    assert_eq!(
        answered, 40,
        "the clients that spoke late are served: {out}"
    );
}

#[test]
#[ignore = "needs root"]
fn redis_and_postgres_through_the_mesh() {
    needs_root();
    let c = Cluster::up("databases", &[]);
    let pg_bin = std::fs::read_dir("/usr/lib/postgresql")
        .expect("postgresql installed")
        .flatten()
        .map(|e| e.path().join("bin"))
        .find(|p| p.join("initdb").is_file())
        .expect("initdb")
        .display()
        .to_string();
    let pg_script = format!(
        "{pg_bin}/initdb -D \"$HOME/data\" -A trust -U postgres >/dev/null && echo 'host all all 0.0.0.0/0 trust' >> \"$HOME/data/pg_hba.conf\" && exec {pg_bin}/postgres -D \"$HOME/data\" -k \"$HOME\" -c listen_addresses='*' -p 5432"
    );
    c.apply(&client("db", true));
    c.apply(&app(
        "db",
        "redis",
        1,
        6379,
        &[
            "redis-server",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ],
        "",
    ));
    // postgres refuses to run as root: run it as the postgres user.
    let (uid, gid) = (id("-u"), id("-g"));
    let pg = app(
        "db",
        "postgres",
        1,
        5432,
        &["sh", "-c", &pg_script],
        &format!("      securityContext: {{runAsUser: {uid}, runAsGroup: {gid}}}"),
    );
    c.apply(&pg);
    c.wait_ready("db", "client", 1);
    c.wait_ready("db", "redis", 1);
    c.wait_ready("db", "postgres", 1);

    let out = c.exec_ok(
        "db",
        "deploy/client",
        &[
            "redis-cli",
            "-h",
            "redis",
            "-p",
            "6379",
            "set",
            "greeting",
            "through-the-mesh",
        ],
    );
    assert_eq!(out.trim(), "OK");
    let out = c.exec_ok(
        "db",
        "deploy/client",
        &[
            "redis-cli",
            "-h",
            "redis.db.svc.cluster.local",
            "-p",
            "6379",
            "get",
            "greeting",
        ],
    );
    assert_eq!(out.trim(), "through-the-mesh");

    let out = c.exec_ok(
        "db",
        "deploy/client",
        &[
            "psql",
            "-h",
            "postgres",
            "-U",
            "postgres",
            "-tAc",
            "create table t(x int); insert into t values (41),(1); select sum(x) from t",
        ],
    );
    assert!(out.trim().ends_with("42"), "{out}");
}

fn id(flag: &str) -> String {
    let out = std::process::Command::new("id")
        .args([flag, "postgres"])
        .output()
        .expect("id postgres");
    assert!(out.status.success(), "no postgres user: install postgresql");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
#[ignore = "needs root"]
fn declared_tcp_is_not_parsed_and_addresses_outside_the_mesh_pass_through() {
    needs_root();
    let c = Cluster::up("passthrough", &[]);
    let http = server("http_echo.py");
    c.apply(&client("pt", true));
    // HTTP behind a port declared opaque by its name: carried, not parsed.
    c.apply(
        &app("pt", "raw", 1, 8080, &["python3", &http, "8080"], "")
            .replace("name: main", "name: tcp-raw"),
    );
    c.apply(&app("pt", "web", 1, 8080, &["python3", &http, "8080"], ""));
    c.wait_ready("pt", "client", 1);
    c.wait_ready("pt", "raw", 1);
    c.wait_ready("pt", "web", 1);
    for svc in ["raw", "web"] {
        let out = c.exec_ok(
            "pt",
            "deploy/client",
            &[
                "curl",
                "-sS",
                "--max-time",
                "10",
                &format!("http://{svc}:8080/"),
            ],
        );
        assert!(out.starts_with(&format!("pod={svc}-")), "{out}");
    }
    let metrics = c.exec_ok(
        "pt",
        "deploy/client",
        &["curl", "-sS", "http://127.0.0.1:15020/metrics"],
    );
    let has = |metric: &str, svc: &str| {
        metrics.lines().any(|l| {
            l.starts_with(metric)
                && l.contains(&format!(
                    "destination_service=\"{svc}.pt.svc.cluster.local\""
                ))
        })
    };
    assert!(
        has("istio_tcp_connections_opened_total{", "raw"),
        "raw not carried as TCP:\n{metrics}"
    );
    assert!(
        !has("istio_requests_total{", "raw"),
        "a tcp- port was parsed as HTTP:\n{metrics}"
    );
    assert!(
        has("istio_requests_total{", "web"),
        "an http port was not parsed:\n{metrics}"
    );

    // The node's gateway (where the controller listens) is no mesh
    // address: a meshed app's connection to it passes through unchanged.
    let cmd = "openssl s_client -connect 10.244.0.1:15012 </dev/null 2>/dev/null | openssl x509 -noout -ext subjectAltName";
    let out = c.exec_ok("pt", "deploy/client", &["sh", "-c", cmd]);
    assert!(
        out.contains("URI:spiffe://cluster.local/ns/mesh-system/sa/mesh-controller"),
        "{out}"
    );

    // A pod's bootstrap token is readable by its proxy's UID alone.
    let pod = &c
        .pods()
        .into_iter()
        .find(|p| p.deployment == "web")
        .expect("web pod");
    let token = c.state.join("pods/pt").join(&pod.name).join("proxy/token");
    let meta = std::fs::metadata(&token).expect("token file");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.mode() & 0o777, 0o400);
    let as_uid = |uid: u32| {
        std::process::Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
                "cat",
            ])
            .arg(&token)
            .output()
            .expect("setpriv")
            .status
            .success()
    };
    assert!(as_uid(meta.uid()), "the proxy's UID cannot read its token");
    assert!(!as_uid(65534), "another user can read the token");
    assert!(
        !as_uid(meta.uid() + 1),
        "another pod's proxy can read the token"
    );
}
