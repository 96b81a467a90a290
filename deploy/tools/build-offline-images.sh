#!/usr/bin/env bash
# Build every image swarmbus needs from Debian packages, for sites with no image registry
# (the package mirrors only). Produces, in the local engine:
#
#   swarmbus-local/python:3.11-bookworm     the base of deploy/Dockerfile (python3, venv, tini)
#   swarmbus-local/redis:7.0                stand-in for redis:7.4.5-alpine
#   swarmbus-local/prometheus:2.42          stand-in for prom/prometheus
#   swarmbus-local/redis-exporter:1.45      stand-in for oliver006/redis_exporter
#   swarmbus-local/alertmanager:0.25        stand-in for prom/alertmanager
#
# and prints the variables that point compose.yaml at them (eval "$(... --print-env)").
# Grafana has no Debian package: the stack runs without it (its dashboard is checked
# statically by tests/deploy).
#
#   deploy/tools/build-offline-images.sh              # build what is missing
#   deploy/tools/build-offline-images.sh --force      # rebuild everything
#   deploy/tools/build-offline-images.sh --print-env  # only print the variables
#
# The base is made with debootstrap from the mirror this host's apt uses, and carries the
# host's CA bundle and apt settings, so pip and apt inside builds work behind a
# TLS-intercepting proxy too. Needs root, debootstrap and a running Docker engine.
set -euo pipefail

PREFIX="${SWARM_LOCAL_IMAGE_PREFIX:-swarmbus-local}"
SUITE="${SWARM_DEBIAN_SUITE:-bookworm}"
BASE="$PREFIX/python:3.11-$SUITE"
HERE="$(cd "$(dirname "$0")" && pwd)"
CA=/etc/ssl/certs/ca-certificates.crt

print_env() {
  cat <<EOF
export SWARM_PYTHON_IMAGE=$BASE
export SWARM_REDIS_IMAGE=$PREFIX/redis:7.0
export SWARM_PROMETHEUS_IMAGE=$PREFIX/prometheus:2.42
export SWARM_REDIS_EXPORTER_IMAGE=$PREFIX/redis-exporter:1.45
export SWARM_ALERTMANAGER_IMAGE=$PREFIX/alertmanager:0.25
EOF
}

force=0
case "${1:-}" in
  --print-env) print_env; exit 0 ;;
  --force) force=1 ;;
  "") ;;
  *) echo "usage: $0 [--force|--print-env]" >&2; exit 2 ;;
esac

have_image() { [[ $force == 0 ]] && docker image inspect "$1" >/dev/null 2>&1; }
say() { printf '[offline-images] %s\n' "$*" >&2; }

# The first Debian mirror this host's apt reads (deb822 or one-line sources).
host_mirror() {
  local url
  url="$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | grep -v security \
          | awk '{print $2}' | head -n1 || true)"
  if [[ -z $url ]]; then
    url="$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
            | grep -v security | awk '{print $2}' | head -n1 || true)"
  fi
  [[ -n $url ]] || { say "no Debian mirror found in /etc/apt/sources*"; exit 1; }
  echo "$url"
}

build_base() {
  if have_image "$BASE"; then say "$BASE: present"; return; fi
  command -v debootstrap >/dev/null || { say "debootstrap is needed: apt-get install debootstrap"; exit 1; }
  local root start mirror
  start=$SECONDS
  mirror="$(host_mirror)"
  root="$(mktemp -d /tmp/swarm-rootfs.XXXXXX)"
  trap 'rm -rf "$root"' RETURN
  say "$BASE: debootstrap $SUITE from $mirror"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,tini \
    "$SUITE" "$root" "$mirror" >/tmp/swarm-debootstrap.log 2>&1 \
    || { tail -n 20 /tmp/swarm-debootstrap.log >&2; exit 1; }
  # apt inside the image reads the same mirror and settings as this host.
  cp -a /etc/apt/sources.list.d/. "$root/etc/apt/sources.list.d/" 2>/dev/null || true
  [[ -f /etc/apt/sources.list ]] && cp /etc/apt/sources.list "$root/etc/apt/sources.list"
  find "$root/etc/apt/sources.list.d" -name '*.disabled*' -delete
  for f in /etc/apt/apt.conf.d/*; do
    grep -qs 'Acquire' "$f" && cp "$f" "$root/etc/apt/apt.conf.d/"
  done
  if [[ -s $CA ]]; then
    # The host's bundle may hold a proxy's CA that the package's bundle lacks.
    cp "$CA" "$root/usr/local/share/swarm-ca-bundle.crt"
    cp "$CA" "$root/etc/ssl/certs/ca-certificates.crt"
  fi
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["python3"]' \
    - "$BASE" >/dev/null
  say "$BASE: built in $((SECONDS - start)) s"
}

build_standin() {  # name tag
  local name=$1 tag=$2 start=$SECONDS digest
  # Rebuilt when its folder changed since: the image carries the folder's digest as a label.
  digest="$(cat "$HERE/standins/$name"/* | sha256sum | cut -c1-16)"
  if [[ "$(docker image inspect -f '{{index .Config.Labels "swarmbus.standin"}}' "$tag" \
      2>/dev/null)" == "$digest" ]]; then
    say "$tag: present"
    return
  fi
  local log=/tmp/swarm-standin-$name.log
  DOCKER_BUILDKIT=0 docker build --build-arg "BASE=$BASE" --label "swarmbus.standin=$digest" \
    -t "$tag" "$HERE/standins/$name" \
    >"$log" 2>&1 || { tail -n 30 "$log" >&2; say "$tag: build failed"; exit 1; }
  say "$tag: built in $((SECONDS - start)) s"
}

docker version >/dev/null 2>&1 || { say "no Docker engine answers"; exit 1; }
build_base
build_standin redis "$PREFIX/redis:7.0"
build_standin prometheus "$PREFIX/prometheus:2.42"
build_standin redis-exporter "$PREFIX/redis-exporter:1.45"
build_standin alertmanager "$PREFIX/alertmanager:0.25"
