"""The dependency rule: services never import each other; shared never imports services;
the protocol package is pure data (no Redis, no logging setup, nothing else of ours)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _cross_service_imports(services_root: Path) -> list[str]:
    """Imports of one service by another; `services.cli` is the front end, exempt."""
    found = []
    for folder in sorted(p for p in services_root.iterdir() if (p / "__init__.py").exists()):
        if folder.name == "cli":
            continue
        for path in sorted(folder.rglob("*.py")):
            for module in _imports(path):
                parts = module.split(".")
                if parts[0] == "services" and len(parts) > 1 and parts[1] != folder.name:
                    found.append(f"{path.relative_to(services_root)} imports {module}")
    return found


def test_services_never_import_each_other() -> None:
    assert _cross_service_imports(ROOT / "services") == []


def test_a_cross_service_import_is_caught(tmp_path: Path) -> None:
    for name, body in (
        ("worker", "from services.dispatcher.router import route\n"),
        ("dispatcher", "import services.dispatcher.router\n"),
        ("cli", "import services.worker\n"),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
        (tmp_path / name / "x.py").write_text(body)
    assert _cross_service_imports(tmp_path) == ["worker/x.py imports services.dispatcher.router"]


def test_shared_never_imports_services() -> None:
    for path in _files("shared"):
        bad = [m for m in _imports(path) if m.split(".")[0] == "services"]
        assert bad == [], f"{path.relative_to(ROOT)} imports {bad}"


def test_protocol_is_pure_data() -> None:
    allowed_roots = {"pydantic", "shared", "__future__"}
    for path in _files("shared/protocol"):
        for module in _imports(path):
            root = module.split(".")[0]
            if root == "shared":
                assert module.startswith("shared.protocol"), f"{path.name} imports {module}"
            elif root not in allowed_roots:
                assert root in _stdlib(), f"{path.name} imports third-party {module}"


def _stdlib() -> frozenset[str]:
    import sys  # noqa: PLC0415

    return frozenset(sys.stdlib_module_names)
