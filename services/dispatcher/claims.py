"""Task-id claims: one intake entry per task id and attempt is forwarded, even when two
copies are handled at once; a redelivery of the winning entry still goes through.

A claim is the field `entry:<attempt>` of the task record, set to the entry id only if
absent (HSETNX). The claims of every handler waiting while one batch is on the wire go
together in the next: one round trip of plain commands for a whole read's worth of tasks.
A per-task claim script (EVALSHA: HGET, HSET, PEXPIRE) in its own round trip was most of
the dispatcher's Redis CPU (bench/dispatcher_redis.py). An entry that finds the field
taken reads the owner (HGET) in the next batch: it owns the task again if it is the owner
(a redelivery), else it is a duplicate. Batches are shared.bus.pipeline_batch's.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from shared.bus import streamids
from shared.bus.pipeline_batch import PipelineBatch


class TaskClaims:
    """`claim(record, field, entry_id)`: True if this entry owns the task id (it set the
    field first, or set it before and is being redelivered).

    Every claim also sets the record's TTL (PEXPIRE), so a record whose task goes no
    further (refused, dead-lettered, or a crash before its effects) still expires.
    """

    def __init__(self, redis: Redis, ttl_s: float) -> None:
        self._batch = PipelineBatch(redis)
        self._ttl_ms = int(ttl_s * 1000)

    async def claim(self, key: str, field: str, entry_id: str) -> bool:
        def take(pipe: Pipeline) -> None:
            pipe.hsetnx(key, field, entry_id)
            pipe.pexpire(key, self._ttl_ms)

        while True:
            was_set, _expiry = await self._batch.call(take)
            if was_set:
                return True
            owner = await self._batch.call(lambda pipe: pipe.hget(key, field))
            if owner is not None:
                return bool(streamids.text(owner) == entry_id)
            # Released since (a replay): claim it again in the next batch.

    async def close(self) -> None:
        """Wait for the batch on the wire, if any (its handlers may be gone)."""
        await self._batch.close()
