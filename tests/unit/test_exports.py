"""The public surface of shared.protocol, and its promise to stay free of I/O."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types
from pathlib import Path

import pytest

import shared.protocol

REPO_ROOT = Path(__file__).resolve().parents[2]

EXPORTED = [
    "DEFAULT_NAMESPACE",
    "KNOWN_VENDORS",
    "SCHEMA_VERSION",
    "AttemptRecord",
    "Cancel",
    "Complexity",
    "ContextQuery",
    "ContextReply",
    "DecodeError",
    "FieldProblem",
    "Finding",
    "Names",
    "ProtocolError",
    "Rejection",
    "Status",
    "Task",
    "Urgency",
    "decode",
    "decode_json",
    "decode_rejection",
    "encode",
    "encode_data",
    "encode_rejection",
    "new_id",
    "text_fields",
]


def test_exported_members_are_pinned() -> None:
    assert shared.protocol.__all__ == EXPORTED


def test_every_public_member_is_exported() -> None:
    public = {
        name
        for name, value in vars(shared.protocol).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(shared.protocol.__all__)


@pytest.mark.parametrize("name", EXPORTED)
def test_every_exported_name_is_importable(name: str) -> None:
    module = importlib.import_module("shared.protocol")
    assert getattr(module, name) is not None
    namespace: dict[str, object] = {}
    exec(f"from shared.protocol import {name}", namespace)
    assert namespace[name] is getattr(module, name)


def test_star_import_gives_exactly_the_exported_names() -> None:
    namespace: dict[str, object] = {}
    exec("from shared.protocol import *", namespace)
    assert sorted(n for n in namespace if n != "__builtins__") == sorted(EXPORTED)


def test_protocol_imports_neither_redis_nor_structlog() -> None:
    # A fresh interpreter: this test process has already imported redis via conftest.
    code = (
        "import shared.protocol, sys; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('redis', 'structlog')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
