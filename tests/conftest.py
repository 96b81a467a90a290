"""Redis for the tests, in order of preference:

1. REDIS_URL from the environment (CI's server, a developer's own);
2. a throwaway container via testcontainers, when a Docker engine answers;
3. a private `redis-server` from PATH on a free loopback port: also when an engine answers
   but the container does not start (no registry to pull the image from, say), with one
   warning that says why (tests/cli/test_redis_fallback.py).

If none works the session fails loudly: the Redis tests never silently skip.
Every test gets its own namespace, so nothing is flushed and tests never collide.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from services.cli.redis_finder import answers, private_redis_server
from shared.bus import Bus
from shared.protocol import Names
from shared.runtime.metrics import Metrics
from shared.runtime.redis import connect
from shared.runtime.settings import BusSettings


def _docker_engine_answers() -> bool:
    """A cheap probe that leaves no sockets open (the docker client's ping does)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(1)
                s.connect(host.removeprefix("unix://"))
                s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
                return b" 200 " in s.recv(64)
        parts = urlsplit(host)
        with socket.create_connection((parts.hostname or "", parts.port or 2375), timeout=1):
            return True
    except OSError:
        return False


# pyproject.toml's filterwarnings shows this warning instead of failing the test with it.
FALLBACK_WARNING = "no Redis container for the tests"


@contextlib.contextmanager
def _redis_container() -> Iterator[str]:
    """A throwaway Redis container; raises whatever stops it from starting (a pull with no
    registry, a refused create, a wait that times out), leaving no container behind."""
    from testcontainers.community.redis import RedisContainer  # noqa: PLC0415

    container = RedisContainer("redis:7.4.5-alpine")
    try:
        container.start()
        url = f"redis://{container.get_container_host_ip()}:{container.get_exposed_port(6379)}/0"
    except BaseException:
        with contextlib.suppress(Exception):  # created but not ready: remove it
            container.stop()
        raise
    try:
        yield url
    finally:
        container.stop()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        if not answers(url, 5.0):
            pytest.fail(f"REDIS_URL is set but does not answer: {url}")
        yield url
        return
    if _docker_engine_answers():
        container = contextlib.ExitStack()
        try:
            url = container.enter_context(_redis_container())
        except Exception as exc:  # any failure to start: the private server will do
            why = " ".join(str(exc).split())[:300]
            warnings.warn(
                f"{FALLBACK_WARNING}: a Docker engine answers, but the container did not "
                f"start ({type(exc).__name__}: {why}); using a private redis-server instead",
                stacklevel=1,
            )
        else:
            with container:
                yield url
            return
    try:
        with private_redis_server() as (private_url, _proc):
            yield private_url
    except RuntimeError as exc:
        pytest.fail(f"no Redis for the tests: {exc}")


@pytest.fixture
def names() -> Names:
    return Names(f"t{uuid.uuid4().hex[:12]}")


@pytest.fixture
def bus_settings() -> BusSettings:
    """Fast timings so reclaim and heartbeat paths run in seconds."""
    return BusSettings(
        block_ms=200,
        visibility_timeout_s=30,
        reclaim_interval_s=0.2,
        heartbeat_interval_s=0.2,
        heartbeat_ttl_s=1.0,
        drain_timeout_s=5,
        trim_interval_s=3600,
        connect_timeout_s=5,
    )


@pytest.fixture
def private_url() -> Iterator[str]:
    """A redis-server of this test's own, for what must not share one: its counters
    (tests/redis_counters.py), its restarts."""
    with private_redis_server() as (url, _proc):
        yield url


@pytest.fixture
async def redis(redis_url: str, bus_settings: BusSettings) -> AsyncIterator[Redis]:
    client = connect(redis_url, bus_settings)
    yield client
    await client.aclose()


@pytest.fixture
def bus(redis: Redis, names: Names, bus_settings: BusSettings) -> Bus:
    return Bus(redis, names, bus_settings, Metrics.create())
