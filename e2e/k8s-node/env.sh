# Sourced by start.sh and stop.sh. Everything the node makes lives under $RUN, in the network
# namespace $NODE_NETNS and in a private mount namespace pinned at $RUN/ns/mnt. Derived from the
# workplace's recipe (../shared/k8s-node/); `cargo xtask node` drives these scripts.
RUN=${RUN:-${TMPDIR:-/tmp}/mesh-k8s-node}
BIN=${BIN:-${W:-${TMPDIR:-/tmp}/k8s-node-build}/bin}
IMG=${IMG:-${TMPDIR:-/tmp}/mesh-k8s-node-images}
NODE_NETNS=${NODE_NETNS:-meshk8s}          # `ip netns` name of the node's network namespace
NODE_NAME=${NODE_NAME:-meshnode}
NODE_IP=${NODE_IP:-10.250.0.1}              # on lo inside the node netns only
POD_CIDR=${POD_CIDR:-10.244.0.0/24}         # bridge cni0 + host-local IPAM, inside the node netns
SVC_CIDR=${SVC_CIDR:-10.96.0.0/16}
API_PORT=${API_PORT:-16443}                 # apiserver port in the node netns, forwarded to host 127.0.0.1
MNTNS=$RUN/ns/mnt
CTRD_SOCK=$RUN/containerd/containerd.sock
# kubectl: scripts/install-deps.sh puts one in $MESH_TOOLS/bin
PATH=${MESH_TOOLS:-/opt/mesh-tools}/bin:$PATH
export KUBECONFIG=${KUBECONFIG_OUT:-$RUN/kubeconfig}
# run a command inside the node (its network + mount namespaces)
in_node() { nsenter --mount="$MNTNS" --net=/run/netns/"$NODE_NETNS" -- "$@"; }
