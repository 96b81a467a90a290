"""The `swarm` command: version, help everywhere, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.cli.main import main


def _swarm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_version() -> None:
    res = _swarm("--version")
    assert res.returncode == 0
    assert res.stdout.startswith("swarm 0.")


@pytest.mark.parametrize("args", [(), ("run",), ("demo",)])
def test_help_everywhere(args: tuple[str, ...]) -> None:
    res = _swarm(*args, "--help")
    assert res.returncode == 0
    assert "usage: swarm" in res.stdout


def test_unknown_service_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "nonsense"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("swarm: error: unknown service 'nonsense'")
    assert "dispatcher" in err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1


def test_a_worker_without_its_key_says_which_variable_to_set() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ANTHROPIC_API_KEY", "SWARM_SIMULATOR_URL", "ANTHROPIC_BASE_URL")
    }
    res = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "run", "worker", "--vendor", "claude"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert res.returncode == 2  # a configuration error: its one log line names the variable
    out = res.stdout + res.stderr
    assert "ANTHROPIC_API_KEY" in out
    assert "SWARM_SIMULATOR_URL" in out  # and how to run without a key
    assert "Traceback" not in out


def test_an_unknown_vendor_is_refused_with_the_choices() -> None:
    res = _swarm("run", "worker", "--vendor", "mistral")
    assert res.returncode == 2
    out = res.stdout + res.stderr
    assert "unknown vendor 'mistral'" in out and "deepseek" in out
    assert "Traceback" not in out


def test_route_explains_without_posting() -> None:
    res = _swarm("route", "--explain", "Draft a long-term strategy and roadmap for the board")
    assert res.returncode == 0, res.stderr
    assert "tier: strategic" in res.stdout
    assert "decision:" in res.stdout and "$" in res.stdout


def test_route_refuses_an_impossible_budget_with_the_reason() -> None:
    res = _swarm("route", "Summarise this", "--model", "claude-opus-4-7", "--budget", "0.000001")
    assert res.returncode == 1
    assert "budget" in res.stdout


def test_a_bad_variable_is_one_line_per_command(tmp_path: Path) -> None:
    env = {**os.environ, "SWARM_NAMESPACE": "a b", "SWARM_READ_COUNT": "0"}
    for args in (("status",), ("plan", os.devnull), ("route", "hello")):
        res = subprocess.run(
            [sys.executable, "-m", "services.cli.main", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**env, "SWARM_LLM_TIMEOUT_S": "0"},
            cwd=tmp_path,
        )
        assert res.returncode == 2, (args, res.stderr)
        assert "Traceback" not in res.stderr
        for line in res.stderr.strip().splitlines():
            assert line.startswith("swarm: error: "), line
        if args == ("status",):
            assert res.stderr.splitlines() == [
                "swarm: error: SWARM_NAMESPACE=a b: namespace 'a b' must be 1-64 letters, "
                "digits, '_', '.', '-'",
                "swarm: error: SWARM_READ_COUNT=0: Input should be greater than or equal to 1",
            ]
        else:
            assert "SWARM_LLM_TIMEOUT_S=0: Input should be greater than 0" in res.stderr
