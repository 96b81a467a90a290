"""Every image carries what its service imports, checked without Docker.

Each image of compose.yaml has its requirement set installed for real, as deploy/Dockerfile
installs it (`pip install -c requirements/constraints.txt -r <deploy/image_requirements.py's
lines>`, then swarmbus's own wheel with --no-deps), into a throwaway venv; there, the
service's entry point imports, the vendor clients it builds at start-up build, `swarm run
SERVICE ... --help` (the compose command) and `swarm --help` exit 0, and the venv holds
exactly the image's distributions (no other vendor's SDK). The venvs share one download of
the pinned wheels (pip's cache makes it quick) and are built two at a time: 45-90 s on two
cores, so these tests carry the `images` marker (`-m 'not images'` leaves them out; the
default run, `make test` and CI, includes them). They need the package index, as
`make install` does.

Statically, and in a second: every distribution that shared/ and services/ import is
declared in pyproject.toml (tests/ against the dev extra too), and building `swarm`'s
parser loads nothing beyond the core dependencies, so no command can make another image's
`swarm` fail.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from importlib.metadata import distribution, packages_distributions
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from services.cli.main import SERVICES
from services.megashard.settings import SHARD_VENDORS
from tests.deploy.conftest import ROOT
from tests.deploy.test_compose import resolved
from tests.deploy.test_images import (
    SDKS,
    _blocked_modules,
    _image_requirements,
    closure,
    image_closure,
)

# Installing seven requirement sets can take longer than the suite's default 120 s on a
# loaded machine; it happens in the setup of the first test that needs the venvs.
pytestmark = pytest.mark.timeout(900)

CONSTRAINTS = ROOT / "requirements" / "constraints.txt"
OWN = {"shared", "services", "tests", "deploy", "bench", "__future__"}


def _built_services() -> list[str]:
    """compose.yaml's services that build an image here (read at collection, so a new
    image gets its own test case without touching this file)."""
    raw = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    return sorted(name for name, svc in raw["services"].items() if "build" in svc)


# -- the venvs --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Image:
    """One compose service, its build args and command, and the venv of its image."""

    service: str
    args: dict[str, str]
    command: list[str]
    requirements: tuple[str, ...]
    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def run(self, *argv: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run in the venv as an image does: outside the checkout, no PYTHONPATH, no keys."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PYTHON", "VIRTUAL_ENV")) and not k.endswith("_API_KEY")
        }
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return subprocess.run(
            [str(a) for a in argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.venv,
            env=env,
            check=False,
        )


def _pip(*args: str | Path, python: Path | None = None) -> None:
    target = ["--python", str(python)] if python is not None else []
    res = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *target, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert res.returncode == 0, f"pip {' '.join(map(str, args))}:\n{res.stderr[-4000:]}"


def _requirements(args: dict[str, str]) -> tuple[str, ...]:
    """What deploy/Dockerfile installs for these build args."""
    return tuple(
        _image_requirements().requirements(
            ROOT / "pyproject.toml",
            args.get("EXTRAS", "").replace(" ", ",").split(","),
            args.get("PACKAGES", "").replace(",", " ").split(),
        )
    )


def _own_wheel(tmp: Path) -> Path:
    """swarmbus's wheel from what deploy/Dockerfile copies, never from the checkout itself
    (a build there would leave build/ behind; an editable install would see the dev venv)."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("shared", "services"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    _pip("wheel", "--quiet", "--no-deps", "--wheel-dir", tmp / "wheel", src)
    (wheel,) = (tmp / "wheel").glob("swarmbus-*.whl")
    return wheel


def _wheelhouse(tmp: Path, requirement_sets: Iterable[tuple[str, ...]]) -> Path:
    """Every pinned wheel any image needs, downloaded once (pip's cache makes it quick)."""
    union = tmp / "all-images.txt"
    union.write_text("\n".join(sorted({r for rs in requirement_sets for r in rs})) + "\n")
    house = tmp / "wheelhouse"
    _pip("download", "--quiet", "--dest", house, "-c", CONSTRAINTS, "-r", union)
    return house


