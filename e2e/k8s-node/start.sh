#!/usr/bin/env bash
# Starts a real single-node Kubernetes 1.20.2 (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kube-proxy, containerd CRI, bridge CNI) inside its own network namespace
# ($NODE_NETNS) and a private mount namespace, like a "kind" node without a container engine.
# Nothing is added to the host's network stack: no interface, address, route or iptables rule in
# the root namespace. The apiserver is reachable from the host at https://127.0.0.1:$HOST_API_PORT
# through a socat pair over a unix socket; `kubectl port-forward` works for reaching pods.
# Usage: cargo xtask node start (BIN=dir-with-binaries IMG=dir-with-images RUN=run-dir); stop with
# cargo xtask node stop. Derived from the workplace's recipe (../shared/k8s-node/start.sh).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/env.sh"
HOST_API_PORT=${HOST_API_PORT:-$API_PORT}
t0=$(date +%s); step() { echo "[start $(( $(date +%s) - t0 ))s] $*"; }
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
  [ -x "$BIN/$b" ] || { echo "missing $BIN/$b (run build.sh)"; exit 1; }; done
for b in containerd ctr runc etcd socat iptables openssl dnsmasq /usr/bin/python3; do command -v $b >/dev/null || { echo "missing $b (run build.sh)"; exit 1; }; done
[ -f "$IMG/pause.tar" ] && [ -f "$IMG/tools.tar" ] || { echo "no images in $IMG: run cargo xtask node images"; exit 1; }
if ip netns list | grep -qw "$NODE_NETNS" || [ -e "$RUN/ns/mnt" ]; then
  echo "node already (partly) running: run stop.sh first (RUN=$RUN NODE_NETNS=$NODE_NETNS)"; exit 1; fi
mkdir -p "$RUN"/{ns,pki,etcd,containerd,cni/net.d,var-log,var-lib-cni,kubelet,logs,pids}
: > "$RUN/created-host-paths"

