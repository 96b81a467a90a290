"""The console's settings: the token from the environment or a file (a container secret),
never shown; without one the console is read-only; a bad token file stops it at start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.console.settings import ConsoleSettings


def test_the_token_comes_from_a_file_and_is_never_shown(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cret-from-file\n")
    settings = ConsoleSettings(token_file=secret)
    assert settings.token is not None
    assert settings.token.get_secret_value() == "s3cret-from-file"
    assert not settings.read_only
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings)


def test_the_variable_wins_over_the_file_and_no_token_is_read_only(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-file")
    both = ConsoleSettings(token="from-env", token_file=secret)
    assert both.token is not None and both.token.get_secret_value() == "from-env"
    assert ConsoleSettings(token="").read_only
    assert ConsoleSettings().host == "127.0.0.1"  # loopback unless configured


@pytest.mark.parametrize(("content", "problem"), [("\n", "is empty"), (None, "cannot read")])
def test_an_unusable_token_file_is_refused(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    secret = tmp_path / "token"
    if content is not None:
        secret.write_text(content)
    with pytest.raises(ValidationError, match=problem):
        ConsoleSettings(token_file=secret)


def test_swarm_console_with_an_unusable_token_file_exits_2_saying_why(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARM_CONSOLE_")}
    env.update(SWARM_CONSOLE_TOKEN_FILE=str(tmp_path / "missing"), LOG_JSON="false")
    res = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "console", "--port", "0"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert res.returncode == 2, res.stdout + res.stderr
    assert "cannot read the token file" in res.stdout + res.stderr
