"""Cooldowns: a vendor/model that keeps failing is rested for a while, swarm-wide.

`threshold` failures within `window_s` (a fixed window opened by the first failure) start
a cooldown of `period_s`: the key `Names.cooldown(vendor, model)` exists, with that TTL,
for as long as it lasts, so every replica and the dispatcher see the same state. A
success breaks the streak. Failures reported while a cooldown runs are not counted: they
are mostly calls that were already in flight, and must neither extend the cooldown nor
start the next one early.

The script that starts a cooldown also indexes it: `Names.cooldowns`, a sorted set of
`<vendor>:<model>` scored by the cooldown's end (unix ms, Redis time). `cooling()` reads
that index, never SCANs the keyspace (whose cost grows with every key on the server,
other swarms' included), and keeps only members whose cooldown key still exists: the key
is the truth (DEL ends a cooldown early), the index only says where to look.

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

# KEYS: failures counter, cooldown key, the cooldowns index. ARGV: threshold, window_ms,
# period_ms, the cooldown's value, its index member. Returns 1 if this failure started a
# cooldown.
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
local now = redis.call('TIME')
local ends = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + tonumber(ARGV[3])
local fresh = redis.call('EXISTS', KEYS[3]) == 0
redis.call('ZADD', KEYS[3], ends, ARGV[5])
-- The index lasts as long as its longest cooldown (one an operator made without a TTL stays).
local ttl = redis.call('PTTL', KEYS[3])
if fresh or (ttl >= 0 and ttl < tonumber(ARGV[3])) then
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
end
return 1
"""

# KEYS: the cooldowns index. Drops members whose cooldown is over (by Redis time) and
# returns the others, with their scores.
_COOLING_LUA = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ms, '+inf')
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
        self._cooling = redis.register_script(_COOLING_LUA)

    async def failure(self, vendor: str, model: str) -> bool:
        """Count a failure; True if it was the one that started a cooldown."""
        started = await self._failure(
            keys=[
                self._names.failures(vendor, model),
                self._names.cooldown(vendor, model),
                self._names.cooldowns,
            ],
            # The value names the pair, so readers need not parse keys (models contain ':').
            args=[
                self.threshold,
                self._window_ms,
                self._period_ms,
                json.dumps([vendor, model]),
                index_member(vendor, model),
            ],
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
        """Every vendor/model cooling down now, with seconds left: the index's members
        whose cooldown key still exists (one script call; a PTTL each only when some cool)."""
        members: list[bytes | str] = await self._cooling(keys=[self._names.cooldowns])
        pairs = [p for p in map(_index_pair, members) if p is not None]
        if not pairs:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for vendor, model in pairs:
                pipe.pttl(self._names.cooldown(vendor, model))
            replies: list[Any] = await pipe.execute()
        out: dict[tuple[str, str], float] = {}
        for pair, pttl in zip(pairs, replies, strict=True):
            left = _seconds(int(pttl))
            if left > 0:
                out[pair] = left
        return out


def index_member(vendor: str, model: str) -> str:
    """A cooldown's member in `Names.cooldowns`: `<vendor>:<model>` (the key's suffix; a
    vendor name has no ':', a model's may)."""
    return f"{vendor}:{model}"


def _index_pair(member: bytes | str) -> tuple[str, str] | None:
    text = member.decode(errors="replace") if isinstance(member, bytes) else member
    vendor, sep, model = text.partition(":")
    return (vendor, model) if sep and vendor and model else None


def _seconds(pttl_ms: int) -> float:
    if pttl_ms == -1:
        return math.inf
    return max(pttl_ms, 0) / 1000
