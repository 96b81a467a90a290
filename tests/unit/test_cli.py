"""The `swarm` command: version, help everywhere, one-line errors."""

from __future__ import annotations

import subprocess
import sys

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
