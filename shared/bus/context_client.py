"""The asking side of context queries: send a ContextQuery to a mega-shard, wait for its reply.

One `ContextClient` per worker process. It owns one background reader of the process's
private reply stream (`<ns>:replies:<requester_id>`) and hands each ContextReply to the
`ask` waiting for it, matched by `query_id`. Replies travel on a stream, never pub/sub,
and the reader keeps its own cursor (`XREAD` from the last id it has seen, starting from the
id current at `start()`), so a reply that lands before its asker awaits it, or between
two reads, is still delivered.

The reply stream has no consumer group: only this process reads it. So this process
alone keeps it tidy: every send refreshes its expiry (`reply_ttl_s`, so the stream of a
dead worker disappears by itself), and after each read the replies already handled are
trimmed (`XTRIM MINID ~`, which never removes an entry the reader has not seen).

    async with ContextClient(bus, requester_id=member_id) as ctx:
        reply = await ctx.ask(task.parent_shard, "Where is the 429 retry policy?")
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from redis.asyncio import Redis

from shared.bus import streamids
from shared.bus.bus import Bus
from shared.bus.membership import live_members
from shared.protocol import ContextQuery, ContextReply, DecodeError, Status, decode, encode
from shared.protocol.tracecontext import TraceContext
from shared.runtime.redis import REDIS_UNAVAILABLE

log = structlog.get_logger("swarm.context")

MEGASHARD_SERVICE = "megashard"
_READ_COUNT = 100
_IDENTIFIER_RE = re.compile(r"^\S{1,200}$")

# Make sure the reply stream exists and carries an expiry *before* any reply is written to
# it: a stream created by the shard's XADD would have no TTL, and would outlive a worker
# that died before reading it. A missing stream is created empty (XADD then XDEL of a
# placeholder, atomically: no reader ever sees it). Returns the id of the newest entry,
# the point a fresh reader starts after.
_TOUCH_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  local id = redis.call('XADD', KEYS[1], '*', 'placeholder', '1')
  redis.call('XDEL', KEYS[1], id)
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if last[1] then return last[1][1] end
return '0-0'
"""


class ContextUnavailable(Exception):
    """No usable context: the shard did not answer in time, answered `failed`, or the
    client was closed while waiting. A worker catches it and goes on without context
    (or fails its task), it never waits forever."""

    def __init__(
        self,
        message: str,
        *,
        shard: str,
        query_id: str,
        waited_s: float,
        error: str | None = None,
    ) -> None:
        super().__init__(message)
        self.shard = shard
        self.query_id = query_id
        self.waited_s = waited_s
        self.error = error


@dataclass(slots=True)
class _Waiter:
    future: asyncio.Future[ContextReply]
    timer: asyncio.TimerHandle
    shard: str
    started: float


class PendingReply:
    """A query that has been sent; `await pending.wait()` gives its reply.

    The reply is kept as soon as the reader sees it, whether or not anyone is waiting yet.
    The deadline runs from when the query was sent, not from when `wait` is called.
    """

    def __init__(
        self,
        client: ContextClient,
        query: ContextQuery,
        future: asyncio.Future[ContextReply],
        started: float,
    ) -> None:
        self.query = query
        self._client = client
        self._future = future
        self._started = started

    @property
    def query_id(self) -> str:
        return self.query.query_id

    @property
    def shard(self) -> str:
        return self.query.target_shard

    def done(self) -> bool:
        return self._future.done()

    async def wait(self) -> ContextReply:
        """The reply; raises ContextUnavailable on timeout or a `failed` reply."""
        try:
            reply = await self._future
        finally:
            self._client._forget(self.query_id)
        if reply.status is Status.FAILED:
            waited = time.monotonic() - self._started
            raise ContextUnavailable(
                f"shard {self.shard!r} could not answer query {self.query_id} "
                f"(after {waited:.1f}s): {reply.error or 'no reason given'}",
                shard=self.shard,
                query_id=self.query_id,
                waited_s=waited,
                error=reply.error or "no reason given",
            )
        return reply

    def cancel(self) -> None:
        """Stop waiting; a reply that still arrives is dropped as late."""
        self._future.cancel()
        self._client._forget(self.query_id)


