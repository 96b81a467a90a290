"""Request and token limits of one vendor/model, shared by every worker replica.

Algorithm: GCRA (the "virtual scheduling" form of a token bucket), one per dimension,
stored in the hash `Names.rate_limit(vendor, model)`:

* field `r` is the requests bucket's theoretical arrival time (TAT), field `t` the tokens
  bucket's, both in Redis-server microseconds. A bucket of capacity `burst` refilled at
  `limit / 60` units per second holds `(now + burst*I - TAT) / I` units, where
  `I = 60 / limit` seconds is the refill interval of one unit; TAT <= now means full.
* One Lua script reads `TIME`, works out both buckets, and either takes 1 request and
  `tokens` tokens (moving both TATs on) or takes nothing and returns how long the caller
  must wait until both would fit. Redis runs scripts one at a time, so check-and-take is
  atomic across every replica, and replicas' clocks never enter into it.
* The hash gets a PEXPIRE of the longest time a bucket needs to fill up again (plus a
  second): once it has gone, every bucket would be full anyway, so idle limiters vanish
  without changing any answer.

Guarantee: for replicas that share one Redis and agree on the limits, over any interval
of length T the requests taken are at most `request_burst + rpm/60 * T`, and the tokens
taken at most `token_burst + tpm/60 * T` (counting the estimates passed to `acquire`, as
corrected by `settle`). With the default burst (= the per-minute limit) that is at most
the limit in any minute after an idle one, and never more than twice it.

Not guaranteed:
* Fairness. Waiters retry after the wait the script returns (with jitter, so replicas do
  not stampede); nothing queues them, so a large token request can keep losing to small
  ones while the bucket is busy.
* Surviving the loss of the key (Redis restarted without persistence, failed over before
  replication): the buckets start full again, allowing one extra burst.
* `settle` that takes more than is left empties the bucket but records no debt: usage
  beyond the estimate past an empty bucket is not charged to later calls.

Redis errors (REDIS_UNAVAILABLE) propagate: whether to wait, retry or fail a task is the
caller's decision, and silently skipping the limit would overrun the vendor.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from typing import Any

import structlog
from redis.asyncio import Redis

from shared.protocol.names import Names

log = structlog.get_logger("swarm.ratelimit")

# KEYS[1]: the hash. ARGV: request interval_us, request tau_us, token interval_us,
# token tau_us, tokens, ttl_ms. An interval of 0 means the dimension is unlimited and its
# field is left alone. Returns {taken 0|1, wait_us, server seconds, server microseconds}.
_ACQUIRE_LUA = """
local key = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local fields = {'r', 't'}
local costs = {1, tonumber(ARGV[5])}
local tats = redis.call('HMGET', key, 'r', 't')
local new = {}
local wait = 0
for i = 1, 2 do
  local interval = tonumber(ARGV[2 * i - 1])
  if interval > 0 then
    local tau = tonumber(ARGV[2 * i])
    local tat = math.max(tonumber(tats[i]) or now, now)
    new[i] = tat + costs[i] * interval
    wait = math.max(wait, new[i] - tau - now)
  end
end
if wait > 0 then
  return {0, math.ceil(wait), t[1], t[2]}
end
for i = 1, 2 do
  if new[i] then
    redis.call('HSET', key, fields[i], string.format('%.17g', new[i]))
  end
end
if redis.call('PTTL', key) < tonumber(ARGV[6]) then
  redis.call('PEXPIRE', key, ARGV[6])
end
return {1, 0, t[1], t[2]}
"""

# KEYS[1]: the hash. ARGV: token interval_us, token tau_us, extra tokens (negative gives
# back), ttl_ms. The TAT stays within [now, now + tau]: the bucket between full and empty.
_SETTLE_LUA = """
local key = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local tat = math.max(tonumber(redis.call('HGET', key, 't')) or now, now)
tat = math.min(math.max(tat + tonumber(ARGV[3]) * interval, now), now + tau)
redis.call('HSET', key, 't', string.format('%.17g', tat))
if redis.call('PTTL', key) < tonumber(ARGV[4]) then
  redis.call('PEXPIRE', key, ARGV[4])
end
return string.format('%.17g', (now + tau - tat) / interval)
"""

# Read-only: how much each bucket holds now. ARGV as the first four of _ACQUIRE_LUA.
_AVAILABLE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats = redis.call('HMGET', KEYS[1], 'r', 't')
local out = {}
for i = 1, 2 do
  local interval = tonumber(ARGV[2 * i - 1])
  local level = ''
  if interval > 0 then
    local tau = tonumber(ARGV[2 * i])
    local tat = math.max(tonumber(tats[i]) or now, now)
    level = string.format('%.17g', math.max(0, (now + tau - tat) / interval))
  end
  out[i] = level
end
return out
"""


class RateLimitTimeout(TimeoutError):
    """The limit would make the caller wait past its deadline (nothing was taken)."""

    def __init__(
        self,
        *,
        vendor: str,
        model: str,
        rpm: int | None,
        tpm: int | None,
        tokens: int,
        wait_s: float,
        left_s: float,
    ) -> None:
        self.vendor = vendor
        self.model = model
        self.wait_s = wait_s
        super().__init__(
            f"rate limit of {vendor}/{model} (rpm={rpm}, tpm={tpm}): 1 request with "
            f"{tokens} tokens needs to wait {wait_s:.3f}s, but the deadline is in "
            f"{max(left_s, 0.0):.3f}s"
        )


