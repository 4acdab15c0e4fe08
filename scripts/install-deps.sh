#!/usr/bin/env bash
# Installs what building, testing and running the mesh needs on Debian
# (bookworm or later), as root. Safe to run again.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  echo "error: run as root (the local runtime creates network namespaces and iptables rules)" >&2
  exit 1
fi

packages=(
  iproute2 iptables util-linux procps   # namespaces, redirection, setpriv
  protobuf-compiler                     # the controller-to-proxy protocol
  curl nghttp2-client nghttp2-server    # HTTP/1.1 and HTTP/2 clients and server
  python3 python3-grpcio python3-websockets
  redis-server postgresql               # opaque TCP, both directions first
  tcpdump openssl                       # wire capture, certificate checks
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found: install the Rust toolchain (rustup, stable channel, with clippy and rustfmt) and run again" >&2
  exit 1
fi
for component in clippy rustfmt; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null 2>&1; then
      rustup component add "$component"
    else
      echo "error: cargo $component is missing: rustup component add $component" >&2
      exit 1
    fi
  fi
done
