//! The scenarios' manifests, applied with kubectl as users do.

/// An injected namespace: the Service of the server (its versions come
/// from [`web`]), a flaky server, a client.
pub const SHOP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: web, namespace: shop}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: flaky, namespace: shop}
data:
  # Fails two requests of three with a 500; counts every request.
  flaky: |
    #!/bin/sh
    n=$(cat /tmp/n 2>/dev/null || echo 0); n=$((n + 1)); echo $n > /tmp/n
    if [ $((n % 3)) -ne 0 ]; then
      printf 'Status: 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\nfail %s\n' $n
    else
      printf 'Content-Type: text/plain\r\n\r\nok %s\n' $n
    fi
---
apiVersion: v1
kind: Service
metadata: {name: flaky, namespace: shop}
spec:
  selector: {app: flaky}
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: flaky, namespace: shop}
spec:
  selector: {matchLabels: {app: flaky}}
  template:
    metadata: {labels: {app: flaky}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: local/tools:1
        imagePullPolicy: Never
        command: ["httpd", "-f", "-p", "8080", "-h", "/srv"]
        ports: [{containerPort: 8080, name: http}]
        volumeMounts: [{name: cgi, mountPath: /srv/cgi-bin}]
      volumes:
      - name: cgi
        configMap: {name: flaky, defaultMode: 0755}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: client, namespace: shop}
spec:
  selector: {matchLabels: {app: client}}
  template:
    metadata: {labels: {app: client}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: local/tools:1
        imagePullPolicy: Never
        command: ["sleep", "100000"]
"#;

/// The server in `version` (it answers its version).
pub fn web(version: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web-{version}, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: web, version: {version}}}}}
  template:
    metadata: {{labels: {{app: web, version: {version}}}}}
    spec:
      serviceAccountName: web
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: local/tools:1
        imagePullPolicy: Never
        command: ["sh", "-c", "mkdir -p /tmp/www && echo {version} > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]
        ports: [{{containerPort: 8080, name: http}}]
        readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 2}}
"#
    )
}

/// The canary's subsets.
pub const SUBSETS: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#;

/// The canary split, `v1` percent to v1 and the rest to v2.
pub fn split(v1: u32) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: shop}}
spec:
  hosts: [web]
  http:
  - route:
    - {{destination: {{host: web, subset: v1}}, weight: {v1}}}
    - {{destination: {{host: web, subset: v2}}, weight: {v2}}}
"#,
        v2 = 100 - v1
    )
}

/// Retries on 5xx for the flaky server.
pub const RETRIES: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: flaky, namespace: shop}
spec:
  hosts: [flaky]
  http:
  - route: [{destination: {host: flaky}}]
    retries: {attempts: 3, retryOn: 5xx}
"#;

/// A VirtualService with a negative weight: refused by the webhook.
pub const INVALID: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken, namespace: shop}
spec:
  hosts: [web]
  http:
  - route:
    - {destination: {host: web}, weight: -5}
"#;

/// A Job that calls the server once, then ends.
pub const JOB: &str = r#"
apiVersion: batch/v1
kind: Job
metadata: {name: report, namespace: shop}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: local/tools:1
        imagePullPolicy: Never
        command: ["curl", "-sf", "-m", "10", "http://web.shop.svc.cluster.local/"]
"#;

/// Namespaces the injector must leave alone: one that says nothing (and
/// a pod that says nothing), one that opts out (and a pod that asks).
pub const OPTED_OUT: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: v1
kind: Pod
metadata: {name: bare, namespace: plain}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: app, image: local/tools:1, imagePullPolicy: Never, command: ["sleep", "100000"]}
---
apiVersion: v1
kind: Namespace
metadata: {name: optout, labels: {istio-injection: disabled}}
---
apiVersion: v1
kind: Pod
metadata: {name: asks, namespace: optout, labels: {sidecar.istio.io/inject: "true"}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: app, image: local/tools:1, imagePullPolicy: Never, command: ["sleep", "100000"]}
"#;

/// A Deployment in a namespace that says nothing: injected by name.
pub const SOLO: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: solo, namespace: plain}
spec:
  selector: {matchLabels: {app: solo}}
  template:
    metadata: {labels: {app: solo}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: app, image: local/tools:1, imagePullPolicy: Never, command: ["sleep", "100000"]}
"#;

/// A route to a subset that no DestinationRule defines: valid alone, an
/// error across resources.
pub const UNKNOWN_SUBSET: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ghost, namespace: shop}
spec:
  hosts: [web]
  http:
  - route: [{destination: {host: web, subset: v9}}]
"#;

/// A connection pool for the flaky server: written after a failover.
pub const FLAKY_POLICY: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: flaky, namespace: shop}
spec:
  host: flaky
  trafficPolicy:
    connectionPool: {http: {http1MaxPendingRequests: 100}}
"#;

/// A user who may apply the CRDs and the namespace, and read what install
/// reads, but nothing else: its install stops part-way.
pub const LIMITED_INSTALLER: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: installer, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: limited-installer}
rules:
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "create", "patch"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: limited-installer}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: limited-installer}
subjects: [{kind: ServiceAccount, name: installer, namespace: default}]
"#;

/// A Service without a selector, and the Endpoints a user writes for it:
/// the pod `name` at `ip`, port `http` on 8080.
pub fn selectorless(name: &str, ip: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: legacy, namespace: shop}}
spec:
  ports: [{{name: http, port: 80, protocol: TCP}}]
---
apiVersion: v1
kind: Endpoints
metadata: {{name: legacy, namespace: shop}}
subsets:
- addresses: [{{ip: "{ip}", targetRef: {{kind: Pod, name: {name}, namespace: shop}}}}]
  ports: [{{name: http, port: 8080, protocol: TCP}}]
"#
    )
}

/// An AuthorizationPolicy whose second principal names a ServiceAccount
/// that does not exist.
pub const MISNAMED_PRINCIPAL: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-callers, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/shop/sa/web", "cluster.local/ns/shop/sa/clinet"]
"#;
