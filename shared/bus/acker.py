"""Batched acknowledgement: many handlers' acks (and the entries they publish) go to
Redis in one MULTI/EXEC, so an effect and its ack land together or not at all.

While one batch is on the wire the next one fills, which is what lets the bus beat a
loop that acks each message alone, without ever acking before the effect is written.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import structlog
from redis.asyncio import Redis

from shared.bus.delivery import Effect, SetFields, SetKey
from shared.runtime.metrics import Metrics
from shared.runtime.redis import REDIS_UNAVAILABLE

log = structlog.get_logger("swarm.bus")


def _new_future() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()


@dataclass(slots=True)
class AckOp:
    entry_id: str
    effects: list[Effect]
    future: asyncio.Future[None] = field(default_factory=_new_future)


class Acker:
    def __init__(self, redis: Redis, stream: str, group: str, metrics: Metrics) -> None:
        self._redis = redis
        self._stream = stream
        self._group = group
        self._metrics = metrics
        self._ops: list[AckOp] = []
        self._wake = asyncio.Event()
        self._closed = False

    async def submit(self, op: AckOp) -> None:
        if self._closed:
            raise RuntimeError("subscription closed: the entry stays pending and will be reclaimed")
        self._ops.append(op)
        self._wake.set()
        # Shielded: a handler cancelled at shutdown must not abandon a batch in flight.
        await asyncio.shield(op.future)

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            ops, self._ops = self._ops, []
            if ops:
                await self._flush(ops)

    async def drain(self) -> None:
        """Flush what is queued, then refuse new acks."""
        self._closed = True
        ops, self._ops = self._ops, []
        if ops:
            await self._flush(ops, give_up_after=3)

    async def _flush(self, ops: list[AckOp], give_up_after: int | None = None) -> None:
        delay, tries = 0.05, 0
        while True:
            tries += 1
            try:
                async with self._redis.pipeline(transaction=True) as pipe:
                    for op in ops:
                        for effect in op.effects:
                            if isinstance(effect, SetKey):
                                ms = int(effect.ttl_s * 1000) if effect.ttl_s else None
                                pipe.set(effect.key, effect.value, px=ms)
                            elif isinstance(effect, SetFields):
                                pipe.hset(effect.key, mapping=dict(effect.fields))  # type: ignore[arg-type]
                                if effect.ttl_s:
                                    pipe.pexpire(effect.key, int(effect.ttl_s * 1000))
                            else:
                                pipe.xadd(effect.stream, dict(effect.fields))  # type: ignore[arg-type]
                    pipe.xack(self._stream, self._group, *(op.entry_id for op in ops))
                    await pipe.execute()
            except REDIS_UNAVAILABLE as exc:
                self._metrics.redis_errors.labels("ack").inc()
                if give_up_after is not None and tries >= give_up_after:
                    _fail(ops, exc)
                    return
                log.warning("ack.retry", error=str(exc), entries=len(ops), delay_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            except Exception as exc:  # e.g. WRONGTYPE on a publish target: a misconfiguration
                log.exception("ack.failed", entries=len(ops))
                _fail(ops, exc)
                return
            for op in ops:
                if not op.future.done():
                    op.future.set_result(None)
            return


def _fail(ops: list[AckOp], exc: BaseException) -> None:
    for op in ops:
        if not op.future.done():
            op.future.set_exception(exc)
