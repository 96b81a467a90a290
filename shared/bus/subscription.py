"""A consumer-group subscription: the deliveries verb of the bus.

What it guarantees (see docs/protocol.md):
* at most `max_in_flight` deliveries are out at once; it reads only as many as fit;
* on start it replays this consumer's own pending entries, then reads new ones;
* entries idle past the visibility timeout are reclaimed from any consumer; entries of
  a consumer whose heartbeat expired are reclaimed at once (it is dead);
* deliveries being handled have their claim refreshed, so no peer steals them;
* an entry delivered more than `max_deliveries` times is dead-lettered, then acked;
* Redis going away is waited out with backoff; a lost group is re-created;
* while started, it is a readiness check of its service (`readiness`): its read loop runs
  and its last XREADGROUP round trip succeeded recently (or it is full, waiting for room).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import MutableSequence, Sequence
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shared.bus import streamids
from shared.bus.acker import Acker, AckOp
from shared.bus.delivery import Delivery, Effect, Fields, Outgoing
from shared.bus.slots import Slots
from shared.protocol.names import Names
from shared.runtime.health import ReadinessCheck
from shared.runtime.metrics import Metrics
from shared.runtime.redis import REDIS_UNAVAILABLE
from shared.runtime.settings import BusSettings

log = structlog.get_logger("swarm.bus")

# Refresh our claim on entries we are still working on, but only those we still own:
# XCLAIM alone would take back an entry a peer has since reclaimed.
_REFRESH_LUA = """
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
"""

# Remove a consumer from the group only while it has nothing pending (DELCONSUMER drops
# whatever it holds): atomic, so a consumer that reads meanwhile keeps its entries.
_FORGET_LUA = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then
  return 0
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# Read urgency levels in the order given (KEYS) into ARGV[3] free slots, in one round trip:
# each level is read only with the room the ones before it left. Returns one entry list
# per level read, in order (a level not reached has none).
_PRIORITY_READ_LUA = """
local n = tonumber(ARGV[3])
local out = {}
for _, key in ipairs(KEYS) do
  if n <= 0 then break end
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', n, 'STREAMS', key, '>')
  local entries = {}
  if r then entries = r[1][2] end
  out[#out + 1] = entries
  n = n - #entries
end
return out
"""

_Entry = tuple[str, dict[bytes, bytes], int, str]  # id, fields, deliveries, cause


async def ensure_group(redis: Redis, stream: str, group: str) -> bool:
    """Create `group` on `stream` (and the stream) if missing. True if it was created.

    Only BUSYGROUP is swallowed. The group starts at 0 so tasks posted before the first
    consumer started are still served.
    """
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" in str(exc):
            return False
        raise
    return True


_CLOSE_TIMEOUT_S = 10.0
# A reader is taken for stuck once no XREADGROUP round trip succeeded for its BLOCK plus
# this (a read on a dead connection fails within BLOCK + 5 s, the socket timeout).
READ_GRACE_S = 5.0
_MAX_READ_BACKOFF_S = 2.0  # so a reader is back within ~3 s of Redis


class Subscription:
    def __init__(
        self,
        redis: Redis,
        names: Names,
        settings: BusSettings,
        metrics: Metrics,
        *,
        stream: str,
        group: str,
        consumer: str,
        readiness: MutableSequence[ReadinessCheck] | None = None,
        slots: Slots | None = None,
        reads: bool = True,
    ) -> None:
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self._redis = redis
        self._names = names
        self._s = settings
        self._m = metrics
        self._acker = Acker(redis, stream, group, metrics)
        self._queue: deque[_Entry] = deque()
        self._queued_ids: set[str] = set()
        # Shared with the other urgency levels this consumer reads, if any (see priority.py).
        self._slots = slots if slots is not None else Slots(settings.max_in_flight)
        self._slots.holders.append(self)
        self._queue_ready = self._slots.ready
        self._room = self._slots.room
        # The subscriptions this one reads for, highest urgency first (itself included);
        # `reads=False` for the others, whose reading their leader does.
        self._reads = reads
        self._levels: tuple[Subscription, ...] = (self,)
        self._aging_s = float("inf")
        self._reached_at: list[float] = [time.monotonic()]
        self._stop = asyncio.Event()
        self._in_flight: dict[str, Delivery] = {}
        self._acking: set[str] = set()  # entries whose ack is on the wire
        self._tasks: list[asyncio.Task[None]] = []
        self._autoclaim_cursor = "0-0"
        self._failure: BaseException | None = None
        self._refresh = redis.register_script(_REFRESH_LUA)
        self._priority_read = redis.register_script(_PRIORITY_READ_LUA)
        self._forget = redis.register_script(_FORGET_LUA)
        self._reader = redis.client()  # its own connection, so stop() can unblock it
        self._reader_id: int | None = None
        self._unblocking: asyncio.Task[None] | None = None
        self._gauge = metrics.in_flight.labels(stream, group)
        # Labelled children looked up once: labels() per delivery was ~10% of the CPU of a
        # no-op delivery (bench/peers/profile.py).
        self._handle_seconds = metrics.handle_seconds.labels(stream, group)
        self._outcomes: dict[str, Any] = {}
        self._published: dict[str, Any] = {}
        self._readiness = readiness
        self._read_task: asyncio.Task[None] | None = None
        self._healthy_at = time.monotonic()  # the reader's last successful round trip
        self._waiting_for_room = False
        self._read_error: str | None = None

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        await ensure_group(self._redis, self.stream, self.group)
        self._healthy_at = time.monotonic()
        jobs = [
            ("acker", self._acker.run()),
            ("reader", self._read_loop()),
            ("reclaimer", self._every(self._s.reclaim_interval_s, self._reclaim)),
            ("lease", self._every(self._s.visibility_timeout_s / 3, self._refresh_leases)),
            ("trimmer", self._every(self._s.trim_interval_s, self._trim)),
            ("backlog", self._every(self._s.backlog_interval_s, self._report_backlog)),
        ]
        if not self._reads:
            jobs[1][1].close()  # never started: a leader reads for this level
            del jobs[1]
        for name, coro in jobs:
            task = asyncio.create_task(coro, name=f"{self.stream}:{name}")
            task.add_done_callback(self._on_task_done)
            self._tasks.append(task)
            if name == "reader":
                self._read_task = task
        if self._readiness is not None:
            self._readiness.append(self.readiness)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()
            self._queue_ready.set()

    def stop(self) -> None:
        """Stop reading. Deliveries already handed out can still be acked."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._queue_ready.set()
        if self._tasks:
            self._unblocking = asyncio.create_task(self._unblock_reader())

    async def close(self) -> None:
        """Stop, flush pending acks, end background work. Unacked entries stay pending."""
        self.stop()
        if self._readiness is not None and self.readiness in self._readiness:
            self._readiness.remove(self.readiness)
        reader = next((t for t in self._tasks if t.get_name().endswith(":reader")), None)
        if reader is not None:
            await asyncio.wait({reader}, timeout=self._s.block_ms / 1000 + 2)
        await self._acker.drain()
        for task in self._tasks:
            task.cancel()
        # Bounded: a task that swallowed its cancel must not keep the process from exiting.
        stuck: set[asyncio.Task[None]] = set()
        if self._tasks:
            _done, stuck = await asyncio.wait(self._tasks, timeout=_CLOSE_TIMEOUT_S)
        if stuck:
            log.warning("subscription.close_stuck", tasks=sorted(t.get_name() for t in stuck))
        self._tasks.clear()
        if self._unblocking is not None:
            await asyncio.gather(self._unblocking, return_exceptions=True)
        await self._reader.aclose()

    async def __aenter__(self) -> Subscription:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def readiness(self) -> str | None:
        """None while the read loop runs and reads; else why not (a readiness check)."""
        name = f"subscription {self.stream} ({self.group})"
        if self._failure is not None:
            return f"{name}: failed: {type(self._failure).__name__}: {self._failure}"
        if self._stop.is_set():
            return f"{name}: stopping"
        return self._reader_stuck(name) if self._reads else None  # else its leader's says

    def _reader_stuck(self, name: str) -> str | None:
        if self._read_task is None or self._read_task.done():
            return f"{name}: read loop not running"
        if self._waiting_for_room:
            return None  # full: every slot is being handled, reading resumes with room
        quiet = time.monotonic() - self._healthy_at
        if quiet > self._s.block_ms / 1000 + READ_GRACE_S:
            why = f" (last error: {self._read_error})" if self._read_error else ""
            return f"{name}: no successful read for {quiet:.1f}s{why}"
        return None

    # -- the iterator ----------------------------------------------------------------------
    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Delivery:
        while True:
            if not self._queue:
                self._queue_ready.clear()
            delivery = await self.next_queued()
            if delivery is not None:
                return delivery
            await self._queue_ready.wait()

    async def next_queued(self) -> Delivery | None:
        """The next queued delivery, or None when none is queued (raises once stopped or
        failed). Dead-letters, on the way, entries delivered too often."""
        while True:
            if self._failure is not None:
                raise self._failure
            if self._stop.is_set():
                raise StopAsyncIteration
            if not self._queue:
                return None
            entry_id, fields, deliveries, _cause = self._queue.popleft()
            self._queued_ids.discard(entry_id)
            if entry_id in self._in_flight:
                continue  # reclaimed our own entry that is still being handled
            delivery = Delivery(self.stream, self.group, entry_id, fields, deliveries, self)
            self._in_flight[entry_id] = delivery
            self._gauge.inc()
            if deliveries > self._s.max_deliveries:
                await delivery.dead_letter(
                    f"delivered {deliveries} times without being acknowledged "
                    f"(max_deliveries={self._s.max_deliveries})"
                )
                continue
            return delivery

    # -- outcomes (called through Delivery) -------------------------------------------------
    async def _finish(
        self,
        delivery: Delivery,
        effects: tuple[Effect, ...],
        dead_letter: Fields | None,
        dead_letter_stream: str | None,
        outcome: str,
    ) -> None:
        if delivery.done:
            return
        out = list(effects)
        if dead_letter is not None:
            target = dead_letter_stream or self._names.dead_letter
            cap = self._s.rejected_maxlen if target == self._names.rejected else self._s.dlq_maxlen
            out.append(Outgoing(target, dead_letter, maxlen=cap))
            self._m.dead_letters.labels(target, _reason_kind(dead_letter)).inc()
        op = AckOp(delivery.entry_id, out)
        # Acked in Redis before the ack's reply is read here: no lease refresh meanwhile.
        self._acking.add(delivery.entry_id)
        try:
            await self._acker.submit(op)
        except BaseException:
            # Not acked: free the slot and stop refreshing the claim, so the entry is
            # redelivered after the visibility timeout rather than held here forever.
            self._settle(delivery, "failed")
            raise
        if op.fenced_off:
            log.warning(
                "effects.fenced_off",
                stream=self.stream,
                entry_id=delivery.entry_id,
                note="a peer took this entry over and already wrote its effects; dropped",
            )
            self._settle(delivery, "fenced_off")
            return
        for effect in out:
            if isinstance(effect, Outgoing):
                counter = self._published.get(effect.stream)
                if counter is None:
                    counter = self._published[effect.stream] = self._m.published.labels(
                        effect.stream
                    )
                counter.inc()
        self._settle(delivery, outcome)

    def _release(self, delivery: Delivery, outcome: str) -> None:
        if not delivery.done:
            self._settle(delivery, outcome)

    def _settle(self, delivery: Delivery, outcome: str) -> None:
        delivery.done = True
        self._acking.discard(delivery.entry_id)
        if self._in_flight.pop(delivery.entry_id, None) is not None:
            self._gauge.dec()
        counter = self._outcomes.get(outcome)
        if counter is None:
            counter = self._outcomes[outcome] = self._m.deliveries.labels(
                self.stream, self.group, outcome
            )
        counter.inc()
        self._handle_seconds.observe(time.monotonic() - delivery.started)
        self._update_room()

    def held(self) -> int:
        return len(self._in_flight) + len(self._queue)

    def _free(self) -> int:
        return self._slots.free()

    def _update_room(self) -> None:
        self._slots.update()

    def _enqueue(self, entries: list[_Entry]) -> None:
        for entry in entries:
            if entry[0] in self._queued_ids or entry[0] in self._in_flight:
                continue
            self._queue.append(entry)
            self._queued_ids.add(entry[0])
        if self._queue:
            self._queue_ready.set()
        self._update_room()

    # -- reading ---------------------------------------------------------------------------
    def read_for(self, levels: Sequence[Subscription], aging_s: float) -> None:
        """Read for `levels` (this one first, then lower urgencies, in order) with their
        shared slots: highest first, except that a lower level the reads have not reached
        for `aging_s` goes first, once: no urgency is starved for longer than that."""
        assert levels[0] is self and all(not lv._reads for lv in levels[1:])
        self._levels = tuple(levels)
        self._aging_s = aging_s
        self._reached_at = [time.monotonic()] * len(levels)

    async def _read_loop(self) -> None:
        # Own pending entries first (crash recovery), level by level.
        replays: list[tuple[Subscription, str]] = [(lv, "0-0") for lv in self._levels]
        delay = 0.1
        while not self._stop.is_set():
            try:
                if not self._room.is_set():
                    self._waiting_for_room = True
                    try:
                        await self._room.wait()
                    finally:
                        self._waiting_for_room = False
                    self._healthy_at = time.monotonic()  # quiet while full is no fault
                if replays:
                    level, start = replays[0]
                    after = await level._replay(start)
                    if after is None:
                        replays.pop(0)
                    else:
                        replays[0] = (level, after)
                    self._read_succeeded()
                    continue
                await self._read_new(min(self._s.read_count, max(self._free(), 1)))
                self._read_succeeded()
                delay = 0.1
            except REDIS_UNAVAILABLE as exc:
                # A read Redis served whose reply was lost (a crash with the AOF kept it) left
                # entries in our PEL unseen: once Redis answers, replay the PEL first, or they
                # would wait for the visibility timeout. Entries held here are skipped.
                replays = [(lv, "0-0") for lv in self._levels]
                self._read_error = f"{type(exc).__name__}: {exc}"
                self._m.redis_errors.labels("read").inc()
                log.warning("redis.unavailable", stream=self.stream, error=str(exc), retry_s=delay)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, _MAX_READ_BACKOFF_S)
            except ResponseError as exc:
                self._read_error = f"{type(exc).__name__}: {exc}"
                if "NOGROUP" not in str(exc):
                    raise
                # The stream or group vanished (deleted, or Redis restarted without
                # persistence). Nothing of ours survives it; start the group again.
                log.error("group.missing", stream=self.stream, group=self.group)
                for level in self._levels:
                    await ensure_group(self._redis, level.stream, self.group)

    def _read_succeeded(self) -> None:
        self._healthy_at = time.monotonic()
        self._read_error = None

    async def _read_new(self, count: int) -> None:
        if len(self._levels) > 1:
            await self._read_levels(count)
            return
        entries = await self._blocking_read({self.stream: ">"}, count)
        if entries:
            self._enqueue([(streamids.text(i), f, 1, "new") for i, f in entries[0][1]])

    async def _read_levels(self, count: int) -> None:
        """Read the levels into `count` free slots (the script above), without blocking;
        if none has an entry, block until one has (a few at most, one per level)."""
        now = time.monotonic()
        order = list(range(len(self._levels)))
        starved = [i for i in order[1:] if now - self._reached_at[i] > self._aging_s]
        if starved:  # the longest unread level goes first this once
            first = min(starved, key=lambda i: self._reached_at[i])
            order.remove(first)
            order.insert(0, first)
        read: Any = await self._priority_read(
            keys=[self._levels[i].stream for i in order],
            args=[self.group, self.consumer, count],
        )
        got = 0
        for i, entries in zip(order, read, strict=False):  # the levels the read reached
            self._reached_at[i] = now
            live = [(streamids.text(e[0]), _pairs(e[1])) for e in entries]
            self._levels[i]._enqueue([(id_, f, 1, "new") for id_, f in live])
            got += len(live)
        if got:
            return
        by_stream = {lv.stream: lv for lv in self._levels}
        for stream, entries in await self._blocking_read({s: ">" for s in by_stream}, 1):
            level = by_stream[streamids.text(stream)]
            level._enqueue([(streamids.text(i), f, 1, "new") for i, f in entries])

    async def _blocking_read(
        self, streams: dict[str, str], count: int
    ) -> list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]:
        # Never cancelled: a cancelled read can still be served by Redis, and its entries
        # would sit unseen in our PEL. stop() ends it at once with CLIENT UNBLOCK instead.
        if self._reader_id is None:
            self._reader_id = int(await self._reader.client_id())
        try:
            result: Any = await self._reader.xreadgroup(
                self.group,
                self.consumer,
                streams,  # type: ignore[arg-type]
                count=count,
                block=self._s.block_ms,
            )
        except BaseException:
            self._reader_id = None  # the connection may be new next time
            raise
        return list(result) if result else []

    async def _unblock_reader(self) -> None:
        if self._reader_id is None:
            return
        with contextlib.suppress(*REDIS_UNAVAILABLE):  # the read ends by its BLOCK anyway
            await self._redis.client_unblock(self._reader_id)

    async def _replay(self, start: str) -> str | None:
        res: Any = await self._redis.xreadgroup(
            self.group, self.consumer, {self.stream: start}, count=self._s.read_count
        )
        entries: list[tuple[bytes, dict[bytes, bytes] | None]] = res[0][1] if res else []
        if not entries:
            return None
        live: list[tuple[str, dict[bytes, bytes]]] = []
        gone: list[tuple[str, None]] = []
        for raw_id, fields in entries:
            if fields:
                live.append((streamids.text(raw_id), fields))
            else:
                gone.append((streamids.text(raw_id), None))
        if gone:  # deleted or trimmed while pending: nothing left to do
            await self._redis.xack(self.stream, self.group, *(i for i, _ in gone))
        counts = await self._delivery_counts([i for i, _ in live])
        self._m.reclaimed.labels(self.stream, self.group, "replay").inc(len(live))
        self._enqueue([(i, f, counts.get(i, 1), "replay") for i, f in live])
        log.info("pending.replayed", stream=self.stream, entries=len(live)) if live else None
        return streamids.text(entries[-1][0])

    async def _delivery_counts(self, ids: list[str]) -> dict[str, int]:
        if not ids:
            return {}
        ordered = sorted(ids, key=streamids.parse)
        rows: Any = await self._redis.xpending_range(
            self.stream,
            self.group,
            min=ordered[0],
            max=ordered[-1],
            count=len(ids) + 1000,
            consumername=self.consumer,
        )
        return {streamids.text(r["message_id"]): int(r["times_delivered"]) for r in rows}

    # -- background upkeep -----------------------------------------------------------------
    async def _every(self, interval: float, job: Any) -> None:
        while True:
            await asyncio.sleep(interval * (0.8 + 0.4 * random.random()))
            if self._stop.is_set():
                # Return, do not wait to be cancelled: redis-py can swallow a cancel that
                # lands mid-command, and a loop that outlived it would hang close().
                return
            try:
                await job()
            except REDIS_UNAVAILABLE as exc:
                self._m.redis_errors.labels(job.__name__.strip("_")).inc()
                log.warning("redis.unavailable", job=job.__name__, error=str(exc))
            except Exception:  # upkeep retries next round; reading goes on meanwhile
                log.exception("upkeep.failed", job=job.__name__, stream=self.stream)

    async def _reclaim(self) -> None:
        await self._reclaim_dead_consumers()
        room = self._free()
        if room <= 0:
            return
        res: Any = await self._redis.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            min_idle_time=int(self._s.visibility_timeout_s * 1000),
            start_id=self._autoclaim_cursor,
            count=room,
        )
        cursor, claimed = res[0], res[1]
        self._autoclaim_cursor = streamids.text(cursor)
        await self._take(claimed, "idle")

    async def _reclaim_dead_consumers(self) -> None:
        ttl_ms = int(self._s.heartbeat_ttl_s * 1000)
        consumers: Any = await self._redis.xinfo_consumers(self.stream, self.group)
        suspects = {  # name -> pending
            c["name"].decode(): int(c["pending"])
            for c in consumers
            if c["idle"] > ttl_ms and c["name"].decode() != self.consumer
        }
        if not suspects:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for name in suspects:
                pipe.exists(self._names.member(name))
            alive = await pipe.execute()
        for (name, pending), is_alive in zip(suspects.items(), alive, strict=True):
            if is_alive:
                continue
            if not pending:  # nothing to take over: only its name is left in the group
                if await self._forget(keys=[self.stream], args=[self.group, name]):
                    log.info("consumer.removed", stream=self.stream, consumer=name, pending=0)
                continue
            room = self._free()
            if room <= 0:
                continue
            rows: Any = await self._redis.xpending_range(
                self.stream, self.group, min="-", max="+", count=room, consumername=name
            )
            ids = [r["message_id"] for r in rows]
            if not ids:
                continue
            claimed = await self._redis.xclaim(
                self.stream, self.group, self.consumer, min_idle_time=ttl_ms, message_ids=ids
            )
            log.warning("consumer.dead", stream=self.stream, consumer=name, reclaimed=len(claimed))
            await self._take(claimed, "dead_consumer")
            await self._forget(keys=[self.stream], args=[self.group, name])  # if none is left

    async def _take(self, claimed: list[Any], cause: str) -> None:
        live = [(streamids.text(i), f) for i, f in claimed if f]
        if not live:
            return
        counts = await self._delivery_counts([i for i, _ in live])
        self._m.reclaimed.labels(self.stream, self.group, cause).inc(len(live))
        self._enqueue([(i, f, counts.get(i, 2), cause) for i, f in live])

    async def _refresh_leases(self) -> None:
        ids = [i for i in self._in_flight if i not in self._acking]
        if not ids:
            return
        lost = await self._refresh(keys=[self.stream], args=[self.group, self.consumer, *ids])
        # An entry whose ack went out while the refresh was on the wire is settled, not lost.
        lost = [
            i for i in map(streamids.text, lost) if i in self._in_flight and i not in self._acking
        ]
        if lost:
            log.warning("lease.lost", stream=self.stream, entries=lost)

    async def _report_backlog(self) -> None:
        """Stream length, and this group's lag and pending, as gauges (for dashboards and
        autoscaling where no exporter reads Redis)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xlen(self.stream)
            pipe.xinfo_groups(self.stream)
            length, groups = await pipe.execute()
        self._m.stream_length.labels(self.stream).set(int(length))
        for g in groups:
            if streamids.text(g["name"]) == self.group:
                self._m.stream_pending.labels(self.stream, self.group).set(int(g["pending"]))
                if g.get("lag") is not None:  # Redis 7; None when it cannot be told cheaply
                    self._m.stream_lag.labels(self.stream, self.group).set(int(g["lag"]))

    async def _trim(self) -> None:
        trimmed = await trim_handled(
            self._redis,
            self.stream,
            retention_s=self._s.retention_s,
            max_len=self._s.max_stream_len,
        )
        if trimmed:
            self._m.trimmed.labels(self.stream).inc(trimmed)


async def trim_handled(redis: Redis, stream: str, *, retention_s: float, max_len: int) -> int:
    """Trim entries every group has handled (delivered and acked), never one still waiting.

    Handled entries are kept `retention_s` for inspection (`XRANGE`), unless the stream is
    longer than `max_len`. Approximate (`~`), so Redis trims whole nodes cheaply.
    """
    groups: Any = await redis.xinfo_groups(stream)
    if not groups:
        return 0
    safe: tuple[int, int] | None = None
    for g in groups:
        bound = streamids.parse(g["last-delivered-id"])
        oldest = None
        if g["pending"]:
            summary: Any = await redis.xpending(stream, g["name"])
            oldest = summary["min"]  # None if the pending entries were acked meanwhile
        if oldest is not None:
            bound = min(bound, streamids.parse(oldest))
        else:
            # Everything delivered up to `bound` is handled, the last delivered entry too
            # (entries delivered since XINFO GROUPS have later ids).
            bound = (bound[0], bound[1] + 1)
        safe = bound if safe is None else min(safe, bound)
    assert safe is not None
    if await redis.xlen(stream) <= max_len:
        safe = min(safe, (int(time.time() * 1000 - retention_s * 1000), 0))
    if safe <= (0, 0):
        return 0
    return int(await redis.xtrim(stream, minid=streamids.fmt(safe), approximate=True))


def _pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    """A script's flat field list as the dict redis-py gives for XREADGROUP."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _reason_kind(record: Fields) -> str:
    reason = record.get("reason", "")
    text = reason.decode() if isinstance(reason, bytes) else reason
    if text.startswith("delivered "):
        return "max_deliveries"
    field = record.get("field", "")
    return "invalid" if field else "handler"