class ContextClient:
    """Sends ContextQuery messages and collects their ContextReply, for one process.

    `requester_id` is the process's member id (its consumer name); the replies come back
    on `names.replies(requester_id)`. Use `async with`, or `start()` and `close()`.
    """

    def __init__(self, bus: Bus, *, requester_id: str, reply_ttl_s: float = 3600) -> None:
        if not _IDENTIFIER_RE.fullmatch(requester_id):
            raise ValueError(
                f"requester_id {requester_id!r} must be 1-200 characters without whitespace"
            )
        if reply_ttl_s <= 0:
            raise ValueError(f"reply_ttl_s must be positive, got {reply_ttl_s}")
        self.requester_id = requester_id
        self.reply_stream = bus.names.replies(requester_id)
        self._bus = bus
        self._redis = bus.redis
        self._ttl_ms = max(1, int(reply_ttl_s * 1000))
        self._block_ms = bus.settings.block_ms
        self._touch = self._redis.register_script(_TOUCH_LUA)
        self._waiting: dict[str, _Waiter] = {}
        self._last_id = "0-0"
        self._reader_client: Redis | None = None
        self._reader_conn_id: int | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        if self._reader_task is not None:
            raise RuntimeError("ContextClient already started")
        self._stopping = False
        # The cursor is taken now, once: every reply written from here on is read, even
        # one that lands before the reader's first XREAD. Never "$" per read.
        self._last_id = streamids.text(
            await self._touch(keys=[self.reply_stream], args=[self._ttl_ms])
        )
        self._reader_client = self._redis.client()  # own connection, so close() can unblock it
        self._reader_task = asyncio.create_task(
            self._read_loop(), name=f"{self.reply_stream}:reader"
        )
        log.info("context_client.started", reply_stream=self.reply_stream, from_id=self._last_id)

    async def close(self) -> None:
        """Stop the reader; anyone still waiting gets ContextUnavailable."""
        self._stopping = True
        task, self._reader_task = self._reader_task, None
        if task is not None:
            # The reader checks the flag between reads; CLIENT UNBLOCK ends a read in
            # progress. Retried, as the reader may have been between reads the first time.
            for _ in range(5):
                if self._reader_conn_id is not None:
                    with contextlib.suppress(*REDIS_UNAVAILABLE):
                        await self._redis.client_unblock(self._reader_conn_id)
                _done, late = await asyncio.wait({task}, timeout=0.1)
                if not late:
                    break
            else:  # no group, no pending list: cancelling a read loses nothing
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._reader_client is not None:
            with contextlib.suppress(*REDIS_UNAVAILABLE):
                await self._reader_client.aclose()
            self._reader_client = None
            self._reader_conn_id = None
        for query_id, waiter in list(self._waiting.items()):
            waiter.timer.cancel()
            if not waiter.future.done():
                waited = time.monotonic() - waiter.started
                waiter.future.set_exception(
                    ContextUnavailable(
                        f"context client closed while query {query_id} to shard "
                        f"{waiter.shard!r} was waiting ({waited:.1f}s)",
                        shard=waiter.shard,
                        query_id=query_id,
                        waited_s=waited,
                    )
                )
        self._waiting.clear()

    async def __aenter__(self) -> ContextClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def waiting(self) -> int:
        """Queries sent and not yet answered, timed out or abandoned."""
        return len(self._waiting)

    # -- asking ----------------------------------------------------------------------------
    async def resolve(self, target: str) -> str:
        """The shard id to send a query for `target` (a shard id or a specialty) to.

        A live megashard member whose `shard_id` is `target` wins; else the live megashard
        members whose `specialty` is `target` (the least `in_flight` first, ties at random);
        else a shard whose loaded context has that specialty, even with no replica up yet;
        else `target` itself, taken as a shard id: the query then waits in the shard's
        stream until that shard comes up (or the asker's deadline passes).
        """
        shards = [
            m
            for m in await live_members(self._redis, self._bus.names)
            if m.get("service") == MEGASHARD_SERVICE and m.get("shard_id")
        ]
        if any(m["shard_id"] == target for m in shards):
            return target
        by_specialty = [m for m in shards if m.get("specialty") == target]
        if not by_specialty:
            return await self._loaded_shard_with(target) or target
        ranked = sorted(by_specialty, key=_load)
        best = [m for m in ranked if _load(m) == _load(ranked[0])]
        return random.choice(best)["shard_id"]

    async def send(
        self,
        target: str,
        query: str,
        *,
        max_response_tokens: int = 2048,
        task_id: str | None = None,
        timeout_s: float = 30.0,
        trace: TraceContext | None = None,
    ) -> PendingReply:
        """Resolve `target`, publish the query, and return without waiting for the reply."""
        if self._reader_task is None:
            raise RuntimeError("ContextClient is not started; use `async with` or start()")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        started = time.monotonic()
        deadline = datetime.now(UTC) + timedelta(seconds=timeout_s)
        shard = await self.resolve(target)
        message = ContextQuery(
            requester_worker_id=self.requester_id,
            target_shard=shard,
            query=query,
            max_response_tokens=max_response_tokens,
            reply_to=self.reply_stream,
            task_id=task_id,
            deadline=deadline,
            headers=trace.headers() if trace else {},
        )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ContextReply] = loop.create_future()
        # Mark a timed-out future's exception as seen even when nobody awaits it.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        timer = loop.call_at(
            loop.time() + max(0.0, timeout_s - (time.monotonic() - started)),
            self._expire,
            message.query_id,
        )
        # Registered before the query is published: its reply cannot come before this.
        self._waiting[message.query_id] = _Waiter(future, timer, shard, started)
        try:
            await self._touch(keys=[self.reply_stream], args=[self._ttl_ms])
            await self._bus.publish(self._bus.names.shard_queries(shard), encode(message))
        except BaseException:
            self._forget(message.query_id)
            raise
        log.debug("context.query_sent", query_id=message.query_id, shard=shard, target=target)
        return PendingReply(self, message, future, started)

    async def ask(
        self,
        target: str,
        query: str,
        *,
        max_response_tokens: int = 2048,
        task_id: str | None = None,
        timeout_s: float = 30.0,
        trace: TraceContext | None = None,
    ) -> ContextReply:
        """Ask the shard for `target` and wait up to `timeout_s` for its reply.

        Raises ContextUnavailable when no reply comes in time or the shard answers
        `failed`. Redis errors while sending are raised as they are.
        """
        pending = await self.send(
            target,
            query,
            max_response_tokens=max_response_tokens,
            task_id=task_id,
            timeout_s=timeout_s,
            trace=trace,
        )
        return await pending.wait()

    # -- internals -------------------------------------------------------------------------
    async def _loaded_shard_with(self, specialty: str) -> str | None:
        """A shard whose loaded context has this specialty, live or not (its query then
        waits in its stream for a replica): the first by id, for a stable choice."""
        names = self._bus.names
        ids = sorted(streamids.text(s) for s in await self._redis.smembers(names.shards))
        if not ids:
            return None
        async with self._redis.pipeline(transaction=False) as pipe:
            for shard in ids:
                pipe.hget(names.shard_head(shard), "specialty")
            found = await pipe.execute()
        for shard, value in zip(ids, found, strict=True):
            if value is not None and streamids.text(value) == specialty:
                return shard
        return None

    def _forget(self, query_id: str) -> None:
        waiter = self._waiting.pop(query_id, None)
        if waiter is not None:
            waiter.timer.cancel()

    def _expire(self, query_id: str) -> None:
        waiter = self._waiting.pop(query_id, None)
        if waiter is None or waiter.future.done():
            return
        shard, waited = waiter.shard, time.monotonic() - waiter.started
        log.warning("context.query_timed_out", query_id=query_id, shard=shard, waited_s=waited)
        waiter.future.set_exception(
            ContextUnavailable(
                f"no reply from shard {shard!r} to query {query_id} within {waited:.1f}s "
                f"(stream {self._bus.names.shard_queries(shard)})",
                shard=shard,
                query_id=query_id,
                waited_s=waited,
            )
        )

    async def _read_loop(self) -> None:
        delay = 0.1
        while not self._stopping:
            try:
                entries = await self._read()
                if entries:
                    for raw_id, fields in entries:
                        self._last_id = streamids.text(raw_id)
                        self._dispatch(self._last_id, fields)
                    await self._tidy()
                delay = 0.1
            except Exception as exc:  # never die: waiters would hang until their deadline
                if not isinstance(exc, REDIS_UNAVAILABLE):
                    log.exception("context.reader_error", stream=self.reply_stream)
                else:
                    log.warning("redis.unavailable", stream=self.reply_stream, error=str(exc))
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 5.0)

    async def _read(self) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
        client = self._reader_client
        if client is None:
            raise RuntimeError("ContextClient reader has no connection")
        if self._reader_conn_id is None:
            self._reader_conn_id = int(await client.client_id())
        try:
            result: Any = await client.xread(
                {self.reply_stream: self._last_id}, count=_READ_COUNT, block=self._block_ms
            )
        except BaseException:
            self._reader_conn_id = None  # the connection may be a new one next time
            raise
        return list(result[0][1]) if result else []

    def _dispatch(self, entry_id: str, fields: dict[bytes, bytes] | None) -> None:
        try:
            reply = decode(ContextReply, fields or {})
        except DecodeError as exc:
            log.warning(
                "context.reply_malformed",
                stream=self.reply_stream,
                entry_id=entry_id,
                error=str(exc),
                field=exc.field,
            )
            return
        waiter = self._waiting.get(reply.query_id)
        if waiter is None or waiter.future.done():
            log.info(
                "context.reply_unmatched",
                note="late, duplicate or not ours; dropped",
                query_id=reply.query_id,
                shard=reply.shard_id,
                entry_id=entry_id,
            )
            return
        waiter.future.set_result(reply)
        log.debug("context.reply_received", query_id=reply.query_id, shard=reply.shard_id)

    async def _tidy(self) -> None:
        """Drop replies already handled (never one after the cursor) and renew the expiry."""
        ms, seq = streamids.parse(self._last_id)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xtrim(self.reply_stream, minid=streamids.fmt((ms, seq + 1)), approximate=True)
                pipe.pexpire(self.reply_stream, self._ttl_ms)
                await pipe.execute()
        except REDIS_UNAVAILABLE as exc:  # next read tidies again
            log.warning("context.tidy_failed", stream=self.reply_stream, error=str(exc))


def _load(member: dict[str, str]) -> tuple[int, int]:
    """Sort key: members reporting `in_flight` by it, then those that do not."""
    try:
        return (0, int(member["in_flight"]))
    except (KeyError, ValueError):
        return (1, 0)