class _Bucket:
    """One dimension's parameters in the units the scripts use (microseconds)."""

    __slots__ = ("capacity", "interval_us", "limit", "tau_us")

    def __init__(self, limit: int, capacity: int) -> None:
        self.limit = limit
        self.capacity = capacity
        self.interval_us = 60e6 / limit
        self.tau_us = capacity * self.interval_us


def _bucket(what: str, limit: int | None, burst: int | None) -> _Bucket | None:
    if limit is None:
        if burst is not None:
            raise ValueError(f"a {what} burst needs a {what} limit")
        return None
    if limit <= 0:
        raise ValueError(f"{what} limit must be positive or None (unlimited), got {limit}")
    if burst is not None and burst <= 0:
        raise ValueError(f"{what} burst must be positive, got {burst}")
    return _Bucket(limit, limit if burst is None else burst)


class RateLimiter:
    """The shared limits of one vendor/model; one instance per worker and model is enough.

    `rpm`/`tpm` are requests/tokens per minute (None = unlimited). `request_burst` and
    `token_burst` are the bucket capacities, how much an idle limiter lets through at
    once; they default to the per-minute limits.
    """

    def __init__(
        self,
        redis: Redis,
        names: Names,
        *,
        vendor: str,
        model: str,
        rpm: int | None,
        tpm: int | None,
        request_burst: int | None = None,
        token_burst: int | None = None,
    ) -> None:
        self.vendor = vendor
        self.model = model
        self.rpm = rpm
        self.tpm = tpm
        self._req = _bucket("request", rpm, request_burst)
        self._tok = _bucket("token", tpm, token_burst)
        self._redis = redis
        self._key = names.rate_limit(vendor, model)
        buckets = [b for b in (self._req, self._tok) if b is not None]
        # Once the slowest bucket could have filled up, the key carries no information.
        self._ttl_ms = math.ceil(max((b.tau_us for b in buckets), default=0) / 1000) + 1000
        self._acquire = redis.register_script(_ACQUIRE_LUA)
        self._settle = redis.register_script(_SETTLE_LUA)
        self._available = redis.register_script(_AVAILABLE_LUA)
        self.last_acquired_at: float | None = None
        """Redis-server unix time of the last successful acquire (for metrics and tests)."""

    @property
    def token_capacity(self) -> int | None:
        return None if self._tok is None else self._tok.capacity

    def _limits_args(self) -> list[float]:
        args: list[float] = []
        for b in (self._req, self._tok):
            args += [0, 0] if b is None else [b.interval_us, b.tau_us]
        return args

    async def acquire(self, tokens: int = 0, *, deadline: float | None = None) -> float:
        """Take 1 request and `tokens` tokens, waiting until both fit; seconds waited.

        Raises RateLimitTimeout (taking nothing) as soon as the wait would end past
        `deadline` (a time.monotonic() value); the deadline bounds waiting only, so what
        fits at once is taken even after it. Raises ValueError for a request larger than
        the whole token bucket: it could never fit, and clamping would overrun the vendor.
        """
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        if self._tok is not None and tokens > self._tok.capacity:
            raise ValueError(
                f"{tokens} tokens can never fit the {self.vendor}/{self.model} token bucket "
                f"(capacity {self._tok.capacity}, tpm={self.tpm}); raise token_burst or "
                "split the request"
            )
        if self._req is None and self._tok is None:
            return 0.0
        args = [*self._limits_args(), tokens, self._ttl_ms]
        started: float | None = None
        while True:
            res: Any = await self._acquire(keys=[self._key], args=args)
            if int(res[0]):
                self.last_acquired_at = int(res[2]) + int(res[3]) / 1e6
                return 0.0 if started is None else time.monotonic() - started
            wait = int(res[1]) / 1e6
            now = time.monotonic()
            if started is None:
                started = now
            if deadline is not None and now + wait > deadline:
                raise RateLimitTimeout(
                    vendor=self.vendor,
                    model=self.model,
                    rpm=self.rpm,
                    tpm=self.tpm,
                    tokens=tokens,
                    wait_s=wait,
                    left_s=deadline - now,
                )
            # Jitter spreads the replicas that were told the same wait.
            pause = wait * random.uniform(1.0, 1.1) + random.uniform(0.0, 0.005)
            if deadline is not None:
                pause = min(pause, deadline - now)
            log.debug(
                "ratelimit.wait", vendor=self.vendor, model=self.model, tokens=tokens, wait_s=pause
            )
            await asyncio.sleep(pause)

    async def settle(self, estimated: int, actual: int) -> None:
        """Charge the token bucket the difference once the real usage of a call is known.

        Takes more when `actual` exceeds the estimate, gives back when it fell short; the
        bucket stays between empty and full (no debt, no credit beyond capacity).
        """
        if estimated < 0 or actual < 0:
            raise ValueError(f"token counts must be >= 0, got {estimated=} {actual=}")
        if self._tok is None or actual == estimated:
            return
        await self._settle(
            keys=[self._key],
            args=[self._tok.interval_us, self._tok.tau_us, actual - estimated, self._ttl_ms],
        )

    async def available(self) -> tuple[float | None, float | None]:
        """Requests and tokens that could be taken now (None = unlimited): an operator's view."""
        if self._req is None and self._tok is None:
            return None, None
        res: Any = await self._available(keys=[self._key], args=self._limits_args())
        req, tok = (float(v) if v else None for v in res)
        return req, tok
