"""The compose stack on a real Docker engine, driven the way a user drives it.

`make e2e` runs these (marker `e2e`, left out of `make test`). A project of its own
(unique name, its own host ports, its own env file: a developer's `.env` never leaks in),
torn down with `down -v` whatever happens. Third-party images come from SWARM_*_IMAGE when
set (the stand-ins of deploy/tools/build-offline-images.sh on a site with no registry).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from redis import Redis

from shared.runtime.net import free_port

ROOT = Path(__file__).resolve().parents[2]
# Passed through to compose when set: which images to use, and how to build.
PASSTHROUGH = (
    "SWARM_PYTHON_IMAGE",
    "SWARM_REDIS_IMAGE",
    "SWARM_PROMETHEUS_IMAGE",
    "SWARM_REDIS_EXPORTER_IMAGE",
    "SWARM_GRAFANA_IMAGE",
    "SWARM_ALERTMANAGER_IMAGE",
)


def engine_answers() -> bool:
    res = subprocess.run(["docker", "version"], capture_output=True, check=False, timeout=30)
    return res.returncode == 0


@functools.cache
def buildkit_available() -> bool:
    res = subprocess.run(
        ["docker", "buildx", "version"], capture_output=True, check=False, timeout=30
    )
    return res.returncode == 0


@dataclass
class Phases:
    """Wall time of each phase, printed as it ends and as a table at the end."""

    times: list[tuple[str, float]] = field(default_factory=list)
    _start: float = field(default_factory=time.monotonic)

    def done(self, name: str) -> None:
        now = time.monotonic()
        self.times.append((name, now - self._start))
        print(f"[e2e] {name}: {now - self._start:.1f} s", flush=True)
        self._start = now

    def table(self) -> str:
        rows = [f"| {name} | {seconds:.1f} s |" for name, seconds in self.times]
        total = sum(s for _, s in self.times)
        return "\n".join(["| phase | time |", "|---|---|", *rows, f"| total | {total:.1f} s |"])


class AlertReceiver:
    """A webhook receiver on this host, where Alertmanager's webhook posts land: every
    alert of every notification, in arrival order (`received`: time.monotonic())."""

    def __init__(self, host: str) -> None:
        self.alerts: list[dict[str, Any]] = []
        received = self.alerts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                now = time.monotonic()
                received.extend({**a, "received": now} for a in json.loads(body).get("alerts", []))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def wait_for(self, match: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [a for a in list(self.alerts) if match(a)]
            if found:
                return found[0]
            time.sleep(1)
        seen = [
            (a["labels"].get("alertname"), a["labels"].get("vendor") or a["labels"].get("group"),
             a["status"], a["startsAt"])
            for a in self.alerts
        ]  # fmt: skip
        raise AssertionError(f"no such alert within {timeout:.0f} s; received: {seen}")

    def summary(self, since: float) -> str:
        """The alerts received, each with its vendor or group, and when (from `since`)."""
        out = []
        for a in self.alerts:
            labels = a["labels"]
            which = labels.get("vendor") or labels.get("group", "")
            after = a["received"] - since
            out.append(f"{labels['alertname']}{{{which}}} {a['status']} +{after:.0f}s")
        return "; ".join(out)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def bridge_gateway() -> str:
    """This host's address on Docker's default bridge: what `host-gateway` (compose's
    host.docker.internal) resolves to inside containers. An engine that does not list the
    gateway gives the bridge the first address of its subnet."""
    out = subprocess.run(
        ["docker", "network", "inspect", "bridge", "-f", "{{json .IPAM.Config}}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    config = json.loads(out)[0]
    gateway = config.get("Gateway") or str(next(ipaddress.ip_network(config["Subnet"]).hosts()))
    return str(ipaddress.ip_address(gateway))


def quick_prometheus(dest: Path) -> Path:
    """deploy/prometheus with the e2e's durations: scrapes, rule evaluation and discovery
    every 2 s, every alert's `for:` 30 s (longer than the backlog of the runs above lasts,
    shorter than the e2e can wait) and every range of the rules 1 m; the same rules
    otherwise (compose mounts it through SWARM_PROMETHEUS_CONFIG_DIR)."""
    shutil.copytree(ROOT / "deploy" / "prometheus", dest)
    config = yaml.safe_load((dest / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "2s", "evaluation_interval": "2s"}
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            sd["refresh_interval"] = "2s"
    (dest / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    for path in (dest / "rules").glob("*.yml"):
        rules = yaml.safe_load(path.read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                rule["expr"] = re.sub(r"\[\d+m\]", "[1m]", rule["expr"])
                if "for" in rule:
                    rule["for"] = "30s"
        path.write_text(yaml.safe_dump(rules, sort_keys=False))
    for path in [dest, *dest.rglob("*")]:  # Prometheus runs as nobody
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dest


@dataclass
class Stack:
    """One compose project: `compose(...)` runs `docker compose` as a user would, with
    COMPOSE_* variables naming this project, so README lines run unchanged."""

    project: str
    env_file: Path
    redis_port: int
    prometheus_port: int
    services: list[str]
    phases: Phases = field(default_factory=Phases)
    console_port: int = 0
    receiver: AlertReceiver | None = None

    def redis(self) -> Redis:
        """Redis from this host, as its admin: the default user, with the password of
        REDIS_PASSWORD_SWARM_ADMIN in the env file (the public stand-in if it sets none)."""
        values = dict(
            line.split("=", 1) for line in self.env_file.read_text().splitlines() if "=" in line
        )
        password = values.get("REDIS_PASSWORD_SWARM_ADMIN", "insecure-dev")
        return Redis(
            port=self.redis_port, password=password, decode_responses=True, socket_timeout=10
        )

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
        env.update(
            COMPOSE_PROJECT_NAME=self.project,
            COMPOSE_FILE=str(ROOT / "compose.yaml"),
            COMPOSE_ENV_FILES=str(self.env_file),
            COMPOSE_PROFILES="sim",
        )
        if not buildkit_available():
            env["DOCKER_BUILDKIT"] = "0"  # the legacy builder: all a machine without buildx has
        return env

    def compose(
        self, *args: str, timeout: float = 300, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.run(["docker", "compose", *args], timeout=timeout, check=check, stdin=stdin)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 300,
        check: bool = True,
        stdin: str | None = None,
        cwd: Path = ROOT,
    ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
        if check and res.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {res.returncode}\n{res.stdout[-4000:]}\n"
                f"{res.stderr[-4000:]}"
            )
        return res

    def shell(self, line: str, *, cwd: Path = ROOT, timeout: float = 300) -> str:
        """A README line, run by bash exactly as printed."""
        return self.run(["bash", "-c", line], cwd=cwd, timeout=timeout).stdout

    def container_ids(self, service: str) -> list[str]:
        out = self.compose("ps", "-q", service).stdout
        return [line for line in out.split() if line]

    def labelled(self, kind: str) -> list[str]:
        """Containers, networks or volumes this project still owns."""
        what = {"container": ["ps", "-aq"], "network": ["network", "ls", "-q"]}.get(
            kind, [kind, "ls", "-q"]
        )
        out = self.run(
            ["docker", *what, "--filter", f"label=com.docker.compose.project={self.project}"]
        ).stdout
        return out.split()


def _image_present(image: str, env: Mapping[str, str]) -> bool:
    res = subprocess.run(
        ["docker", "image", "inspect", image], capture_output=True, env=dict(env), check=False
    )
    return res.returncode == 0


@contextlib.contextmanager
def compose_stack(tmp: Path, settings: Sequence[str]) -> Iterator[Stack]:
    """A compose project with `settings` (lines of its env file), torn down on exit."""
    if not engine_answers():
        pytest.fail("no Docker engine answers: `make e2e` needs one (see .ci/run)")
    redis_port, prometheus_port, grafana_port = free_port(), free_port(), free_port()
    console_port, alertmanager_port = free_port(), free_port()
    lines = [
        *settings,
        "SWARM_IMAGE_TAG=e2e",
        f"SWARM_REDIS_HOST_PORT={redis_port}",
        f"SWARM_PROMETHEUS_HOST_PORT={prometheus_port}",
        f"SWARM_GRAFANA_HOST_PORT={grafana_port}",
        f"SWARM_CONSOLE_HOST_PORT={console_port}",
        f"SWARM_ALERTMANAGER_HOST_PORT={alertmanager_port}",
    ]
    lines += [f"{name}={os.environ[name]}" for name in PASSTHROUGH if os.environ.get(name)]
    env_file = tmp / "e2e.env"
    env_file.write_text("\n".join(lines) + "\n")
    if "SWARM_REDIS_DEV_PASSWORDS=1" not in settings:  # README: `swarm init` comes first
        subprocess.run(
            [sys.executable, "-m", "services.cli.main", "init", "--env-file", str(env_file)],
            check=True,
            capture_output=True,
            timeout=60,
        )
    project = f"swarm-e2e-{uuid.uuid4().hex[:8]}"
    probe = Stack(project, env_file, redis_port, prometheus_port, [], console_port=console_port)
    services = probe.compose("config", "--services").stdout.split()
    grafana = os.environ.get("SWARM_GRAFANA_IMAGE") or "grafana/grafana:12.1.0"
    if "grafana" in services and not _image_present(grafana, probe.env):
        pull = probe.run(["docker", "pull", grafana], check=False, timeout=120)
        if pull.returncode != 0:
            print(
                f"[e2e] grafana: image {grafana} cannot be had here (no registry, no Debian "
                "package); the stack runs without it, its dashboard is checked statically",
                flush=True,
            )
            services.remove("grafana")
    probe.services = services
    try:
        yield probe
    finally:
        logs = probe.compose("logs", "--no-color", "--timestamps", check=False, timeout=120)
        (tmp / "compose.log").write_text(logs.stdout + logs.stderr)
        print(f"[e2e] service logs: {tmp / 'compose.log'}", flush=True)
        # Every profile's containers: the console test starts one outside COMPOSE_PROFILES.
        probe.compose(
            "--profile", "*", "down", "-v", "--remove-orphans", "--timeout", "30", check=False
        )
        print(probe.phases.table(), flush=True)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Keyless: every vendor is answered by the simulator inside the compose network.
    Alerts go to a webhook receiver on this host, from a Prometheus with short durations."""
    tmp = tmp_path_factory.mktemp("e2e")
    receiver = AlertReceiver(bridge_gateway())
    settings = [
        "SWARM_SIMULATOR_URL=http://simulator:8400",
        f"SWARM_PROMETHEUS_CONFIG_DIR={quick_prometheus(tmp / 'prometheus')}",
        f"ALERT_WEBHOOK_URL=http://host.docker.internal:{receiver.port}/alerts",
        "ALERT_GROUP_WAIT=1s",
        "ALERT_GROUP_INTERVAL=5s",
    ]
    try:
        with compose_stack(tmp, settings) as s:
            s.receiver = receiver
            yield s
    finally:
        receiver.close()
