#!/usr/bin/env bash
# Builds a whole single-node Kubernetes v1.20.2 (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kube-proxy) from Debian bookworm's `kubernetes` source package,
# plus installs the node's runtime pieces from Debian (containerd 1.6, runc, CNI plugins, etcd 3.4).
# Derived from the workplace's recipe (../shared/k8s-node/build.sh).
# Usage: cargo xtask node build (W=/some/dir -> binaries in $W/bin, default W=/tmp/k8s-node-build)
# Timing on 2 cores (with another heavy Rust build competing): see NOTES.md.
set -euo pipefail
W=${W:-${TMPDIR:-/tmp}/k8s-node-build}; OUT=${OUT:-$W/bin}
COMPONENTS=${COMPONENTS:-"kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy"}
mkdir -p "$W/apt/lists/partial" "$W/apt/etc" "$W/apt/cache/archives/partial" "$OUT"
export DEBIAN_FRONTEND=noninteractive
t0=$(date +%s)
step() { echo "[build $(( $(date +%s) - t0 ))s] $*"; }

step "apt-get install (toolchain + node runtime)"
apt-get update >/dev/null
apt-get install -y golang-go etcd-server rsync golang-github-modern-go-reflect2-dev \
  containerd runc containernetworking-plugins busybox-static socat conntrack iptables iproute2 openssl curl \
  dnsmasq-base python3 gcc libc6-dev >/dev/null

if [ ! -d "$W/gopath/src/k8s.io/kubernetes" ]; then
  step "apt-get source kubernetes (1.20.2, ~34 MB)"
  # deb-src entries derived from the machine's own apt sources; a private apt state dir so the
  # machine's own lists are not changed
  sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > "$W/apt/etc/src.sources"
  APT="-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=$W/apt/etc -o Dir::State::Lists=$W/apt/lists -o Dir::Cache=$W/apt/cache"
  apt-get $APT update >/dev/null
  (cd "$W" && apt-get $APT source --download-only kubernetes >/dev/null 2>&1)
  mkdir -p "$W/gopath/src/k8s.io"
  tar xzf "$W"/kubernetes_*.orig.tar.gz -C "$W/gopath/src/k8s.io"
  mv "$W/gopath/src/k8s.io/kubernetes-1.20.2" "$W/gopath/src/k8s.io/kubernetes"
  cd "$W/gopath/src/k8s.io/kubernetes"
  # vendored modern-go/reflect2 v1.0.1 segfaults on Go >= 1.18 when a mutating webhook patches;
  # use Debian's v1.0.2
  rm -rf vendor/github.com/modern-go/reflect2
  cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/reflect2
  rm -f vendor/github.com/modern-go/reflect2/go.mod
  # kubelet: only WARN about the host-global sysctls it would otherwise set on the shared VM
  # (vm.overcommit_memory=1, kernel.panic=10, kernel.panic_on_oops=1, kernel.keys.*).
  # Set KUBELET_PATCH_SYSCTLS=0 to keep upstream behaviour (then kubelet modifies them).
  if [ "${KUBELET_PATCH_SYSCTLS:-1}" = 1 ]; then
    sed -i 's/^\tb := KernelTunableModify$/\tb := KernelTunableWarn/' pkg/kubelet/cm/container_manager_linux.go
    grep -q 'b := KernelTunableWarn' pkg/kubelet/cm/container_manager_linux.go
  fi
  step "make gen_openapi"
  make gen_openapi >/dev/null
fi
cd "$W/gopath/src/k8s.io/kubernetes"
# GOPATH mode: the version variables live under the vendor/ import path (as hack/lib/version.sh sets them)
VER=""; for pkg in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
  VER="$VER -X $pkg.gitVersion=v1.20.2 -X $pkg.gitMajor=1 -X $pkg.gitMinor=20 -X $pkg.gitTreeState=clean"; done
export GO111MODULE=off GOPATH="$W/gopath" GOPROXY=off CGO_ENABLED=0
for c in $COMPONENTS; do
  [ -x "$OUT/$c" ] && { step "$c already built"; continue; }
  step "go build $c"
  s=$(date +%s)
  go build -trimpath -ldflags "-s -w $VER" -o "$OUT/$c" "./cmd/$c"
  step "built $c in $(( $(date +%s) - s ))s"
done
step "done"
ls -la "$OUT"
