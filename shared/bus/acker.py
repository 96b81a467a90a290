"""Batched acknowledgement: many handlers' effects (the entries they publish, the keys they
set) go to Redis in one round trip, then their acks in a second, and an entry whose effect
failed is never acked (it is redelivered). A crash between the two leaves the entry
pending: it runs again, and its effect may be written twice (at-least-once, never lost).

While one batch is on the wire the next one fills, which is what lets the bus beat a
loop that acks each message alone, without ever acking before the effect is written.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from shared.bus.delivery import Effect, Fence, Outgoing, SetFields, SetKey
from shared.runtime.metrics import Metrics
from shared.runtime.redis import REDIS_UNAVAILABLE

log = structlog.get_logger("swarm.bus")

# A fenced op's effects: written only while KEYS[1] (the fence) is absent, the fence set
# last, so an error midway leaves it unset and the redelivery writes them again.
# KEYS[2..] one target per effect. ARGV[1] fence value, ARGV[2] fence TTL ms (0: none), then
# per effect: kind (x XADD, h HSET, s SET), TTL ms (for XADD: MAXLEN ~, 0: none), pair
# count n, then n name/value pairs. Returns {0} if fenced off, else {1, entries trimmed per
# effect...}.
_FENCED_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
local a = 3
local out = {1}
for k = 2, #KEYS do
  local kind, ttl, n = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local pairs_ = {}
  for j = 1, 2 * n do pairs_[j] = ARGV[a + 2 + j] end
  a = a + 3 + 2 * n
  out[k] = 0
  if kind == 'x' then
    redis.call('XADD', KEYS[k], '*', unpack(pairs_))
    if ttl > 0 then out[k] = redis.call('XTRIM', KEYS[k], 'MAXLEN', '~', ttl) end
  elseif kind == 'h' then
    redis.call('HSET', KEYS[k], unpack(pairs_))
    if ttl > 0 then redis.call('PEXPIRE', KEYS[k], ttl) end
  elseif ttl > 0 then
    redis.call('SET', KEYS[k], pairs_[2], 'PX', ttl)
  else
    redis.call('SET', KEYS[k], pairs_[2])
  end
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
return out
"""


def _new_future() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()


@dataclass(slots=True)
class AckOp:
    entry_id: str
    effects: list[Effect]
    future: asyncio.Future[None] = field(default_factory=_new_future)
    fenced_off: bool = False  # its fence existed: the effects were skipped, the entry acked


class Acker:
    def __init__(self, redis: Redis, stream: str, group: str, metrics: Metrics) -> None:
        self._redis = redis
        self._stream = stream
        self._group = group
        self._metrics = metrics
        self._ops: list[AckOp] = []
        self._fenced = redis.register_script(_FENCED_LUA)
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
                failed = await self._write_effects(ops)
                done = [op for i, op in enumerate(ops) if i not in failed]
                if done:
                    await self._redis.xack(self._stream, self._group, *(op.entry_id for op in done))
            except REDIS_UNAVAILABLE as exc:
                self._metrics.redis_errors.labels("ack").inc()
                if give_up_after is not None and tries >= give_up_after:
                    _fail(ops, exc)
                    return
                log.warning("ack.retry", error=str(exc), entries=len(ops), delay_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            for i, op in enumerate(ops):
                if op.future.done():
                    continue
                if i in failed:  # e.g. WRONGTYPE or OOM on a target: not acked, redelivered
                    op.future.set_exception(failed[i])
                else:
                    op.future.set_result(None)
            if failed:
                log.error(
                    "ack.effect_failed", entries=len(failed), error=str(next(iter(failed.values())))
                )
            return

    async def _write_effects(self, ops: list[AckOp]) -> dict[int, Exception]:
        """Write every op's effects in one round trip; the ops whose effects failed.

        Redis applies the rest of a MULTI even when one command fails (WRONGTYPE, OOM), so
        the effects go first and only the ops whose effects all landed are acked after.
        """
        owners: list[int] = []
        fenced: dict[int, list[str]] = {}  # a fenced op's result position -> its targets
        trims: dict[int, str] = {}  # an XTRIM's result position -> its stream
        async with self._redis.pipeline(transaction=False) as pipe:
            for i, op in enumerate(ops):
                fence = next((e for e in op.effects if isinstance(e, Fence)), None)
                if fence is not None:
                    keys, args = _fenced_call(fence, op.effects)
                    fenced[len(owners)] = keys[1:]
                    await self._fenced(keys=keys, args=args, client=pipe)
                    owners.append(i)
                    continue
                for effect in op.effects:
                    for trimmed in _queue(pipe, effect):
                        if trimmed is not None:
                            trims[len(owners)] = trimmed
                        owners.append(i)
            if not owners:
                return {}
            results = await pipe.execute(raise_on_error=False)
        failed: dict[int, Exception] = {}
        for position, (owner, result) in enumerate(zip(owners, results, strict=True)):
            if isinstance(result, REDIS_UNAVAILABLE):
                raise result
            if isinstance(result, Exception):
                failed.setdefault(owner, result)
            elif position in fenced:
                ops[owner].fenced_off = int(result[0]) == 0
                for target, n in zip(fenced[position], result[1:], strict=False):
                    self._count_capped(target, int(n))
            elif position in trims:
                self._count_capped(trims[position], int(result))
        return failed

    def _count_capped(self, stream: str, trimmed: int) -> None:
        if trimmed:
            self._metrics.capped.labels(stream).inc(trimmed)


def _queue(pipe: Pipeline, effect: Effect) -> list[str | None]:
    """Queue one unfenced effect's commands; for each, the stream it trims (None: no trim)."""
    if isinstance(effect, SetKey):
        pipe.set(effect.key, effect.value, px=_ms(effect.ttl_s) or None)
        return [None]
    if isinstance(effect, SetFields):
        pipe.hset(effect.key, mapping=dict(effect.fields))  # type: ignore[arg-type]
        if not effect.ttl_s:
            return [None]
        pipe.pexpire(effect.key, _ms(effect.ttl_s))
        return [None, None]
    if isinstance(effect, Outgoing):
        pipe.xadd(effect.stream, dict(effect.fields))  # type: ignore[arg-type]
        if not effect.maxlen:
            return [None]
        pipe.xtrim(effect.stream, maxlen=effect.maxlen, approximate=True)
        return [None, effect.stream]
    return []


def _fenced_call(fence: Fence, effects: list[Effect]) -> tuple[list[str], list[str | bytes | int]]:
    """KEYS and ARGV of the fenced-effects script for one op."""
    keys: list[str] = [fence.key]
    args: list[str | bytes | int] = [fence.value, _ms(fence.ttl_s)]
    for effect in effects:
        if isinstance(effect, Fence):
            continue
        if isinstance(effect, Outgoing):
            keys.append(effect.stream)
            pairs = [x for kv in effect.fields.items() for x in kv]
            args += ["x", effect.maxlen or 0, len(pairs) // 2, *pairs]
        elif isinstance(effect, SetFields):
            keys.append(effect.key)
            pairs = [x for kv in effect.fields.items() for x in kv]
            args += ["h", _ms(effect.ttl_s), len(pairs) // 2, *pairs]
        else:
            keys.append(effect.key)
            args += ["s", _ms(effect.ttl_s), 1, "", effect.value]
    return keys, args


def _ms(seconds: float | None) -> int:
    return int(seconds * 1000) if seconds else 0


def _fail(ops: list[AckOp], exc: BaseException) -> None:
    for op in ops:
        if not op.future.done():
            op.future.set_exception(exc)
