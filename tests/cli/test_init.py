"""`swarm init` as typed in a project directory: a private `.env` holding a password for
every Redis ACL user and Grafana, which the ACL overlay's compose config accepts; existing
values are kept and a second run adds nothing; no value is ever printed."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from services.cli.init import SECRETS
from tests.deploy.conftest import ROOT
from tests.deploy.test_compose import compose


def _swarm_init(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", "init"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _values(env_file: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    return {k: v for k, v in pairs if not k.startswith("#")}


def test_init_writes_every_secret_once_privately(tmp_path: Path) -> None:
    shutil.copy(ROOT / ".env.example", tmp_path / ".env.example")
    first = _swarm_init(tmp_path)
    assert first.returncode == 0, first.stderr
    env_file = tmp_path / ".env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    values = _values(env_file)
    assert all(re.fullmatch(r"[0-9a-f]{48}", values[name]) for name in SECRETS)
    assert len({values[name] for name in SECRETS}) == len(SECRETS)
    assert env_file.read_text().startswith((ROOT / ".env.example").read_text())
    assert f"added {len(SECRETS)} of {len(SECRETS)} secrets" in first.stdout
    assert not any(values[name] in first.stdout + first.stderr for name in SECRETS)

    again = _swarm_init(tmp_path)
    assert again.returncode == 0 and "unchanged; added 0 of" in again.stdout
    assert _values(env_file) == values


def test_init_keeps_what_is_set_and_fills_what_is_commented_out(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("REDIS_PASSWORD_DISPATCHER=mine\n# REDIS_PASSWORD_COLLECTOR=\n")
    res = _swarm_init(tmp_path)
    assert res.returncode == 0, res.stderr
    values = _values(env_file)
    assert values["REDIS_PASSWORD_DISPATCHER"] == "mine"
    assert re.fullmatch(r"[0-9a-f]{48}", values["REDIS_PASSWORD_COLLECTOR"])
    assert f"added {len(SECRETS) - 1} of" in res.stdout


def test_compose_runs_on_what_init_wrote(tmp_path: Path) -> None:
    """Every REDIS_PASSWORD_* compose.yaml reads is one init writes, and its config
    resolves with them: each service logs in as its own user with its own password."""
    stack = (ROOT / "compose.yaml").read_text()
    read = set(re.findall(r"\$\{(REDIS_PASSWORD_[A-Z_]+|GRAFANA_ADMIN_PASSWORD)", stack))
    assert read == set(SECRETS)
    _swarm_init(tmp_path)
    values = _values(tmp_path / ".env")
    res = compose(
        tmp_path,
        ROOT / "compose.yaml",
        args=("config", "--format", "json"),
        env={k: values[k] for k in SECRETS},
    )
    assert res.returncode == 0, res.stderr
    password = values["REDIS_PASSWORD_DISPATCHER"]
    assert f"redis://dispatcher:{password}@redis:6379/0" in res.stdout
    assert "insecure-dev@" not in res.stdout  # no service falls back to the stand-in
