"""Several SDK clients per vendor, used in turn.

An httpx2 connection pool scans its connections on every request, so one pool holding a
thousand connections spends more CPU per request than the request itself needs
(measured: 10.4 ms/request with one pool of 1,000, 2.3 ms with 50 pools of 20; see
bench/vendors.py). Spreading the connections over small pools keeps that cost flat.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import httpx2

T = TypeVar("T")

CONNECTIONS_PER_POOL = 20


class ClientPool(Generic[T]):
    """SDK clients, each on its own small connection pool; a call goes to the least busy.
    Clients are made as concurrency grows (one costs milliseconds), up to `max_connections`."""

    def __init__(
        self,
        make: Callable[[httpx2.AsyncClient], T],
        close: Callable[[T], Awaitable[None]],
        *,
        max_connections: int,
        timeout: httpx2.Timeout,
    ) -> None:
        self._max_shards = max(1, math.ceil(max_connections / CONNECTIONS_PER_POOL))
        self._per = max(1, math.ceil(max_connections / self._max_shards))
        self._make, self._close, self._timeout = make, close, timeout
        self._http: list[httpx2.AsyncClient] = []
        self.clients: list[T] = []
        self._load: list[int] = []  # calls in flight per client
        # One TLS context for every client: each would otherwise load the CA bundle again
        # (about 30 ms of CPU each, measured by bench/cpu_profile.py).
        self._tls = httpx2.create_ssl_context()
        self._grow()

    def _grow(self) -> None:
        http = httpx2.AsyncClient(
            timeout=self._timeout,
            verify=self._tls,
            limits=httpx2.Limits(max_connections=self._per, max_keepalive_connections=self._per),
        )
        self._http.append(http)
        self.clients.append(self._make(http))
        self._load.append(0)

    @contextlib.contextmanager
    def lease(self) -> Iterator[T]:
        """The least-busy client for one call: `with pool.lease() as sdk: await sdk...`."""
        shard = min(range(len(self.clients)), key=self._load.__getitem__)
        if self._load[shard] >= self._per and len(self.clients) < self._max_shards:
            self._grow()
            shard = len(self.clients) - 1
        self._load[shard] += 1
        try:
            yield self.clients[shard]
        finally:
            self._load[shard] -= 1

    async def aclose(self) -> None:
        for client in self.clients:
            await self._close(client)
        for http in self._http:
            await http.aclose()


@dataclass(frozen=True, slots=True)
class AdapterOptions:
    default_model: str
    timeout_s: float
    connect_timeout_s: float = 5.0
    max_connections: int = 1000
    logprobs: bool = False  # ask the vendor for token logprobs (the answer's confidence)

    @property
    def timeout(self) -> httpx2.Timeout:
        return httpx2.Timeout(self.timeout_s, connect=self.connect_timeout_s)


class _StainlessSDK(Protocol):
    """anthropic.AsyncAnthropic and openai.AsyncOpenAI share this constructor."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None,
        max_retries: int,
        timeout: httpx2.Timeout,
        http_client: httpx2.AsyncClient,
    ) -> None: ...

    async def close(self) -> None: ...


S = TypeVar("S", bound=_StainlessSDK)


def stainless_pool(
    sdk: type[S], api_key: str, base_url: str | None, options: AdapterOptions
) -> ClientPool[S]:
    """SDK clients with their own retries off: the worker owns retry and fallback."""
    return ClientPool(
        lambda http: sdk(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=options.timeout,
            http_client=http,
        ),
        lambda client: client.close(),
        max_connections=options.max_connections,
        timeout=options.timeout,
    )
