"""Gemini's explicit context cache, one `cachedContents` entry per context version, shared
by every replica of a shard through a record in Redis (`shard:<id>:cache:<n>`).

* The first query of a version creates the entry (one replica at a time: the others wait
  for it, or answer that query with the context inline). Creation bills the cached tokens
  once, as input.
* While queries keep coming, the TTL is extended once less than half of it is left, so an
  idle cache lapses by itself `ttl/2`..`ttl` after its last query, even if every replica
  has died. A new version's first query deletes the previous version's entry.
* Storage is billed per token-hour. Each query takes the storage accrued since the previous
  query (atomically, across replicas), so the sum of the replies' costs is the bill, up to
  the idle tail after the last query.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol

import structlog
from redis.asyncio import Redis

from shared.bus import streamids
from shared.protocol import Names
from shared.runtime.metrics import Metrics

log = structlog.get_logger("swarm.megashard")

_CREATE_LOCK_S = 120.0
_WAIT_STEP_S = 0.05

# KEYS: record. ARGV: now. Returns 1 to the one caller that may create the entry.
_CLAIM_LUA = """
local name = redis.call('HGET', KEYS[1], 'name')
local expire = tonumber(redis.call('HGET', KEYS[1], 'expire_at') or '0')
if name and expire > tonumber(ARGV[1]) then return 0 end
local until_ = tonumber(redis.call('HGET', KEYS[1], 'creating_until') or '0')
if until_ > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'creating_until', tostring(tonumber(ARGV[1]) + tonumber(ARGV[2])))
return 1
"""

# KEYS: record. ARGV: now, name. Seconds of storage not yet charged to any query (up to
# now, never past the entry's expiry); marks them charged.
_ACCRUE_LUA = """
if redis.call('HGET', KEYS[1], 'name') ~= ARGV[2] then return '0' end
local now = tonumber(ARGV[1])
local expire = tonumber(redis.call('HGET', KEYS[1], 'expire_at') or '0')
local from = tonumber(redis.call('HGET', KEYS[1], 'accounted_until') or ARGV[1])
local upto = math.min(now, expire)
if upto <= from then return '0' end
redis.call('HSET', KEYS[1], 'accounted_until', tostring(upto))
return tostring(upto - from)
"""

# KEYS: record. ARGV: name. Forget the entry only if it is still this one.
_FORGET_LUA = """
if redis.call('HGET', KEYS[1], 'name') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


class ExplicitCacheClient(Protocol):
    """What GeminiClient offers beyond LLMClient."""

    async def create_cache(
        self,
        *,
        context: str,
        ttl_s: float,
        model: str | None = None,
        system: str | None = None,
        display_name: str | None = None,
    ) -> tuple[str, int]: ...

    async def extend_cache(self, name: str, ttl_s: float) -> None: ...

    async def delete_cache(self, name: str) -> None: ...


@dataclass(frozen=True, slots=True)
class CacheUse:
    """The entry a query reads, and what the query is charged for it besides the read."""

    name: str
    tokens: int
    created_tokens: int  # > 0 only for the query that created it
    storage_s: float  # seconds of storage (of `tokens`) charged to this query


class GeminiContextCache:
    def __init__(
        self,
        redis: Redis,
        names: Names,
        client: ExplicitCacheClient,
        metrics: Metrics,
        *,
        shard: str,
        model: str,
        ttl_s: float,
        system: str,
    ) -> None:
        self._redis = redis
        self._names = names
        self._client = client
        self._metrics = metrics
        self._shard = shard
        self._model = model
        self._ttl_s = ttl_s
        self._system = system
        self._claim = redis.register_script(_CLAIM_LUA)
        self._accrue = redis.register_script(_ACCRUE_LUA)
        self._forget = redis.register_script(_FORGET_LUA)
        self._extending: set[str] = set()

    def _event(self, event: str) -> None:
        self._metrics.shard_cache_events.labels(self._shard, event).inc()

    async def use(self, version: int, context: str) -> CacheUse | None:
        """The live entry for `version`, created if needed; None when this query should send
        the context inline (another replica is still creating it past our patience)."""
        key = self._names.shard_cache(self._shard, version)
        created = 0
        deadline = time.monotonic() + _CREATE_LOCK_S
        while True:
            record = await self._record(key)
            now = time.time()
            if record is not None and record[2] > now + 1:
                name, tokens, expire_at = record
                break
            if await self._claim(keys=[key], args=[f"{now:.3f}", str(_CREATE_LOCK_S)]):
                name, tokens, expire_at = await self._create(key, version, context)
                created = tokens
                break
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(_WAIT_STEP_S)
        if not created:
            self._event("hit")
            if expire_at - time.time() < self._ttl_s / 2 and name not in self._extending:
                await self._extend(key, name)
        raw = await self._accrue(keys=[key], args=[f"{time.time():.3f}", name])
        storage_s = float(raw.decode() if isinstance(raw, bytes) else raw)
        return CacheUse(name, tokens, created, storage_s)

    async def invalidate(self, version: int, name: str) -> None:
        """The vendor said the entry is gone (404): forget it so the next use recreates it."""
        self._event("expired")
        await self._forget(keys=[self._names.shard_cache(self._shard, version)], args=[name])

    async def drop(self, version: int) -> None:
        """Delete a version's entry (a newer version took over); best effort."""
        key = self._names.shard_cache(self._shard, version)
        record = await self._record(key)
        if record is None:
            return
        name = record[0]
        if await self._forget(keys=[key], args=[name]):
            try:
                await self._client.delete_cache(name)
                self._event("delete")
            except Exception as exc:  # it lapses by its TTL anyway
                log.warning("shard.cache_delete_failed", cache=name, error=str(exc))

    async def _record(self, key: str) -> tuple[str, int, float] | None:
        name, tokens, expire_at = await self._redis.hmget(key, ["name", "tokens", "expire_at"])
        if name is None or expire_at is None:
            return None
        return streamids.text(name), int(tokens or 0), float(expire_at)

    async def _create(self, key: str, version: int, context: str) -> tuple[str, int, float]:
        self._event("miss")
        try:
            name, tokens = await self._client.create_cache(
                context=context,
                ttl_s=self._ttl_s,
                model=self._model,
                system=self._system,
                display_name=f"swarm {self._shard} v{version}",
            )
        except BaseException:
            await self._redis.hdel(key, "creating_until")
            raise
        now = time.time()
        expire_at = now + self._ttl_s
        await self._redis.hset(
            key,
            mapping={
                "name": name,
                "tokens": str(tokens),
                "expire_at": f"{expire_at:.3f}",
                "accounted_until": f"{now:.3f}",
                "created_at": f"{now:.3f}",
            },
        )
        await self._redis.hdel(key, "creating_until")
        # The record outlives the entry a little, never by much: a dead swarm leaves nothing.
        await self._redis.expire(key, int(self._ttl_s * 2) + 60)
        self._event("create")
        log.info("shard.cache_created", cache=name, tokens=tokens, ttl_s=self._ttl_s)
        return name, tokens, expire_at

    async def _extend(self, key: str, name: str) -> None:
        self._extending.add(name)
        try:
            await self._client.extend_cache(name, self._ttl_s)
            expire_at = time.time() + self._ttl_s
            await self._redis.hset(key, "expire_at", f"{expire_at:.3f}")
            await self._redis.expire(key, int(self._ttl_s * 2) + 60)
            self._event("extend")
        except Exception as exc:  # still live for a while; the next query tries again
            log.warning("shard.cache_extend_failed", cache=name, error=str(exc))
        finally:
            self._extending.discard(name)
