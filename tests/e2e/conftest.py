"""The compose stack on a real Docker engine, driven the way a user drives it.

`make e2e` runs these (marker `e2e`, left out of `make test`). A project of its own
(unique name, its own host ports, its own env file: a developer's `.env` never leaks in),
torn down with `down -v` whatever happens. Third-party images come from SWARM_*_IMAGE when
set (the stand-ins of deploy/tools/build-offline-images.sh on a site with no registry).
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

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
    console_port = free_port()
    lines = [
        *settings,
        "SWARM_IMAGE_TAG=e2e",
        f"SWARM_REDIS_HOST_PORT={redis_port}",
        f"SWARM_PROMETHEUS_HOST_PORT={prometheus_port}",
        f"SWARM_GRAFANA_HOST_PORT={grafana_port}",
        f"SWARM_CONSOLE_HOST_PORT={console_port}",
    ]
    lines += [f"{name}={os.environ[name]}" for name in PASSTHROUGH if os.environ.get(name)]
    env_file = tmp / "e2e.env"
    env_file.write_text("\n".join(lines) + "\n")
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
    """Keyless: every vendor is answered by the simulator inside the compose network."""
    settings = ["SWARM_SIMULATOR_URL=http://simulator:8400"]
    with compose_stack(tmp_path_factory.mktemp("e2e"), settings) as s:
        yield s
