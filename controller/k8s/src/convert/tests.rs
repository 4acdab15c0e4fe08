use super::*;

fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

fn pod_json(ready: &str) -> Pod {
    from_json(serde_json::json!({
        "metadata": {
            "name": "web-6d4cf56db6-x7k2p", "namespace": "shop",
            "labels": {"app": "web", "pod-template-hash": "6d4cf56db6"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "web-6d4cf56db6", "uid": "u", "controller": true}],
        },
        "spec": {
            "serviceAccountName": "web",
            "containers": [
                {"name": "app", "ports": [{"name": "http", "containerPort": 8080}]},
                {"name": "mesh-proxy", "ports": [{"name": "mesh-health", "containerPort": 15020}]},
            ],
        },
        "status": {"phase": "Running", "podIP": "10.244.0.7",
            "conditions": [{"type": "Ready", "status": ready}]},
    }))
}

#[test]
fn a_pod_is_read_with_its_workload_identity_and_app_ports() {
    let p = pod(&pod_json("True")).unwrap();
    assert_eq!(p.owner, "web");
    assert_eq!(p.service_account, "web");
    assert!(p.meshed && p.ready);
    assert_eq!(p.ip, Some("10.244.0.7".parse().unwrap()));
    assert_eq!(p.named_ports.get("http"), Some(&8080));
    assert!(!p.named_ports.contains_key("mesh-health"));
}

#[test]
fn a_pod_not_ready_is_no_endpoint_and_the_default_account_is_named() {
    let mut k = pod_json("False");
    k.spec.as_mut().unwrap().service_account_name = None;
    let p = pod(&k).unwrap();
    assert!(!p.ready);
    assert_eq!(p.service_account, "default");
}

#[test]
fn headless_services_have_no_cluster_address() {
    let svc = |ip: &str| -> Service {
        from_json(serde_json::json!({
            "metadata": {"name": "db", "namespace": "shop"},
            "spec": {"clusterIP": ip, "selector": {"app": "db"},
                "ports": [{"port": 5432, "targetPort": "pg"}]},
        }))
    };
    assert!(service(&svc("None")).is_none());
    let s = service(&svc("10.96.0.20")).unwrap();
    assert_eq!(
        s.ports[0].target_port,
        api::cluster::TargetPort::Name("pg".into())
    );
}

fn dynamic(spec: serde_json::Value) -> DynamicObject {
    from_json(serde_json::json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "shop", "generation": 3,
            "managedFields": [{"manager": "kubectl"}]},
        "spec": spec,
        "status": {"conditions": []},
    }))
}

#[test]
fn a_valid_object_is_accepted_whatever_the_server_added() {
    let (object, verdict) = mesh_object(
        &dynamic(
            serde_json::json!({"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}),
        ),
        "VirtualService",
    );
    assert!(object.is_some(), "{verdict:?}");
    let status = verdict.status();
    assert_eq!(status["conditions"][0]["status"], "True");
    assert_eq!(status["observedGeneration"], 3);
}

#[test]
fn an_invalid_object_is_refused_with_its_field_path_in_the_status() {
    let (object, verdict) = mesh_object(
        &dynamic(
            serde_json::json!({"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}, "weight": -5}]}]}),
        ),
        "VirtualService",
    );
    assert!(object.is_none());
    let status = verdict.status();
    assert_eq!(status["conditions"][0]["status"], "False");
    let message = status["conditions"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("spec.http[0].route[0].weight"),
        "{message}"
    );
}

fn job_pod(restart: &str, app_exit: Option<i32>) -> Pod {
    let state = match app_exit {
        Some(code) => serde_json::json!({"terminated": {"exitCode": code}}),
        None => serde_json::json!({"running": {}}),
    };
    from_json(serde_json::json!({
        "metadata": {"name": "report-x1", "namespace": "shop"},
        "spec": {"restartPolicy": restart, "containers": [{"name": "app"}, {"name": "mesh-proxy"}]},
        "status": {"phase": "Running", "podIP": "10.244.0.9", "containerStatuses": [
            {"name": "app", "ready": false, "restartCount": 0, "image": "i", "imageID": "", "state": state},
            {"name": "mesh-proxy", "ready": true, "restartCount": 0, "image": "i", "imageID": "", "state": {"running": {}}},
        ]},
    }))
}

#[test]
fn a_jobs_proxy_is_told_to_leave_once_the_app_is_done_for_good() {
    assert!(pod(&job_pod("Never", Some(1))).unwrap().app_exited);
    assert!(pod(&job_pod("OnFailure", Some(0))).unwrap().app_exited);
    // It restarts after a failure; it has not started; a Deployment's pod.
    assert!(!pod(&job_pod("OnFailure", Some(2))).unwrap().app_exited);
    assert!(!pod(&job_pod("Never", None)).unwrap().app_exited);
    assert!(!pod(&job_pod("Always", Some(0))).unwrap().app_exited);
}
