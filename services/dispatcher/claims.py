"""Task-id claims: one intake entry per task id and attempt is forwarded, even when two
copies are handled at once; a redelivery of the winning entry still goes through.

A claim is the field `entry:<attempt>` of the task record, set to the entry id only if
absent (HSETNX). The claims of every handler waiting while one batch is on the wire go
together in the next: one round trip of plain commands for a whole read's worth of tasks.
A per-task claim script (EVALSHA: HGET, HSET, PEXPIRE) in its own round trip was most of
the dispatcher's Redis CPU (bench/dispatcher_redis.py). An entry that finds the field
taken reads the owner (HGET) in a second round trip of the same batch: it owns the task
again if it is the owner (a redelivery), else it is a duplicate.
"""

from __future__ import annotations

import asyncio
import dataclasses

from redis.asyncio import Redis

from shared.bus import streamids
from shared.runtime.redis import REDIS_UNAVAILABLE


def _new_future() -> asyncio.Future[bool]:
    return asyncio.get_running_loop().create_future()


@dataclasses.dataclass(slots=True)
class _Claim:
    key: str
    field: str
    entry_id: str
    won: asyncio.Future[bool] = dataclasses.field(default_factory=_new_future)


class TaskClaims:
    """`claim(record, field, entry_id)`: True if this entry owns the task id (it set the
    field first, or set it before and is being redelivered).

    Every claim also sets the record's TTL (PEXPIRE), so a record whose task goes no
    further (refused, dead-lettered, or a crash before its effects) still expires.
    """

    def __init__(self, redis: Redis, ttl_s: float) -> None:
        self._redis = redis
        self._ttl_ms = int(ttl_s * 1000)
        self._queued: list[_Claim] = []
        self._sender: asyncio.Task[None] | None = None

    async def claim(self, key: str, field: str, entry_id: str) -> bool:
        claim = _Claim(key, field, entry_id)
        self._queued.append(claim)
        if self._sender is None:
            self._sender = asyncio.create_task(self._send(), name="task-claims")
        return await claim.won

    async def _send(self) -> None:
        """Send what is queued, batch after batch, until nothing is left."""
        batch: list[_Claim] = []
        try:
            while self._queued:
                batch, self._queued = self._queued, []
                try:
                    await self._decide(batch)
                except Exception as exc:  # e.g. Redis unavailable: each handler retries
                    _fail(batch, exc)
        except BaseException as exc:  # cancelled: no claim is left waiting forever
            _fail([*batch, *self._queued], exc)
            self._queued = []
            raise
        finally:
            self._sender = None

    async def close(self) -> None:
        """Wait for the batch on the wire, if any (its handlers may be gone)."""
        if self._sender is not None:
            await asyncio.gather(self._sender, return_exceptions=True)

    async def _decide(self, batch: list[_Claim]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for c in batch:
                pipe.hsetnx(c.key, c.field, c.entry_id)
                pipe.pexpire(c.key, self._ttl_ms)
            replies = await pipe.execute(raise_on_error=False)
        taken: list[_Claim] = []
        for c, was_set in zip(batch, replies[::2], strict=True):
            if _settled(c, was_set):
                continue
            if was_set:
                c.won.set_result(True)
            else:
                taken.append(c)
        if not taken:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for c in taken:
                pipe.hget(c.key, c.field)
            owners = await pipe.execute(raise_on_error=False)
        for c, owner in zip(taken, owners, strict=True):
            if _settled(c, owner):
                continue
            if owner is None:  # released since (a replay): claim it again in the next batch
                self._queued.append(c)
            else:
                c.won.set_result(streamids.text(owner) == c.entry_id)


def _settled(claim: _Claim, reply: object) -> bool:
    """Whether `claim` needs no more: its handler is gone, or its command failed (that one
    claim fails, say WRONGTYPE on its key; the rest of the batch goes on). Redis
    unavailable fails the whole batch."""
    if isinstance(reply, REDIS_UNAVAILABLE):
        raise reply
    if claim.won.done():
        return True
    if isinstance(reply, Exception):
        claim.won.set_exception(reply)
        return True
    return False


def _fail(claims: list[_Claim], exc: BaseException) -> None:
    for c in claims:
        if not c.won.done():
            c.won.set_exception(exc)
