"""The vendor simulator for the contract suite, two ways: in this process, and as a separate
process started the way users start it (`swarm run simulator --port N`)."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.simulator.process import spawn_simulator
from services.simulator.server import Simulator

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def simulator_process() -> Iterator[str]:
    try:
        proc, url = spawn_simulator()
    except RuntimeError as exc:
        pytest.fail(f"`swarm run simulator`: {exc}")
    yield url
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0


@pytest.fixture(params=["in-process", "swarm-run-simulator"])
async def simulator_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    if request.param == "in-process":
        sim = Simulator()
        await sim.start()
        try:
            yield sim.base_url
        finally:
            await sim.stop()
    else:
        yield request.getfixturevalue("simulator_process")
