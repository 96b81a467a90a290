"""Heartbeats: every service process says who it is and that it is alive.

A member is a Redis hash `<ns>:member:<id>` that expires `heartbeat_ttl_s` after the last
beat, plus an entry in the sorted set `<ns>:members` scored by that expiry, so the fleet
can be listed without SCAN. A consumer whose member key has expired is dead: its pending
entries are taken over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable, Mapping

import structlog
from redis.asyncio import Redis

from shared.protocol.names import Names
from shared.runtime.redis import REDIS_UNAVAILABLE

log = structlog.get_logger("swarm.membership")


class Heartbeat:
    def __init__(
        self,
        redis: Redis,
        names: Names,
        member_id: str,
        *,
        service: str,
        interval_s: float,
        ttl_s: float,
        info: Mapping[str, str] | None = None,
        live_info: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        self.member_id = member_id
        self._redis = redis
        self._names = names
        self._interval = interval_s
        self._ttl_ms = int(ttl_s * 1000)
        self._static = {
            "member_id": member_id,
            "service": service,
            "host": socket.gethostname(),
            "pid": str(os.getpid()),
            "started_at": f"{time.time():.3f}",
            **(info or {}),
        }
        self._live_info = live_info

    async def beat(self) -> None:
        fields = dict(self._static)
        if self._live_info is not None:
            fields.update(self._live_info())
        fields["seen_at"] = f"{time.time():.3f}"
        key = self._names.member(self.member_id)
        expiry_ms = int(time.time() * 1000) + self._ttl_ms
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
            pipe.pexpire(key, self._ttl_ms)
            pipe.zadd(self._names.members, {self.member_id: expiry_ms})
            await pipe.execute()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Beat until `stop` is set (or the task is cancelled); outages are logged and
        outlived. Prefer `stop`: redis-py can swallow a cancel that lands mid-command."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                await self.beat()
            except REDIS_UNAVAILABLE as exc:
                log.warning("heartbeat.failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)

    async def leave(self) -> None:
        """Remove the member at once, so peers take over anything left pending."""
        try:
            await self._redis.delete(self._names.member(self.member_id))
            await self._redis.zrem(self._names.members, self.member_id)
        except REDIS_UNAVAILABLE as exc:
            log.warning("heartbeat.leave_failed", error=str(exc))


async def live_members(redis: Redis, names: Names) -> list[dict[str, str]]:
    """Every member whose heartbeat has not expired, as string dicts."""
    now_ms = int(time.time() * 1000)
    await redis.zremrangebyscore(names.members, "-inf", now_ms)
    ids: list[bytes] = await redis.zrange(names.members, 0, -1)  # type: ignore[assignment]
    if not ids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for member_id in ids:
            pipe.hgetall(names.member(member_id.decode()))
        rows = await pipe.execute()
    return [{k.decode(): v.decode(errors="replace") for k, v in row.items()} for row in rows if row]