def _image_venv(venv: Path, requirements: tuple[str, ...], house: Path, wheel: Path) -> Path:
    """One image's /opt/swarm: its requirement set, then swarmbus itself without deps."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    reqs = venv / "image-requirements.txt"
    reqs.write_text("\n".join(requirements) + "\n")
    python = venv / "bin" / "python"
    offline = ("--quiet", "--no-compile", "--no-index", "--find-links", house)
    _pip("install", *offline, "-c", CONSTRAINTS, "-r", reqs, python=python)
    _pip("install", *offline, "--no-deps", wheel, python=python)
    return venv


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Image]]:
    tmp = tmp_path_factory.mktemp("images")
    try:
        yield _build_images(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # ~400 MB of venvs


def _build_images(tmp: Path) -> dict[str, Image]:
    built = {
        n: s
        for n, s in resolved(tmp, profile="sim,console,cli")["services"].items()
        if "build" in s
    }
    assert sorted(built) == _built_services()
    requirements = {n: _requirements(s["build"]["args"]) for n, s in built.items()}
    distinct = sorted(set(requirements.values()))
    with ThreadPoolExecutor(max_workers=2) as pool:  # two cores here; pip is CPU-bound
        wheel_job = pool.submit(_own_wheel, tmp)
        house = _wheelhouse(tmp, distinct)
        wheel = wheel_job.result()
        venvs = dict(
            zip(
                distinct,
                pool.map(
                    lambda ix: _image_venv(tmp / f"venv{ix[0]}", ix[1], house, wheel),
                    enumerate(distinct),
                ),
                strict=True,
            )
        )
    return {
        name: Image(
            service=name,
            args=svc["build"]["args"],
            command=svc["command"],
            requirements=requirements[name],
            venv=venvs[requirements[name]],
        )
        for name, svc in built.items()
    }


# -- what each service does at start-up -------------------------------------------------------
_PROBE = r"""
import importlib, json, os, sys
from importlib.metadata import distributions

spec = json.loads(sys.argv[1])
os.environ["SWARM_SIMULATOR_URL"] = "http://127.0.0.1:9"  # clients build without keys
import services
assert services.__file__.startswith(sys.prefix), f"not the installed wheel: {services.__file__}"
module, _, function = spec["entry"].partition(":")
assert callable(getattr(importlib.import_module(module), function))
if spec["vendors"] is not None:  # it prices its work and builds its vendors' clients
    from shared.llm.registry import build_client, price_table
    from shared.llm.settings import VendorSettings

    vendors = VendorSettings()
    price_table(vendors)
    for vendor in spec["vendors"]:
        build_client(vendor, vendors, "probe-model")
for name in spec["imports"]:
    importlib.import_module(name)
print(json.dumps(sorted({d.metadata["Name"] for d in distributions()})))
"""


def _start_up(image: Image) -> dict[str, Any]:
    """What `swarm run` loads beyond the entry module before serving: the vendor clients
    (the worker's --vendor, a mega-shard's possible vendors), the collector's Postgres sink."""
    service = image.args["SERVICE"]
    vendors: list[str] | None = None
    imports: list[str] = []
    if service == "worker":
        vendors = [image.command[image.command.index("--vendor") + 1]]
    elif service == "megashard":
        vendors = list(SHARD_VENDORS)
    elif service == "dispatcher":
        vendors = []
    elif service == "collector":
        imports = ["psycopg"]
    return {"entry": SERVICES[service], "vendors": vendors, "imports": imports}


@dataclass(frozen=True)
class Started:
    """What one compose service did in its image's venv."""

    probe: subprocess.CompletedProcess[str]  # entry point, clients, distributions installed
    helps: dict[str, subprocess.CompletedProcess[str]]  # `swarm ...` -> its outcome


def _start(image: Image) -> Started:
    probe = image.run(image.python, "-I", "-c", _PROBE, json.dumps(_start_up(image)))
    assert image.command[0] == "swarm", image.command
    helps = {}
    for argv in ([*image.command[1:], "--help"], ["--help"]):
        helps[" ".join(["swarm", *argv])] = image.run(image.venv / "bin" / "swarm", *argv)
    return Started(probe, helps)


@pytest.fixture(scope="module")
def started(images: dict[str, Image]) -> dict[str, Started]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(images, pool.map(_start, images.values()), strict=True))


@pytest.mark.images
@pytest.mark.parametrize("service", _built_services())
def test_the_image_starts_its_service_with_what_it_installs(
    images: dict[str, Image], started: dict[str, Started], service: str
) -> None:
    image, probe = images[service], started[service].probe
    assert probe.returncode == 0, f"{service}: {probe.stderr[-3000:]}"
    installed = {canonicalize_name(n) for n in json.loads(probe.stdout.strip().splitlines()[-1])}

    # Exactly the image's closure: nothing another service needs, no other vendor's SDK.
    wanted = {canonicalize_name(Requirement(r).name) for r in image.requirements}
    assert installed & SDKS == wanted & SDKS, f"{service} has SDKs {installed & SDKS}"
    assert installed - {"swarmbus"} == set(image_closure(image.args)), service


@pytest.mark.images
@pytest.mark.parametrize("service", _built_services())
def test_swarm_run_help_and_swarm_help_work_in_the_image(
    started: dict[str, Started], service: str
) -> None:
    for command, res in started[service].helps.items():
        assert "ModuleNotFoundError" not in res.stderr, f"{command}: {res.stderr[-3000:]}"
        assert res.returncode == 0, f"{command}: {res.stderr[-3000:]}"
        assert "usage: swarm" in res.stdout, command


