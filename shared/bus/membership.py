"""Heartbeats: every service process says who it is and that it is alive.

A member is a Redis hash `<ns>:member:<id>` that expires `heartbeat_ttl_s` after the last
beat, plus an entry in the sorted set `<ns>:members` scored by that expiry, so the fleet
can be listed without SCAN. A consumer whose member key has expired is dead: its pending
entries are taken over at once.

The beats come from a thread with its own small synchronous connection, not from the
event loop: a loop starved by CPU-bound work (or thousands of ready tasks) can go seconds
without a turn, and a live worker judged dead makes peers pay for its calls again. The
loop still vouches for itself: it ticks every interval (handing the thread its latest
`live_info`), and the thread withholds beats once the last tick is older than
`loop_stall_s`, so a deadlocked process still loses its membership. A SIGSTOPped or
killed process beats no more, thread included.

A worker's hash also says which models it serves: `models`, comma-separated (its default
first); `models_field` writes it and `member_models` reads it back (a member that has
only the older single `model` field serves that one). The dispatcher routes a task pinned
to a model that no price table knows to a vendor whose live workers announce it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import structlog
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.protocol.names import Names
from shared.runtime.redis import REDIS_UNAVAILABLE

log = structlog.get_logger("swarm.membership")

MODELS_FIELD = "models"

# Sync client options copied from the async client's pool: where Redis is and who we are.
_SYNC_OPTIONS = frozenset(inspect.signature(SyncRedis.__init__).parameters)
_ADDRESS = ("host", "port", "db", "username", "password")


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
        loop_stall_s: float = 30.0,
    ) -> None:
        self.member_id = member_id
        self._redis = redis
        self._names = names
        self._interval = interval_s
        self._ttl_s = ttl_s
        self._ttl_ms = int(ttl_s * 1000)
        self._loop_stall_s = loop_stall_s
        self._static = {
            "member_id": member_id,
            "service": service,
            "host": socket.gethostname(),
            "pid": str(os.getpid()),
            "started_at": f"{time.time():.3f}",
            **(info or {}),
        }
        self._live_info = live_info
        # Written by the loop, read by the thread: whole values swapped, never mutated.
        self._fields: dict[str, str] = dict(self._static)
        self._tick = time.monotonic()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    def _snapshot(self) -> None:
        fields = dict(self._static)
        if self._live_info is not None:
            fields.update(self._live_info())
        self._fields = fields
        self._tick = time.monotonic()

    def _queue(self, pipe: Any) -> None:
        """One beat's commands on `pipe` (async or sync: the same calls)."""
        fields = {**self._fields, "seen_at": f"{time.time():.3f}"}
        key = self._names.member(self.member_id)
        pipe.hset(key, mapping=fields)
        pipe.pexpire(key, self._ttl_ms)
        pipe.zadd(self._names.members, {self.member_id: int(time.time() * 1000) + self._ttl_ms})

    async def beat(self) -> None:
        """One beat from the loop (the first, before reading, so peers never misjudge us)."""
        self._snapshot()
        async with self._redis.pipeline(transaction=True) as pipe:
            self._queue(pipe)
            await pipe.execute()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Beat (from a thread) until `stop` is set or the task is cancelled; outages are
        logged and outlived. Prefer `stop`: redis-py can swallow a cancel that lands
        mid-command."""
        stop = stop or asyncio.Event()
        self._snapshot()
        self._halt.clear()
        thread = threading.Thread(target=self._beat_forever, name="heartbeat", daemon=True)
        self._thread = thread
        thread.start()
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._interval)
                self._snapshot()
        finally:
            await self._stop_thread()

    async def _stop_thread(self) -> None:
        self._halt.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            # Bounded by the thread's socket timeouts: a beat on the wire ends within the TTL.
            await asyncio.to_thread(thread.join, self._ttl_s * 2 + 1)

    def _beat_forever(self) -> None:
        client = self._sync_client()
        withheld = False
        try:
            while not self._halt.wait(self._interval):
                stalled_s = time.monotonic() - self._tick
                if stalled_s > self._loop_stall_s:
                    if not withheld:  # once per stall: peers will take our work over
                        log.error("heartbeat.withheld", loop_stalled_s=round(stalled_s, 1))
                    withheld = True
                    continue
                if withheld:
                    log.warning("heartbeat.resumed", loop_stalled_s=round(stalled_s, 1))
                    withheld = False
                try:
                    with client.pipeline(transaction=True) as pipe:
                        self._queue(pipe)
                        pipe.execute()
                except REDIS_UNAVAILABLE as exc:
                    log.warning("heartbeat.failed", error=str(exc))
                except Exception:  # a refusal (ACL, OOM): say so each beat, never die quietly
                    log.exception("heartbeat.refused")
        finally:
            client.close()

    def _sync_client(self) -> SyncRedis:
        """A one-connection client to the same server and user as the loop's, with
        timeouts within the TTL (a beat later than that is no use) and no backoff."""
        pool = self._redis.connection_pool
        kwargs = dict(pool.connection_kwargs)
        opts: dict[str, Any] = {k: kwargs[k] for k in _ADDRESS if k in kwargs}
        if "path" in kwargs:
            opts["unix_socket_path"] = kwargs["path"]
        if "SSL" in pool.connection_class.__name__:
            opts["ssl"] = True
            opts.update({k: v for k, v in kwargs.items() if k.startswith("ssl_")})
        return SyncRedis(
            **{k: v for k, v in opts.items() if k in _SYNC_OPTIONS},
            socket_timeout=self._ttl_s,
            socket_connect_timeout=self._ttl_s,
            retry=Retry(NoBackoff(), 1),
            single_connection_client=True,
        )

    async def leave(self) -> None:
        """Remove the member at once, so peers take over anything left pending."""
        await self._stop_thread()  # or a beat on the wire could bring the member back
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


def models_field(models: Iterable[str]) -> str:
    """The `models` value of a member hash: names, stripped, de-duplicated, comma-separated."""
    return ",".join(dict.fromkeys(m.strip() for m in models if m.strip()))


def member_models(member: Mapping[str, str]) -> tuple[str, ...]:
    """The models a member announces: its `models` field, else its single `model`."""
    raw = member.get(MODELS_FIELD) or member.get("model") or ""
    return tuple(dict.fromkeys(m.strip() for m in raw.split(",") if m.strip()))
