"""Fixtures for the fault tests: the swarm's processes, stopped after each test.

Each process logs to its own file; set CHAOS_LOG_DIR to keep them somewhere pytest does not
rotate away (a failure names the folder)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.protocol import Names
from tests.swarm_procs import SwarmProcs


@pytest.fixture
def chaos_logs(names: Names, tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    keep = os.environ.get("CHAOS_LOG_DIR")
    return Path(keep) / f"{request.node.name}-{names.namespace}" if keep else tmp_path / "logs"


@pytest.fixture
async def swarm(redis_url: str, names: Names, chaos_logs: Path) -> AsyncIterator[SwarmProcs]:
    async with SwarmProcs(redis_url, names, chaos_logs) as procs:
        yield procs
