"""The SDK client pool: connections spread over small pools, and one TLS context for all of
them (each context loads the CA bundle: about 30 ms of CPU)."""

from __future__ import annotations

import contextlib
import ssl
from typing import Any

import httpx2
import pytest

from shared.llm.pool import CONNECTIONS_PER_POOL, ClientPool


async def _close(_client: Any) -> None:
    return None


async def test_a_grown_pool_loads_the_ca_bundle_once(monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[int] = []
    real = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> Any:
        loads.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    pool: ClientPool[httpx2.AsyncClient] = ClientPool(
        lambda http: http, _close, max_connections=100, timeout=httpx2.Timeout(5.0)
    )
    with contextlib.ExitStack() as leases:
        clients = {id(leases.enter_context(pool.lease())) for _ in range(100)}
    assert len(clients) == 100 // CONNECTIONS_PER_POOL  # grown to five clients
    assert loads == [1]
    await pool.aclose()