_IMPORTABLE = r"""
import importlib.util, json, sys

def importable(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # its parent package (google of google.genai) is missing
        return False

print(json.dumps([m for m in json.loads(sys.argv[1]) if importable(m)]))
"""


@pytest.mark.images
def test_the_dispatcher_image_has_no_vendor_sdk_nor_any_other_extra(
    images: dict[str, Image],
) -> None:
    dispatcher = images["dispatcher"]
    extras = ["anthropic", "openai", "google.genai", "httpx2", "httpx", "h11", "psycopg"]
    probe = dispatcher.run(dispatcher.python, "-I", "-c", _IMPORTABLE, json.dumps(extras))
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout) == []
    # ... while the same probe finds them where they belong (it can say yes).
    probe = images["megashard"].run(
        images["megashard"].python, "-I", "-c", _IMPORTABLE, json.dumps(extras)
    )
    assert json.loads(probe.stdout) == ["anthropic", "google.genai", "httpx2", "h11"]


# -- statically -------------------------------------------------------------------------------
def _imported_modules(paths: Iterable[Path]) -> Iterator[tuple[Path, str]]:
    """(file, dotted module) for every absolute import of a third party, lazy ones too."""
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from google import genai` imports google.genai: keep the second part
                names = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in OWN and top not in sys.stdlib_module_names:
                    yield path, name


_packages_distributions = cache(packages_distributions)


@cache
def _distribution_of(module: str) -> str | None:
    """The installed distribution that provides `module` (a namespace package such as
    `google` or `opentelemetry` is shared by several: the one whose files hold the deepest
    subpackage named, as `opentelemetry.exporter` is itself shared)."""
    parts = module.split(".")
    names = sorted(set(_packages_distributions().get(parts[0], [])))
    for depth in range(len(parts), 1, -1):
        if len(names) <= 1:
            break
        sub = "/".join(parts[:depth])
        holders = [
            n
            for n in names
            if any(str(f).startswith((f"{sub}/", f"{sub}.py")) for f in distribution(n).files or [])
        ]
        if holders:
            names = holders
            break
    return canonicalize_name(names[0]) if names else None


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    """pyproject's core dependencies and each extra's own distributions (self-references
    such as swarmbus[vendors] left out: the extras they name are checked themselves)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]

    def names(reqs: list[str]) -> set[str]:
        return {
            canonicalize_name(Requirement(r).name)
            for r in reqs
            if canonicalize_name(Requirement(r).name) != "swarmbus"
        }

    extras = {k: names(v) for k, v in project["optional-dependencies"].items()}
    return names(project["dependencies"]), extras


def _undeclared(paths: Iterable[Path], allowed: set[str]) -> list[str]:
    found = []
    for path, module in _imported_modules(paths):
        dist = _distribution_of(module)
        if dist is None or dist not in allowed:
            where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            found.append(f"{where} imports {module} ({dist or 'not installed'})")
    return sorted(set(found))


def test_every_imported_distribution_is_declared() -> None:
    core, extras = _declared()
    runtime = core.union(*(deps for extra, deps in extras.items() if extra != "dev"))
    code = [p for d in ("shared", "services") for p in sorted((ROOT / d).rglob("*.py"))]
    assert _undeclared(code, runtime) == []
    tests = sorted((ROOT / "tests").rglob("*.py"))
    assert _undeclared(tests, runtime | extras["dev"]) == []


def test_an_undeclared_import_is_caught(tmp_path: Path) -> None:
    core, _extras = _declared()
    (tmp_path / "x.py").write_text(
        "import redis\nfrom google import genai\n\ndef f():\n    import httpx2\n"
    )
    found = _undeclared([tmp_path / "x.py"], core)
    assert [line.split(" imports ")[1] for line in found] == [
        "google.genai (google-genai)",
        "httpx2 (httpx2)",
    ]


# Modules of every distribution outside the core closure are made unimportable (a library's
# optional import, such as redis trying opentelemetry, then falls back as in an image).
_PARSER_ONLY = r"""
import json, sys
blocked = set(json.loads(sys.argv[1]))
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (not a core dependency)")
sys.meta_path.insert(0, Block())
from services.cli.main import build_parser
parser = build_parser()
for argv in json.loads(sys.argv[2]):
    try:
        parser.parse_args(argv)
    except SystemExit as exc:
        assert exc.code == 0, argv
print("parsed")
"""


def test_swarms_parser_needs_only_the_core_dependencies() -> None:
    """Every image runs `swarm`: its parser, every subcommand's included, may import only
    what every image has; a command's extras are imported when that command runs."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = set(closure(project["dependencies"]))
    helps = [["--help"], *([cmd, "--help"] for cmd in ("run", "demo", "shard", "post", "dlq"))]
    res = subprocess.run(
        [sys.executable, "-c", _PARSER_ONLY, json.dumps(_blocked_modules(core)), json.dumps(helps)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0 and "parsed" in res.stdout, res.stderr[-3000:]
