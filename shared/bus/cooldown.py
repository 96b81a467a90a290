"""Cooldowns: a vendor/model that keeps failing is rested for a while, swarm-wide.

`threshold` failures within `window_s` (a fixed window opened by the first failure) start
a cooldown of `period_s`: the key `Names.cooldown(vendor, model)` exists, with that TTL,
for as long as it lasts, so every replica and the dispatcher see the same state. A
success breaks the streak. Failures reported while a cooldown runs are not counted: they
are mostly calls that were already in flight, and must neither extend the cooldown nor
start the next one early.

Redis errors (REDIS_UNAVAILABLE) propagate; the caller decides what an outage means.
"""

from __future__ import annotations

import json
import math
from typing import Any

import structlog
from redis.asyncio import Redis

from shared.protocol.names import Names

log = structlog.get_logger("swarm.cooldown")

# KEYS: failures counter, cooldown key. ARGV: threshold, window_ms, period_ms, the
# cooldown's value. Returns 1 if this failure started a cooldown.
_FAILURE_LUA = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
local n = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if n < tonumber(ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[3])
redis.call('DEL', KEYS[1])
return 1
"""


def _ms(seconds: float, what: str) -> int:
    if not seconds > 0:
        raise ValueError(f"{what} must be positive, got {seconds}")
    return max(1, round(seconds * 1000))


class Cooldowns:
    """Failure streaks and cooldowns of every vendor/model of one swarm."""

    def __init__(
        self,
        redis: Redis,
        names: Names,
        *,
        threshold: int = 5,
        window_s: float = 60,
        period_s: float = 60,
    ) -> None:
        if threshold < 1:
            raise ValueError(f"threshold must be >= 1, got {threshold}")
        self.threshold = threshold
        self._window_ms = _ms(window_s, "window_s")
        self._period_ms = _ms(period_s, "period_s")
        self._redis = redis
        self._names = names
        self._failure = redis.register_script(_FAILURE_LUA)

    async def failure(self, vendor: str, model: str) -> bool:
        """Count a failure; True if it was the one that started a cooldown."""
        started = await self._failure(
            keys=[self._names.failures(vendor, model), self._names.cooldown(vendor, model)],
            # The value names the pair, so cooling() need not parse keys (models contain ':').
            args=[self.threshold, self._window_ms, self._period_ms, json.dumps([vendor, model])],
        )
        if int(started):
            log.warning(
                "cooldown.started",
                vendor=vendor,
                model=model,
                failures=self.threshold,
                period_s=self._period_ms / 1000,
            )
            return True
        return False

    async def success(self, vendor: str, model: str) -> None:
        """A success breaks the failure streak (it does not end a running cooldown)."""
        await self._redis.delete(self._names.failures(vendor, model))

    async def remaining(self, vendor: str, model: str) -> float:
        """Seconds of cooldown left: 0.0 if none, inf if someone set it without a TTL."""
        return _seconds(int(await self._redis.pttl(self._names.cooldown(vendor, model))))

    async def cooling(self) -> dict[tuple[str, str], float]:
        """Every vendor/model cooling down now, with seconds left (SCAN: operator's view)."""
        pattern = self._names.cooldown("*", "*")
        keys: set[bytes] = set()  # SCAN may return a key twice
        async for key in self._redis.scan_iter(match=pattern, count=500):
            keys.add(key)
        if not keys:
            return {}
        ordered = sorted(keys)
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in ordered:
                pipe.get(key)
                pipe.pttl(key)
            replies: list[Any] = await pipe.execute()
        out: dict[tuple[str, str], float] = {}
        for key, value, pttl in zip(ordered, replies[::2], replies[1::2], strict=True):
            pair = self._pair(key.decode(errors="replace"), value, pattern)
            left = _seconds(int(pttl))
            if pair is not None and left > 0:
                out[pair] = left
        return out

    def _pair(self, key: str, value: bytes | None, pattern: str) -> tuple[str, str] | None:
        try:
            vendor, model = json.loads(value or b"")
        except (ValueError, TypeError):
            # Not set by failure() (an operator's SET): the vendor is the part up to ':'.
            vendor, _, model = key.removeprefix(pattern[: pattern.index("*")]).partition(":")
        if not isinstance(vendor, str) or not isinstance(model, str):
            return None
        return (vendor, model) if self._names.cooldown(vendor, model) == key else None


def _seconds(pttl_ms: int) -> float:
    if pttl_ms == -1:
        return math.inf
    return max(pttl_ms, 0) / 1000
