"""Alerts reach a receiver: Prometheus sends them to the compose `alertmanager` service, whose
config (deploy/alertmanager) routes every alert to ALERT_WEBHOOK_URL from .env. The config
is rendered by the service's own entry point and checked by amtool; the rules are checked by
a promtool of the same major version as compose's Prometheus image.
(The e2e sees an alert arrive at a webhook: tests/e2e/test_compose_fleet.py.)"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import yaml

from tests.deploy.conftest import DEPLOY, ROOT, installed_tool, promtool
from tests.deploy.test_compose import resolved

AM = DEPLOY / "alertmanager"
URL = "https://hooks.example.test/swarm?team=ops&x=a|b"


def render(
    tmp_path: Path, template: Path = AM / "alertmanager.yml", **env: str
) -> subprocess.CompletedProcess[str]:
    """deploy/alertmanager/start.sh as the container runs it, printing the config."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ALERT")}
    clean.update(
        ALERTMANAGER_TEMPLATE=str(template), ALERTMANAGER_RENDERED=str(tmp_path / "am.yml"), **env
    )
    return subprocess.run(
        ["sh", str(AM / "start.sh"), "render"],
        capture_output=True,
        text=True,
        env=clean,
        timeout=30,
        check=False,
    )


def major(version: str) -> int:
    found = re.search(r"v?(\d+)\.\d+", version)
    assert found, version
    return int(found.group(1))


def test_promtool_is_of_the_major_version_of_the_prometheus_images() -> None:
    """Rules unit-tested by a promtool of another major version prove little (3.x changed
    range selection and regex matching), so the images and promtool agree."""
    out = subprocess.run(
        [promtool(), "--version"], capture_output=True, text=True, check=True, timeout=30
    )
    tool = major(out.stdout + out.stderr)
    compose = (ROOT / "compose.yaml").read_text()
    (public,) = re.findall(r"\$\{SWARM_PROMETHEUS_IMAGE:-prom/prometheus:(v[\d.]+)\}", compose)
    offline = subprocess.run(
        ["bash", str(DEPLOY / "tools" / "build-offline-images.sh"), "--print-env"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (standin,) = re.findall(r"SWARM_PROMETHEUS_IMAGE=\S+:([\d.]+)", offline)
    assert major(public) == major(standin) == tool, (public, standin, tool)


def test_the_config_routes_every_alert_to_the_webhook_of_env(tmp_path: Path) -> None:
    res = render(tmp_path, ALERT_WEBHOOK_URL=URL, ALERT_GROUP_WAIT="10s", ALERT_GROUP_INTERVAL="1m")
    assert res.returncode == 0, res.stderr
    config = yaml.safe_load(res.stdout)
    route = config["route"]
    assert route["group_wait"] == "10s" and not route.get("routes")
    assert route["group_interval"] == "1m"
    (receiver,) = [r for r in config["receivers"] if r["name"] == route["receiver"]]
    assert receiver["webhook_configs"][0]["url"] == URL  # &, | and ? kept as they are
    (tmp_path / "check.yml").write_text(res.stdout)
    check = subprocess.run(
        [installed_tool("amtool"), "check-config", str(tmp_path / "check.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_amtool_rejects_a_broken_config(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("route:\n  receiver: nowhere\nreceivers: []\n")
    check = subprocess.run(
        [installed_tool("amtool"), "check-config", str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode != 0


def test_without_a_webhook_it_says_so_and_still_starts(tmp_path: Path) -> None:
    res = render(tmp_path, ALERT_GROUP_WAIT="30s", ALERT_GROUP_INTERVAL="5m")
    assert res.returncode == 0, res.stderr
    assert "ALERT_WEBHOOK_URL is not set" in res.stderr
    assert ".invalid/" in res.stdout  # a name that never resolves: nothing is sent anywhere


def test_a_template_naming_an_unset_variable_is_refused(tmp_path: Path) -> None:
    custom = tmp_path / "custom.yml"
    custom.write_text((AM / "alertmanager.yml").read_text() + "# ${ALERT_SLACK_URL}\n")
    res = render(
        tmp_path, custom, ALERT_WEBHOOK_URL=URL, ALERT_GROUP_WAIT="30s", ALERT_GROUP_INTERVAL="5m"
    )
    assert res.returncode == 2
    assert "${ALERT_SLACK_URL}" in res.stderr


def test_compose_wires_prometheus_to_alertmanager_and_env_to_its_config(tmp_path: Path) -> None:
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (target,) = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    services = resolved(tmp_path, ALERT_WEBHOOK_URL=URL)["services"]
    assert target == "alertmanager:9093"
    am = services["alertmanager"]
    assert am["environment"]["ALERT_WEBHOOK_URL"] == URL
    assert am["environment"]["ALERT_GROUP_WAIT"] == "30s"
    assert am["environment"]["ALERT_GROUP_INTERVAL"] == "5m"
    mounts = {v["target"]: Path(v["source"]) for v in am["volumes"] if v["type"] == "bind"}
    assert mounts["/etc/alertmanager/alertmanager.yml"] == AM / "alertmanager.yml"
    assert am["entrypoint"][-1] in mounts and mounts[am["entrypoint"][-1]] == AM / "start.sh"
    assert "host.docker.internal=host-gateway" in am["extra_hosts"] or (
        "host.docker.internal:host-gateway" in am["extra_hosts"]
    )
    own = tmp_path / "mine.yml"
    own.write_text("route: {receiver: x}\nreceivers: [{name: x}]\n")
    services = resolved(tmp_path, SWARM_ALERTMANAGER_CONFIG=str(own))["services"]
    mounts = {v["target"]: v["source"] for v in services["alertmanager"]["volumes"]}
    assert mounts["/etc/alertmanager/alertmanager.yml"] == str(own)
