"""Tail a stream: every entry posted after the tail started, to every tailer (XREAD, no
consumer group), for broadcasts that each process must see and may miss while it is down
(a cancel request for a call in flight: the durable part goes through a group).

A Redis outage is waited out; entries posted during it are read once Redis is back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import structlog
from redis.asyncio import Redis

from shared.bus.streamids import text
from shared.runtime.redis import REDIS_UNAVAILABLE

log = structlog.get_logger("swarm.bus")


async def tail(
    redis: Redis, stream: str, stop: asyncio.Event, *, block_ms: int = 1000
) -> AsyncIterator[tuple[str, dict[bytes, bytes]]]:
    last: str | None = None
    while not stop.is_set():
        try:
            if last is None:  # start after what is there already
                newest: Any = await redis.xrevrange(stream, count=1)
                last = text(newest[0][0]) if newest else "0-0"
            res: Any = await redis.xread({stream: last}, count=100, block=block_ms)
        except REDIS_UNAVAILABLE as exc:
            log.warning("redis.unavailable", job="tail", stream=stream, error=str(exc))
            await asyncio.sleep(1.0)
            continue
        for _stream, entries in res or []:
            for entry_id, fields in entries:
                last = text(entry_id)
                yield last, fields
