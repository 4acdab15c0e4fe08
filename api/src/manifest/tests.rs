use super::*;

const GOOD: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: orders, namespace: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: orders, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: orders}}
  template:
    metadata: {labels: {app: orders, version: v1}}
    spec:
      serviceAccountName: orders
      containers:
      - name: app
        image: ignored
        command: ["python3", "-m", "http.server", "8080"]
        ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: orders, namespace: shop}
spec:
  selector: {app: orders}
  ports: [{name: http, port: 80, targetPort: 8080}]
"#;

#[test]
fn reads_every_supported_kind() {
    let (docs, errors) = parse("app.yaml", GOOD);
    assert!(errors.is_empty(), "{errors:?}");
    let kinds: Vec<_> = docs.iter().map(|d| d.object.kind()).collect();
    assert_eq!(
        kinds,
        ["Namespace", "ServiceAccount", "Deployment", "Service"]
    );
    assert_eq!(docs[2].index, 3);
    assert_eq!(docs[2].object.namespace(), "shop");
    assert_eq!(docs[0].object.namespace(), "");
}

fn one_error(text: &str) -> ManifestError {
    let (_, errors) = parse("bad.yaml", text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    errors.into_iter().next().unwrap()
}

#[test]
fn a_bad_document_is_rejected_alone() {
    let text = format!("{GOOD}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\n");
    let (docs, errors) = parse("app.yaml", &text);
    assert_eq!(docs.len(), 4);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].document, 5);
    assert_eq!(errors[0].field, "kind");
    assert!(
        errors[0]
            .to_string()
            .starts_with("app.yaml:5 Pod/p: kind: unknown kind \"Pod\"")
    );
}

#[test]
fn names_the_field_of_a_type_error() {
    let e = one_error(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports:\n  - port: eighty\n",
    );
    assert_eq!(e.field, "spec.ports[0].port");
    assert_eq!(e.object.as_deref(), Some("Service/s"));
}

#[test]
fn missing_command_names_the_container() {
    let text = GOOD.replace(
        "command: [\"python3\", \"-m\", \"http.server\", \"8080\"]",
        "args: [x]",
    );
    let e = one_error(&text);
    assert_eq!(e.field, "spec.template.spec.containers[0].command");
    assert_eq!(e.object.as_deref(), Some("Deployment/orders"));
    assert_eq!(e.document, 3);
}

#[test]
fn selector_must_match_template() {
    let text = GOOD.replace("labels: {app: orders, version: v1}", "labels: {app: other}");
    assert_eq!(one_error(&text).field, "spec.template.metadata.labels");
}

#[test]
fn malformed_yaml_and_missing_fields() {
    assert!(
        one_error("kind: [unclosed\n")
            .message
            .starts_with("malformed YAML")
    );
    assert_eq!(one_error("kind: Service\n").field, "apiVersion");
    assert_eq!(
        one_error("apiVersion: v1\nkind: Namespace\nmetadata: {}\n").field,
        "metadata.name"
    );
    assert_eq!(
        one_error("apiVersion: apps/v1beta1\nkind: Deployment\nmetadata: {name: d}\n").field,
        "apiVersion"
    );
    assert_eq!(
        one_error("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: []}\n").field,
        "spec.ports"
    );
    assert_eq!(
        one_error("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: [{port: 1}, {port: 2, name: b}]\n").field,
        "spec.ports[0].name"
    );
    assert_eq!(
        one_error("apiVersion: v1\nkind: Namespace\nmetadata: {name: Bad_Name}\n").field,
        "metadata.name"
    );
}

#[test]
fn traffic_annotations_are_checked() {
    let text = GOOD.replace(
        "metadata: {labels: {app: orders, version: v1}}",
        "metadata:\n      labels: {app: orders, version: v1}\n      annotations: {traffic.sidecar.istio.io/excludeOutboundPorts: \"53,x\"}",
    );
    let e = one_error(&text);
    assert_eq!(
        e.field,
        "spec.template.metadata.annotations[\"traffic.sidecar.istio.io/excludeOutboundPorts\"]"
    );
    assert!(e.message.contains("\"x\" is not a port"), "{}", e.message);
}

#[test]
fn a_clusters_deployment_runs_its_image_and_needs_no_command() {
    let deployment = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "managedFields": []},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "web:1"}]},
            },
        },
        "status": {"replicas": 1},
    });
    assert!(super::read(deployment.clone()).is_ok());
    // The same as a file for the local runtime needs its command.
    let text = serde_yaml_ng::to_string(&deployment).unwrap();
    let (_, errors) = super::parse("web.yaml", &text);
    assert!(
        errors.iter().any(|e| e.field.ends_with(".command")),
        "{errors:?}"
    );
}
