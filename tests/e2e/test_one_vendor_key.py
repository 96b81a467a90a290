"""A newcomer with one vendor's key in `.env` runs `docker compose up --scale
worker-deepseek=...`: the other vendors' workers neither crash-loop nor get tasks, each
says so in one log line, and `swarm status` shows them not configured.

DeepSeek's "real" endpoint here is the simulator (DEEPSEEK_BASE_URL), reached with a key
of our own; no SWARM_SIMULATOR_URL, so the other vendors have no way to be called.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Stack, compose_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

UNCONFIGURED = {
    "worker-claude": "ANTHROPIC_API_KEY",
    "worker-gemini": "GOOGLE_API_KEY",
    "worker-openai": "OPENAI_API_KEY",
    "worker-codex": "OPENAI_API_KEY",
}


@pytest.fixture(scope="module")
def one_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = [
        "DEEPSEEK_API_KEY=sk-e2e-only-deepseek",
        "DEEPSEEK_BASE_URL=http://simulator:8400/deepseek/v1",
        # No `swarm init`: the explicit development override, every Redis user on the
        # public stand-in password (the other stack runs with generated ones).
        "SWARM_REDIS_DEV_PASSWORDS=1",
    ]
    with compose_stack(tmp_path_factory.mktemp("one-key"), settings) as stack:
        yield stack


def test_fleet_with_one_key_comes_up_healthy(one_key: Stack) -> None:
    # The sim profile is there only as DeepSeek's endpoint; the mega-shard has no key either.
    services = one_key.services
    one_key.compose("build", *services, timeout=1200)
    one_key.compose("up", "-d", "--wait", "--scale", "worker-deepseek=2", *services, timeout=300)
    one_key.phases.done("up --wait with only DEEPSEEK_API_KEY: every container healthy")
    time.sleep(5)  # a crash loop would show as restarts by now
    for service in (*UNCONFIGURED, "megashard"):
        (cid,) = one_key.container_ids(service)
        state = one_key.run(
            ["docker", "inspect", "-f", "{{.RestartCount}} {{.State.Status}}", cid]
        ).stdout.split()
        assert state == ["0", "running"], (service, state)


def test_each_unconfigured_worker_says_so_once(one_key: Stack) -> None:
    for service, variable in UNCONFIGURED.items():
        logs = one_key.compose("logs", "--no-color", "--no-log-prefix", service).stdout
        lines = [line for line in logs.splitlines() if variable in line]
        assert len(lines) == 1, (service, lines)
        assert json.loads(lines[0])["level"] == "warning"
        assert "Traceback" not in logs


def test_status_shows_them_not_configured(one_key: Stack) -> None:
    out = one_key.compose("run", "--rm", "cli", "swarm", "status", "--json").stdout
    rows = {(r["service"], r["name"]): r for r in json.loads(out)["live"]}
    for service, variable in UNCONFIGURED.items():
        vendor = service.removeprefix("worker-")
        row = rows[(service, vendor)]
        assert row["configured"] is False and variable in row["missing"], row
    assert rows[("worker-deepseek", "deepseek")]["configured"] is True
    text = one_key.compose("run", "--rm", "cli", "swarm", "status").stdout
    assert re.search(r"not configured \(set ANTHROPIC_API_KEY\)", text), text


def test_tasks_go_only_to_the_configured_vendor(one_key: Stack) -> None:
    r = one_key.redis()
    ids = [f"one-key-{i}" for i in range(20)]
    complexities = ["simple", "medium", "complex"]  # every tier DeepSeek serves
    lines = [
        f'XADD swarm:tasks * task_id {tid} complexity {complexities[i % 3]} prompt "Review '
        f'contract clause {i} for supplier risk"'
        for i, tid in enumerate(ids)
    ]
    one_key.compose("exec", "-T", "redis", "redis-cli", stdin="\n".join(lines) + "\n")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = {f["task_id"]: f for _, f in r.xrange("swarm:findings")}
        if all(t in found for t in ids):
            break
        time.sleep(1)
    assert all(t in found for t in ids), sorted(set(ids) - set(found))
    assert {found[t]["vendor"] for t in ids} == {"deepseek"}
    assert {found[t]["status"] for t in ids} == {"ok"}
    for vendor in ("claude", "gemini", "openai", "codex"):
        assert r.xlen(f"swarm:queue:{vendor}") == 0, vendor
    one_key.phases.done("20 tasks of three tiers: all answered by DeepSeek")
