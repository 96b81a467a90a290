"""One place that builds Redis clients: timeouts, retries and readiness."""

from __future__ import annotations

import asyncio
import time

import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.runtime.settings import BusSettings, redact_url

log = structlog.get_logger("swarm.redis")

REDIS_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


def connect(url: str, bus: BusSettings) -> Redis:
    """A bytes client (stream fields are bytes) that retries connection blips itself.

    `from_url` has no retries unless given one, and its socket timeout must exceed the
    XREADGROUP BLOCK (redis-py does not extend it for blocking reads). The pool blocks
    when every connection is busy instead of raising (redis-py's default pool caps at 100
    and fails the 101st caller), and is sized for every delivery in flight at once.
    """
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=bus.max_in_flight + 32,
        timeout=bus.socket_timeout_s,
        decode_responses=False,
        socket_timeout=bus.socket_timeout_s,
        socket_connect_timeout=5.0,
        socket_keepalive=True,
        health_check_interval=30,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=3),
    )
    return Redis.from_pool(pool)  # closing the client closes the pool


async def wait_ready(redis: Redis, url: str, timeout_s: float) -> None:
    """PING until Redis answers or `timeout_s` passes; then raise with a clear message."""
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while True:
        try:
            await redis.ping()
            return
        except (AuthenticationError, AuthenticationWrongNumberOfArgsError) as exc:
            raise PermissionError(
                f"Redis at {redact_url(url)} refused the credentials in REDIS_URL: {exc}"
            ) from None
        except REDIS_UNAVAILABLE as exc:
            if time.monotonic() + delay > deadline:
                raise ConnectionError(
                    f"Redis at {redact_url(url)} did not answer within {timeout_s:.0f}s: {exc}. "
                    "Start one (redis-server) or set REDIS_URL."
                ) from exc
            log.warning("redis.waiting", url=redact_url(url), error=str(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