step "host state snapshot (compared by stop.sh)"
iptables-save 2>/dev/null | grep -v '^#' > "$RUN/host-iptables.before" || true
ip -o link | awk -F': ' '{print $2}' | sort > "$RUN/host-links.before"
for d in /sys/fs/cgroup/*/; do for c in kubepods k8s.io; do [ -e "$d$c" ] || echo "$d$c"; done; done > "$RUN/cgroups-to-remove"
sysctl -n net.ipv4.ip_forward vm.overcommit_memory kernel.panic kernel.panic_on_oops > "$RUN/host-sysctl.before"

step "network namespace $NODE_NETNS (lo + node IP $NODE_IP on lo; no link to the host)"
ip netns add "$NODE_NETNS"
ip -n "$NODE_NETNS" link set lo up
ip -n "$NODE_NETNS" addr add "$NODE_IP/32" dev lo
step "private mount namespace pinned at $MNTNS (tmpfs /run; /var/log and /var/lib/cni bound to $RUN)"
mount --bind "$RUN/ns" "$RUN/ns"; mount --make-private "$RUN/ns"; touch "$MNTNS"
unshare --mount="$MNTNS" --propagation private true
# /var/lib/cni is where libcni keeps its result cache (not configurable in containerd 1.6)
[ -d /var/lib/cni ] || { mkdir -p /var/lib/cni; echo /var/lib/cni >> "$RUN/created-host-paths"; }
in_node sh -c "mount -t tmpfs -o mode=755 tmpfs /run && mount --bind '$RUN/var-log' /var/log && mount --bind '$RUN/var-lib-cni' /var/lib/cni"
# pod -> node -> pod through a ClusterIP on the same bridge needs bridged frames to see iptables
in_node sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.ipv4.ip_forward=1

# run_bg NAME CMD...: start CMD inside the node namespaces, in its own session, pid in $RUN/pids/NAME
run_bg() { local n=$1; shift; setsid nsenter --mount="$MNTNS" --net=/run/netns/"$NODE_NETNS" -- "$@" \
         >"$RUN/logs/$n.log" 2>&1 </dev/null & echo $! > "$RUN/pids/$n"; }
wait_for() { local what=$1 n=$2; shift 2; for _ in $(seq 1 "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
             echo "timeout waiting for $what"; return 1; }

step "PKI (CA, apiserver serving cert, apiserver->kubelet client cert, SA keys, admin token)"
cd "$RUN/pki"
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 -subj "/CN=meshnode-ca" 2>/dev/null
cat > san.ext <<EOF
subjectAltName=IP:127.0.0.1,IP:$NODE_IP,IP:${SVC_CIDR%.0/*}.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth
EOF
openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -extfile san.ext -out apiserver.crt 2>/dev/null
printf 'extendedKeyUsage=clientAuth\n' > client.ext
openssl req -newkey rsa:2048 -nodes -keyout kubelet-client.key -out kubelet-client.csr -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" 2>/dev/null
openssl x509 -req -in kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -extfile client.ext -out kubelet-client.crt 2>/dev/null
openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "$TOKEN,admin,1000,\"system:masters\"" > tokens.csv; chmod 600 tokens.csv ./*.key
cd "$RUN"
# one kubeconfig for the host (through the forwarder) and for the node components (direct)
kubectl config set-cluster local --server=https://127.0.0.1:$API_PORT --certificate-authority="$RUN/pki/ca.crt" --embed-certs >/dev/null
kubectl config set-credentials admin --token="$TOKEN" >/dev/null
kubectl config set-context local --cluster=local --user=admin >/dev/null
kubectl config use-context local >/dev/null
if [ "$HOST_API_PORT" != "$API_PORT" ]; then
  sed "s#https://127.0.0.1:$API_PORT#https://127.0.0.1:$HOST_API_PORT#" "$KUBECONFIG" > "$RUN/kubeconfig.host"
  NODE_KC="$KUBECONFIG"; export KUBECONFIG="$RUN/kubeconfig.host"
else NODE_KC="$KUBECONFIG"; fi

step "etcd"
run_bg etcd etcd --name meshnode --data-dir "$RUN/etcd" --listen-client-urls http://127.0.0.1:2379 \
  --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
  --initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster meshnode=http://127.0.0.1:2380
wait_for etcd 30 in_node curl -sf -m 2 http://127.0.0.1:2379/health

step "kube-apiserver"
run_bg apiserver "$BIN/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 --secure-port=$API_PORT \
  --bind-address=0.0.0.0 --advertise-address=$NODE_IP \
  --tls-cert-file="$RUN/pki/apiserver.crt" --tls-private-key-file="$RUN/pki/apiserver.key" \
  --client-ca-file="$RUN/pki/ca.crt" --token-auth-file="$RUN/pki/tokens.csv" \
  --kubelet-client-certificate="$RUN/pki/kubelet-client.crt" --kubelet-client-key="$RUN/pki/kubelet-client.key" \
  --authorization-mode=RBAC --allow-privileged=true --enable-aggregator-routing=true \
  --kubelet-preferred-address-types=InternalIP \
  --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$RUN/pki/sa.pub" \
  --service-account-signing-key-file="$RUN/pki/sa.key" --service-cluster-ip-range=$SVC_CIDR
wait_for apiserver 120 in_node curl -sf -m 2 --cacert "$RUN/pki/ca.crt" -H "Authorization: Bearer $TOKEN" https://127.0.0.1:$API_PORT/readyz

step "host forwarder 127.0.0.1:$HOST_API_PORT -> unix socket -> node 127.0.0.1:$API_PORT"
run_bg fwd-node socat UNIX-LISTEN:"$RUN/api.sock",fork,unlink-early TCP:127.0.0.1:$API_PORT
wait_for "forwarder socket" 10 test -S "$RUN/api.sock"
setsid socat TCP-LISTEN:$HOST_API_PORT,bind=127.0.0.1,reuseaddr,fork UNIX-CONNECT:"$RUN/api.sock" \
  >"$RUN/logs/fwd-host.log" 2>&1 </dev/null & echo $! > "$RUN/pids/fwd-host"
wait_for "kubectl via forwarder" 20 kubectl get --raw /readyz

step "kube-controller-manager + kube-scheduler"
run_bg kcm "$BIN/kube-controller-manager" --kubeconfig="$NODE_KC" --leader-elect=false --port=0 --secure-port=0 \
  --service-account-private-key-file="$RUN/pki/sa.key" --root-ca-file="$RUN/pki/ca.crt" \
  --use-service-account-credentials=false --controllers='*,-cloud-node-lifecycle,-route,-service'
run_bg scheduler "$BIN/kube-scheduler" --kubeconfig="$NODE_KC" --leader-elect=false --port=0 --secure-port=0

step "containerd (CRI v1alpha2) + local images"
sed "s#@RUN@#$RUN#g" "$HERE/containerd.toml.in" > "$RUN/containerd/config.toml"
cat > "$RUN/cni/net.d/10-meshnode.conflist" <<EOF
{"cniVersion":"0.4.0","name":"meshnode","plugins":[
  {"type":"bridge","bridge":"cni0","isGateway":true,"isDefaultGateway":true,"ipMasq":false,"hairpinMode":true,
   "ipam":{"type":"host-local","ranges":[[{"subnet":"$POD_CIDR"}]]}},
  {"type":"portmap","capabilities":{"portMappings":true}}]}
EOF
run_bg containerd containerd -c "$RUN/containerd/config.toml"
wait_for containerd 30 in_node ctr -a "$CTRD_SOCK" version
for t in "$IMG"/*.tar; do in_node ctr -a "$CTRD_SOCK" -n k8s.io images import "$t" >/dev/null; done
in_node ctr -a "$CTRD_SOCK" -n k8s.io images ls -q | grep -v '^sha256:' | sed 's/^/  image: /'

step "cluster DNS stand-in: dnsmasq on $NODE_IP:53 fed from Services by dns-sync.py"
mkdir -p "$RUN/dns"; : > "$RUN/dns/hosts"; chmod 644 "$RUN/dns/hosts"
printf '%s' "$TOKEN" > "$RUN/pki/admin.token"; chmod 600 "$RUN/pki/admin.token"
run_bg dnsmasq dnsmasq --keep-in-foreground --log-facility=- --user=root --no-resolv --no-hosts --no-negcache \
  --listen-address=$NODE_IP --bind-interfaces --port=53 --addn-hosts="$RUN/dns/hosts" --local=/cluster.local/ \
  --domain-needed --bogus-priv --pid-file="$RUN/dns/dnsmasq.pid"
run_bg dns-sync /usr/bin/python3 "$HERE/dns-sync.py" "$RUN/pki/admin.token" "$RUN/pki/ca.crt" \
  https://127.0.0.1:$API_PORT "$RUN/dns/hosts" "$RUN/pids/dnsmasq" cluster.local

step "kubelet (cgroupfs, remote CRI)"
echo "# no upstream resolver inside the node" > "$RUN/resolv.conf"
cat > "$RUN/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
address: 0.0.0.0
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $RUN/pki/ca.crt}
authorization: {mode: AlwaysAllow}
clusterDomain: cluster.local
clusterDNS: [$NODE_IP]
resolvConf: $RUN/resolv.conf
failSwapOn: false
protectKernelDefaults: false
makeIPTablesUtilChains: true
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
maxPods: 110
oomScoreAdj: 0        # no CAP_SYS_RESOURCE here: negative values are EPERM
EOF
run_bg kubelet "$BIN/kubelet" --config="$RUN/kubelet/config.yaml" --kubeconfig="$NODE_KC" \
  --container-runtime=remote --container-runtime-endpoint=unix://"$CTRD_SOCK" --runtime-request-timeout=5m \
  --root-dir="$RUN/kubelet" --cert-dir="$RUN/kubelet/pki" --hostname-override=$NODE_NAME --node-ip=$NODE_IP \
  --pod-infra-container-image=docker.io/local/pause:1 --v=1

step "kube-proxy (iptables mode, rules inside the node netns)"
cat > "$RUN/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $NODE_KC}
hostnameOverride: $NODE_NAME
bindAddress: 0.0.0.0
clusterCIDR: $POD_CIDR
mode: iptables
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
oomScoreAdj: 0
EOF
run_bg kube-proxy "$BIN/kube-proxy" --config="$RUN/kube-proxy.yaml"

step "waiting for node $NODE_NAME Ready and the default service account"
wait_for "node Ready" 180 sh -c "kubectl get node $NODE_NAME -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
wait_for "default service account" 60 kubectl -n default get serviceaccount default
step "node ready"
kubectl get nodes -o wide
echo "export KUBECONFIG=$KUBECONFIG"
