"""Redis for the tests, in order of preference:

1. REDIS_URL from the environment (CI's server, a developer's own);
2. a throwaway container via testcontainers, when a Docker engine answers;
3. a private `redis-server` from PATH on a free loopback port.

If none works the session fails loudly: the Redis tests never silently skip.
Every test gets its own namespace, so nothing is flushed and tests never collide.
"""

from __future__ import annotations

import os
import socket
import uuid
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


def _docker_redis() -> Iterator[str] | None:
    if not _docker_engine_answers():
        return None
    from testcontainers.community.redis import RedisContainer  # noqa: PLC0415

    def gen() -> Iterator[str]:
        with RedisContainer("redis:7.4-alpine") as rc:
            yield f"redis://{rc.get_container_host_ip()}:{rc.get_exposed_port(6379)}/0"

    return gen()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        if not answers(url, 5.0):
            pytest.fail(f"REDIS_URL is set but does not answer: {url}")
        yield url
        return
    docker_gen = _docker_redis()
    if docker_gen is not None:
        yield from docker_gen
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
async def redis(redis_url: str, bus_settings: BusSettings) -> AsyncIterator[Redis]:
    client = connect(redis_url, bus_settings)
    yield client
    await client.aclose()


@pytest.fixture
def bus(redis: Redis, names: Names, bus_settings: BusSettings) -> Bus:
    return Bus(redis, names, bus_settings, Metrics.create())
