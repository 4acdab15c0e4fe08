//! Istio's standard metrics as both proxies report them, with every label
//! filled, checked against what real clients sent: curl (HTTP/1.1 with a
//! body), a gRPC client (unary and a server stream), a raw TCP client,
//! and a client outside the mesh.

use e2e::metrics::sum;
use std::time::Duration;

use e2e::{Cluster, app, client, http_and_tcp_app, needs_root, server, versioned, wait_for};

const NS: &str = "tel";
const LIMIT: Duration = Duration::from_secs(15);

fn metrics(c: &Cluster, deploy: &str) -> String {
    c.deploy_metrics(NS, deploy)
}

#[test]
#[ignore = "needs root"]
fn both_reporters_fill_every_label() {
    needs_root();
    let c = Cluster::up("telemetry", &[]);
    let grpc = server("grpc_echo.py");
    c.apply(&client(NS, true));
    c.apply(&client(NS, false));
    c.apply(&versioned(
        NS,
        "orders",
        8080,
        &[("v1", 1, ""), ("v2", 1, "")],
    ));
    c.apply(&http_and_tcp_app(NS, "web"));
    c.apply(&app(
        NS,
        "grpc",
        1,
        50051,
        &["python3", &grpc, "server", "50051"],
        "",
    ));
    for d in [
        "client",
        "outsider",
        "orders-v1",
        "orders-v2",
        "web",
        "grpc",
    ] {
        c.wait_ready(NS, d, 1);
    }
    let principal = format!("spiffe://cluster.local/ns/{NS}/sa/default");
    let orders = format!("orders.{NS}.svc.cluster.local");

    let mut steps = e2e::Steps::new();
    steps.step(
        "HTTP: both reporters, every label, exact counts and sizes",
        || {
            let body = "b".repeat(1500);
            let mut downloaded = 0.0;
            for i in 0..10 {
                let out = c.exec_ok(
                    NS,
                    "deploy/client",
                    &[
                        "curl",
                        "-sS",
                        "--max-time",
                        "10",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code} %{size_download}",
                        "--data-binary",
                        &body,
                        &format!("http://orders:8080/pay/{i}"),
                    ],
                );
                let (code, size) = out.trim().split_once(' ').expect("code and size");
                assert_eq!(code, "200", "{out}");
                downloaded += size.parse::<f64>().expect("size");
            }
            let common = [
                ("source_workload", "client"),
                ("source_app", "client"),
                ("source_canonical_service", "client"),
                ("source_canonical_revision", "latest"),
                ("source_workload_namespace", NS),
                ("source_principal", principal.as_str()),
                ("source_cluster", "Kubernetes"),
                ("destination_service", orders.as_str()),
                ("destination_service_name", "orders"),
                ("destination_service_namespace", NS),
                ("destination_app", "orders"),
                ("destination_canonical_service", "orders"),
                ("destination_workload_namespace", NS),
                ("request_protocol", "http"),
                ("response_code", "200"),
                ("grpc_response_status", ""),
                ("response_flags", "-"),
            ];
            let client_side = wait_for("ten requests counted by the client", LIMIT, || {
                let m = metrics(&c, "client");
                let want = [
                    ("reporter", "source"),
                    ("destination_service_name", "orders"),
                ];
                match sum(&m, "istio_requests_total", &want) {
                    10.0 => Ok(m),
                    n => Err(format!("{n}:\n{m}")),
                }
            });
            let mut served = 0.0;
            for v in ["v1", "v2"] {
                let workload = format!("orders-{v}");
                let mut want = common.to_vec();
                want.extend([
                    ("destination_workload", workload.as_str()),
                    ("destination_version", v),
                    ("destination_canonical_revision", v),
                    (
                        "destination_principal",
                        "spiffe://cluster.local/ns/tel/sa/orders",
                    ),
                ]);
                let server_side = metrics(&c, &workload);
                let mut dst = want.clone();
                dst.push(("reporter", "destination"));
                dst.push(("connection_security_policy", "mutual_tls"));
                let n = sum(&server_side, "istio_requests_total", &dst);
                let mut src = want.clone();
                src.push(("reporter", "source"));
                src.push(("connection_security_policy", "unknown"));
                let m = sum(&client_side, "istio_requests_total", &src);
                assert_eq!(
                    n, m,
                    "{workload}: the two reporters disagree\n{server_side}"
                );
                assert_eq!(
                    sum(
                        &server_side,
                        "istio_request_duration_milliseconds_count",
                        &dst
                    ),
                    n
                );
                served += n;
            }
            assert_eq!(served, 10.0, "requests to orders:\n{client_side}");
            // Sizes: each request carried its 1500-byte body and a head of
            // less than a kilobyte; each response its body and head.
            let src = [
                ("reporter", "source"),
                ("destination_service_name", "orders"),
            ];
            let up = sum(&client_side, "istio_request_bytes_sum", &src);
            assert!((15_000.0..25_000.0).contains(&up), "request bytes {up}");
            assert_eq!(sum(&client_side, "istio_request_bytes_count", &src), 10.0);
            let down = sum(&client_side, "istio_response_bytes_sum", &src);
            assert!(
                down >= downloaded && down < downloaded + 10_000.0,
                "response bytes {down}, bodies {downloaded}"
            );
        },
    );

    steps.step("gRPC: messages each way and the status", || {
        let out = c.exec_ok(
            NS,
            "deploy/client",
            &["python3", &grpc, "client", "grpc:50051"],
        );
        assert!(out.contains("stream 0,1,2,3,4"), "{out}");
        for (deploy, reporter) in [("grpc", "destination"), ("client", "source")] {
            let m = metrics(&c, deploy);
            let want = [
                ("reporter", reporter),
                ("request_protocol", "grpc"),
                ("grpc_response_status", "0"),
                ("destination_service_name", "grpc"),
                ("source_workload", "client"),
            ];
            assert_eq!(
                sum(&m, "istio_requests_total", &want),
                2.0,
                "{deploy}:\n{m}"
            );
            // Unary: one each way; the stream: one request, five replies.
            assert_eq!(sum(&m, "istio_request_messages_total", &want), 2.0, "{m}");
            assert_eq!(sum(&m, "istio_response_messages_total", &want), 6.0, "{m}");
        }
    });

    steps.step("TCP: connections and bytes, both reporters", || {
        for i in 0..3 {
            c.tcp_send(NS, "deploy/client", "web", 9091, &format!("tcp-marker-{i}"));
        }
        let web = format!("web.{NS}.svc.cluster.local");
        let want = |reporter| {
            [
                ("reporter", reporter),
                ("source_workload", "client"),
                ("source_app", "client"),
                ("destination_workload", "web"),
                ("destination_service", web.as_str()),
                ("destination_service_name", "web"),
                ("request_protocol", "tcp"),
                (
                    "connection_security_policy",
                    if reporter == "source" {
                        "unknown"
                    } else {
                        "mutual_tls"
                    },
                ),
            ]
        };
        let server_side = wait_for("three closed connections at web", LIMIT, || {
            let m = metrics(&c, "web");
            match sum(
                &m,
                "istio_tcp_connections_closed_total",
                &want("destination"),
            ) {
                3.0 => Ok(m),
                n => Err(format!("{n}:\n{m}")),
            }
        });
        let d = want("destination");
        assert_eq!(
            sum(&server_side, "istio_tcp_connections_opened_total", &d),
            3.0
        );
        assert!(sum(&server_side, "istio_tcp_received_bytes_total", &d) >= 3.0 * 12.0);
        let client_side = metrics(&c, "client");
        assert_eq!(
            sum(
                &client_side,
                "istio_tcp_connections_opened_total",
                &want("source")
            ),
            3.0,
            "{client_side}"
        );
    });

    steps.step("a client outside the mesh is unknown, in plaintext", || {
        let out = c.exec_ok(
            NS,
            "deploy/outsider",
            &[
                "curl",
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "http://web:8080/",
            ],
        );
        assert_eq!(out.trim(), "200");
        let m = metrics(&c, "web");
        let want = [
            ("reporter", "destination"),
            ("source_workload", "unknown"),
            ("source_principal", "unknown"),
            ("destination_workload", "web"),
            ("destination_app", "web"),
            ("connection_security_policy", "none"),
            ("response_code", "200"),
        ];
        assert_eq!(sum(&m, "istio_requests_total", &want), 1.0, "{m}");
    });

    steps.step("meshctl stat and edges, from the proxies' metrics", || {
        // A steady 8 requests per second to orders while stat measures.
        let load = "import time, urllib.request\nstart = time.time()\nfor i in range(64):\n    time.sleep(max(0.0, start + i / 8 - time.time()))\n    urllib.request.urlopen('http://orders:8080/', timeout=5).read()\n";
        let mut child = c.spawn_exec(NS, "deploy/client", &["python3", "-c", load]);
        std::thread::sleep(Duration::from_secs(1));
        let out = c.meshctl_top(&["stat", "deploy", "-n", NS, "--window", "4s", "-o", "json"]);
        let _ = child.wait();
        assert!(out.status.success(), "{}", e2e::text(&out.stderr));
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let row = |name: &str| {
            rows.as_array()
                .and_then(|r| r.iter().find(|r| r["name"] == name))
                .unwrap_or_else(|| panic!("no {name} in {rows}"))
                .clone()
        };
        let orders: f64 = ["orders-v1", "orders-v2"]
            .iter()
            .map(|d| row(d)["rps"].as_f64().expect("rps"))
            .sum();
        assert!((6.0..10.0).contains(&orders), "orders at {orders} rps, sent 8: {rows}");
        for d in ["orders-v1", "orders-v2"] {
            let r = row(d);
            assert_eq!(r["success_rate"], 1.0, "{r}");
            assert_eq!(r["mtls_share"], 1.0, "{r}");
            assert!(r["latency_p99_ms"].as_f64().is_some_and(|p| p < 1000.0), "{r}");
        }
        let out = c.meshctl_top(&["edges", "deploy", "-n", NS, "-o", "json"]);
        assert!(out.status.success(), "{}", e2e::text(&out.stderr));
        let edges: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let edge = |src: &str, dst: &str| {
            edges
                .as_array()
                .and_then(|e| e.iter().find(|e| e["src"] == src && e["dst"] == dst))
                .unwrap_or_else(|| panic!("no edge {src} -> {dst} in {edges}"))
                .clone()
        };
        let e = edge("client", "orders-v1");
        assert_eq!(e["secured"], true);
        assert_eq!(e["client_id"], principal.as_str());
        assert_eq!(e["server_id"], "spiffe://cluster.local/ns/tel/sa/orders");
        assert_eq!(edge("client", "web")["secured"], true, "TCP to web");
        assert_eq!(edge("unknown", "web")["secured"], false, "the outsider");
        // The table form names the same.
        let out = c.meshctl_top(&["edges", "deploy", "-n", NS]);
        let table = e2e::text(&out.stdout);
        assert!(table.contains("SECURED") && table.contains("orders-v2"), "{table}");
    });

    steps.step("meshctl stat route: the routes a VirtualService names", || {
        c.apply(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: orders, namespace: tel}\nspec:\n  hosts: [orders]\n  http:\n  - name: checkout\n    match: [{uri: {prefix: /checkout}}]\n    route: [{destination: {host: orders}}]\n  - route: [{destination: {host: orders}}]\n",
        );
        wait_for("the client's proxy to route by name", LIMIT, || {
            c.exec_ok(NS, "deploy/client", &["curl", "-sS", "-o", "/dev/null", "http://orders:8080/checkout/probe"]);
            let m = metrics(&c, "client");
            (sum(&m, "mesh_route_requests_total", &[("route", "checkout")]) > 0.0)
                .then_some(())
                .ok_or_else(|| "not yet".to_string())
        });
        let stat = c.spawn_top(&["stat", "route", "-n", NS, "--window", "8s", "-o", "json"]);
        std::thread::sleep(Duration::from_millis(1500));
        // 20 to /checkout (5 answered 500), 10 elsewhere.
        let load = "import urllib.request, urllib.error\nfor i in range(30):\n    path = '/checkout/%d' % i if i < 20 else '/other'\n    if i < 20 and i % 4 == 0:\n        path += '?status=500'\n    try:\n        urllib.request.urlopen('http://orders:8080' + path, timeout=5).read()\n    except urllib.error.HTTPError:\n        pass\n";
        c.exec_ok(NS, "deploy/client", &["python3", "-c", load]);
        let out = stat.wait_with_output().expect("stat route");
        assert!(out.status.success(), "{}", e2e::text(&out.stderr));
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let row = |route: &str| {
            rows.as_array()
                .and_then(|r| {
                    r.iter().find(|r| {
                        r["route"] == route
                            && r["service"] == format!("orders.{NS}.svc.cluster.local")
                    })
                })
                .unwrap_or_else(|| panic!("no route {route} in {rows}"))
                .clone()
        };
        let checkout = row("checkout");
        assert_eq!(checkout["success_rate"], 0.75, "{checkout}");
        assert!(checkout["rps"].as_f64().is_some_and(|r| r > 0.0), "{checkout}");
        assert!(checkout["latency_p99_ms"].as_f64().is_some(), "{checkout}");
        assert_eq!(row("default")["success_rate"], 1.0, "{rows}");
        // What a Prometheus cannot answer is refused, not ignored.
        for args in [&["stat", "route"][..], &["top", "deploy/orders-v1"][..]] {
            let out = c.meshctl_top(&[args, &["-n", NS, "--prometheus", "http://127.0.0.1:1"]].concat());
            assert!(!out.status.success(), "{args:?}");
            assert!(e2e::text(&out.stderr).contains("--prometheus:"), "{}", e2e::text(&out.stderr));
        }
    });

    steps.step("meshctl tap and top: live requests, filtered", || {
        // 6 seconds of requests to orders: /tap-ok, and /tap-fail answered 500.
        let load = "import time, urllib.request, urllib.error\nstart = time.time()\nfor i in range(60):\n    time.sleep(max(0.0, start + i / 10 - time.time()))\n    path = '/tap-fail?status=500' if i % 3 == 0 else '/tap-ok'\n    try:\n        urllib.request.urlopen('http://orders:8080' + path, data=b'secret-body', timeout=5).read()\n    except urllib.error.HTTPError:\n        pass\n";
        let mut child = c.spawn_exec(NS, "deploy/client", &["python3", "-c", load]);
        std::thread::sleep(Duration::from_millis(500));
        let out = c.meshctl_top(&[
            "tap", "deploy/orders-v1", "-n", NS, "--path", "/tap-", "--status", "500",
            "--direction", "inbound", "--max", "3", "--duration", "5s", "-o", "json",
        ]);
        assert!(out.status.success(), "{}", e2e::text(&out.stderr));
        let lines: Vec<serde_json::Value> = e2e::text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        for e in &lines {
            assert_eq!(e["status"], 500, "{e}");
            assert_eq!(e["method"], "POST", "{e}");
            assert!(e["path"].as_str().unwrap().starts_with("/tap-fail"), "{e}");
            assert_eq!(e["source"], "client", "{e}");
            assert_eq!(e["destination"], "orders-v1", "{e}");
            assert_eq!(e["tls"], true, "{e}");
            assert!(e["headers"].as_array().is_some_and(|h| !h.is_empty()), "{e}");
            assert!(!e.to_string().contains("secret-body"), "a body leaked: {e}");
        }
        let out = c.meshctl_top(&[
            "top", "deploy/orders-v2", "-n", NS, "--direction", "inbound", "--duration", "3s",
            "-o", "json",
        ]);
        let _ = child.wait();
        assert!(out.status.success(), "{}", e2e::text(&out.stderr));
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let row = |path: &str| {
            rows.as_array()
                .and_then(|r| r.iter().find(|r| r["path"] == path))
                .unwrap_or_else(|| panic!("no {path} in {rows}"))
                .clone()
        };
        let (ok, fail) = (row("/tap-ok"), row("/tap-fail"));
        assert_eq!(ok["success_rate"], 1.0, "{ok}");
        assert_eq!(fail["success_rate"], 0.0, "{fail}");
        assert_eq!(ok["source"], "client");
        assert!(ok["count"].as_u64().unwrap() >= 2, "{ok}");
    });

    steps.finish();
}
