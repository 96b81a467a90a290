"""Bad configuration fails clearly: `swarm run SERVICE` started as a container starts it, with
an unreachable REDIS_URL, an unknown vendor, a value that does not parse or a missing key,
logs one readable line per problem naming the variable, and exits non-zero (2: fix a
value; 3: Redis never answered) with no traceback and no secret in its output.

Each case is a subprocess in a temp dir (settings read `.env` from the working directory,
so a developer's own never leaks in) with the vendor keys and swarm variables taken out of
the environment, Redis pointed at a closed port, and a 2 s connect timeout: a case that
wrongly got past its configuration fails in seconds with exit 3 instead of hanging.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.cli.redis_finder import private_redis_server
from shared.llm.settings import VENDORS
from shared.runtime.net import free_port
from tests.clean_env import clean_env

SWARM = Path(sys.executable).with_name("swarm")  # the console script, as an image runs it


@dataclass(frozen=True)
class Ran:
    code: int
    output: str  # stdout and stderr together
    lines: list[dict[str, Any]]  # every line, parsed: each is a JSON log line
    seconds: float

    def events(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == event]

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("level") == "error"]


def swarm_run(cwd: Path, *argv: str, **env: str) -> Ran:
    started = time.monotonic()
    proc = subprocess.run(
        [str(SWARM), "run", *argv],
        cwd=cwd,
        env=clean_env(**env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )
    lines = []
    for raw in proc.stdout.splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            pytest.fail(f"not a JSON log line: {raw!r}\nwhole output:\n{proc.stdout}")
    return Ran(proc.returncode, proc.stdout, lines, time.monotonic() - started)


def assert_refused(ran: Ran, variable: str, *, code: int = 2, lines: int = 1) -> str:
    """Exit `code`, nothing but `lines` log lines, the error naming `variable`; its text."""
    assert ran.code == code, ran.output
    assert "Traceback" not in ran.output
    assert len(ran.lines) <= lines, ran.output
    messages = [e["message"] for e in ran.errors]
    assert any(variable in m for m in messages), ran.output
    return "\n".join(messages)


# -- Redis ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "argv"),
    [
        ("worker", ("--vendor", "deepseek")),
        ("dispatcher", ()),
        ("collector", ()),
        ("megashard", ("--shard", "history")),
    ],
)
def test_an_unreachable_redis_is_said_while_waiting_then_exit_3(
    tmp_path: Path, service: str, argv: tuple[str, ...]
) -> None:
    port = free_port()
    url = f"redis://swarm:hunter2@127.0.0.1:{port}/0"
    ran = swarm_run(
        tmp_path, service, *argv, REDIS_URL=url, SWARM_SIMULATOR_URL="http://127.0.0.1:9"
    )
    text = assert_refused(ran, "REDIS_URL", code=3, lines=4)
    [failed] = ran.events("redis.unreachable")
    assert failed["variable"] == "REDIS_URL"
    assert f"Redis at redis://swarm:***@127.0.0.1:{port}/0 (REDIS_URL)" in text
    assert "did not answer within 2s (SWARM_CONNECT_TIMEOUT_S)" in text
    waiting = ran.events("redis.waiting")
    assert waiting, f"no progress line before giving up:\n{ran.output}"
    assert ran.lines.index(waiting[0]) < ran.lines.index(failed)
    assert waiting[0]["message"].startswith(
        f"waiting for Redis at redis://swarm:***@127.0.0.1:{port}/0 (REDIS_URL): "
    )
    assert "hunter2" not in ran.output
    assert ran.seconds < 20


def test_refused_credentials_fail_at_once(tmp_path: Path) -> None:
    with private_redis_server(
        config="requirepass s3cret\n", probe_url="redis://:s3cret@127.0.0.1:{port}/0"
    ) as (url, _proc):
        wrong = url.replace("redis://", "redis://:nope@")
        ran = swarm_run(tmp_path, "dispatcher", REDIS_URL=wrong, SWARM_CONNECT_TIMEOUT_S="30")
    text = assert_refused(ran, "REDIS_URL", lines=3)
    assert ran.events("redis.refused") and "refused the credentials in REDIS_URL" in text
    assert "nope" not in ran.output
    assert ran.seconds < 15  # not the 30 s connect timeout


# -- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["flag", "env"])
def test_an_unknown_vendor_lists_the_known_ones(tmp_path: Path, how: str) -> None:
    if how == "flag":
        ran = swarm_run(tmp_path, "worker", "--vendor", "nosuch")
    else:
        ran = swarm_run(tmp_path, "worker", SWARM_WORKER_VENDOR="nosuch")
    text = assert_refused(ran, "SWARM_WORKER_VENDOR=nosuch")
    assert all(vendor in text for vendor in VENDORS), text


# (service and flags, environment, the line expected) for a field of every settings class
BAD_VALUES = [
    # WorkerSettings, BusSettings
    (
        ["worker"],
        {"SWARM_WORKER_RPM": "abc"},
        "SWARM_WORKER_RPM=abc: Input should be a valid integer",
    ),
    (
        ["worker"],
        {"SWARM_WORKER_UNCONFIGURED": "maybe"},
        "SWARM_WORKER_UNCONFIGURED=maybe: Input should be 'exit' or 'idle'",
    ),
    (
        ["worker"],
        {"SWARM_MAX_IN_FLIGHT": "0"},
        "SWARM_MAX_IN_FLIGHT=0: Input should be greater than or equal to 1",
    ),
    (
        ["worker"],
        {"SWARM_HEARTBEAT_INTERVAL_S": "5", "SWARM_HEARTBEAT_TTL_S": "3"},
        "SWARM_HEARTBEAT_TTL_S (3.0) must exceed SWARM_HEARTBEAT_INTERVAL_S",
    ),
    # DispatcherSettings, VendorSettings
    (
        ["dispatcher"],
        {"SWARM_DISPATCHER_FLEET_REFRESH_S": "often"},
        "SWARM_DISPATCHER_FLEET_REFRESH_S=often: Input should be a valid number",
    ),
    (
        ["dispatcher"],
        {"SWARM_DISPATCHER_VENDOR_CAPS_USD": "{claude: 5"},
        "SWARM_DISPATCHER_VENDOR_CAPS_USD: not valid JSON",
    ),
    (
        ["dispatcher"],
        {"SWARM_DISPATCHER_VENDOR_CAPS_USD": '{"claude": "lots"}'},
        "SWARM_DISPATCHER_VENDOR_CAPS_USD (claude): Input should be a valid number",
    ),
    (
        ["dispatcher"],
        {"SWARM_LLM_TIMEOUT_S": "0"},
        "SWARM_LLM_TIMEOUT_S=0: Input should be greater than 0",
    ),
    # CollectorSettings, SwarmSettings
    (
        ["collector"],
        {"SWARM_COLLECTOR_DATABASE_TABLE": "drop table"},
        "SWARM_COLLECTOR_DATABASE_TABLE=drop table: 'drop table' must be",
    ),
    (["collector"], {"METRICS_PORT": "http"}, "METRICS_PORT=http: Input should be a valid integer"),
    # ShardSettings (megashard)
    (
        ["megashard"],
        {"SWARM_SHARD_CLAUDE_CACHE_TTL": "2h"},
        "SWARM_SHARD_CLAUDE_CACHE_TTL=2h: Input should be '5m' or '1h'",
    ),
    (
        ["megashard", "--shard", "Ops History"],
        {},
        "SWARM_SHARD_ID=Ops History: shard id 'Ops History' must be",
    ),
    # the simulator reads SwarmSettings too
    (
        ["simulator"],
        {"SWARM_NAMESPACE": "my swarm"},
        "SWARM_NAMESPACE=my swarm: namespace 'my swarm' must be",
    ),
]


@pytest.mark.parametrize(("argv", "env", "expected"), BAD_VALUES)
def test_a_bad_value_is_one_line_naming_its_variable(
    tmp_path: Path, argv: list[str], env: dict[str, str], expected: str
) -> None:
    ran = swarm_run(tmp_path, *argv, SWARM_SIMULATOR_URL="http://127.0.0.1:9", **env)
    variable = re.match(r"[A-Z_]+", expected)
    assert variable is not None
    assert expected in assert_refused(ran, variable.group())
    assert ran.events("config.invalid")


def test_every_bad_variable_is_named_at_once(tmp_path: Path) -> None:
    ran = swarm_run(
        tmp_path, "worker", SWARM_WORKER_RPM="abc", SWARM_MAX_IN_FLIGHT="0", METRICS_PORT="x"
    )
    assert_refused(ran, "SWARM_WORKER_RPM", lines=3)
    assert sorted(e["variable"] for e in ran.errors) == [
        "METRICS_PORT", "SWARM_MAX_IN_FLIGHT", "SWARM_WORKER_RPM"
    ]  # fmt: skip


def test_a_bad_value_in_dot_env_is_named_too(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SWARM_WORKER_TPM=plenty\n")
    ran = swarm_run(tmp_path, "worker", SWARM_SIMULATOR_URL="http://127.0.0.1:9")
    assert "SWARM_WORKER_TPM=plenty: " in assert_refused(ran, "SWARM_WORKER_TPM")


# -- keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vendor", "variable"),
    [
        ("claude", "ANTHROPIC_API_KEY"),
        ("gemini", "GOOGLE_API_KEY"),
        ("deepseek", "DEEPSEEK_API_KEY"),
        ("openai-compatible", "OPENAI_COMPATIBLE_BASE_URL"),
    ],
)
def test_a_worker_without_its_key_names_the_variable(
    tmp_path: Path, vendor: str, variable: str
) -> None:
    ran = swarm_run(tmp_path, "worker", "--vendor", vendor)
    text = assert_refused(ran, variable)
    assert f"vendor {vendor} needs {variable}" in text and "SWARM_SIMULATOR_URL" in text
    assert ran.errors[0]["variable"] == variable
    assert ran.seconds < 15  # not after waiting for Redis


def test_a_megashard_without_a_key_names_both_variables(tmp_path: Path) -> None:
    ran = swarm_run(tmp_path, "megashard", DEEPSEEK_API_KEY="sk-only-deepseek-0123456789")
    text = assert_refused(ran, "GOOGLE_API_KEY")
    assert "ANTHROPIC_API_KEY" in text and "SWARM_SIMULATOR_URL" in text
    assert "sk-only-deepseek" not in ran.output
