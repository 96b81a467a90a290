"""One place that builds Redis clients: timeouts, retries and readiness.

Readiness failures are configuration errors a service exits on (shared.runtime.lifecycle):
`RedisRefused` (the credentials in REDIS_URL, at once, exit 2) and `RedisUnreachable` (no
answer within SWARM_CONNECT_TIMEOUT_S, exit 3). While it waits, a service says so every
`PROGRESS_EVERY_S` seconds (`redis.waiting`), never silently.
"""

from __future__ import annotations

import asyncio
import functools
import time

import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.driver_info import DriverInfo
from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.runtime.config_errors import EXIT_UNREACHABLE, ConfigError, Problem
from shared.runtime.redis_packing import hiredis_packing
from shared.runtime.settings import BusSettings, redact_url

log = structlog.get_logger("swarm.redis")

REDIS_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
PROGRESS_EVERY_S = 5.0


class RedisRefused(ConfigError, PermissionError):
    """Redis answered and refused the credentials in REDIS_URL: fix the URL."""

    event = "redis.refused"


class RedisUnreachable(ConfigError, ConnectionError):
    """Redis did not answer within the connect timeout (down, or REDIS_URL points nowhere)."""

    event = "redis.unreachable"
    exit_code = EXIT_UNREACHABLE


@functools.cache
def _driver_info() -> DriverInfo:
    return DriverInfo()


def connect(url: str, bus: BusSettings) -> Redis:
    """A bytes client (stream fields are bytes) that retries connection blips itself.

    `from_url` has no retries unless given one, and its socket timeout must exceed the
    XREADGROUP BLOCK (redis-py does not extend it for blocking reads). The pool blocks
    when every connection is busy instead of raising (redis-py's default pool caps at 100
    and fails the 101st caller), and is sized for every delivery in flight at once.
    """
    pool = BlockingConnectionPool.from_url(
        url,
        # Built once: redis-py otherwise reads its version from the package metadata for
        # every new connection (about 2.7 ms of CPU each, bench/cpu_profile.py).
        driver_info=_driver_info(),
        max_connections=bus.max_in_flight + 32,
        timeout=bus.socket_timeout_s,
        decode_responses=False,
        socket_timeout=bus.socket_timeout_s,
        socket_connect_timeout=5.0,
        socket_keepalive=True,
        health_check_interval=30,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=3),
    )
    pool.connection_class = hiredis_packing(pool.connection_class)  # plain, TLS or socket
    return Redis.from_pool(pool)  # closing the client closes the pool


async def wait_ready(redis: Redis, url: str, timeout_s: float) -> None:
    """PING until Redis answers or `timeout_s` passes, saying so every few seconds; then
    raise RedisUnreachable. Refused credentials raise RedisRefused at once."""
    where = redact_url(url)
    started = time.monotonic()
    deadline = started + timeout_s
    delay = 0.1
    said_at = float("-inf")
    while True:
        try:
            # Bounded: a host that accepts and never answers must not outlast the deadline
            # (redis-py retries a connect itself) nor silence the progress lines.
            left = max(min(deadline - time.monotonic(), PROGRESS_EVERY_S), 0.1)
            await asyncio.wait_for(redis.ping(), left)
            return
        except (AuthenticationError, AuthenticationWrongNumberOfArgsError) as exc:
            refused = f"Redis at {where} refused the credentials in REDIS_URL: {exc}"
            raise RedisRefused(Problem("REDIS_URL", refused)) from None
        except REDIS_UNAVAILABLE as exc:
            error = str(exc).rstrip(".") or f"no reply ({type(exc).__name__})"
            now = time.monotonic()
            if now + delay > deadline:
                raise RedisUnreachable(
                    Problem(
                        "REDIS_URL",
                        f"Redis at {where} (REDIS_URL) did not answer within {timeout_s:g}s "
                        f"(SWARM_CONNECT_TIMEOUT_S): {error}. Start one (redis-server) or set "
                        "REDIS_URL.",
                    )
                ) from exc
            if now - said_at >= PROGRESS_EVERY_S:
                said_at = now
                log.warning(
                    "redis.waiting",
                    message=f"waiting for Redis at {where} (REDIS_URL): {error}",
                    variable="REDIS_URL",
                    waited_s=round(now - started, 1),
                    timeout_s=timeout_s,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
