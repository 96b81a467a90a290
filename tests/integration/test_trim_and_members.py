"""Stream trimming never drops waiting work (nor trips over work acked meanwhile);
heartbeats list the live fleet, and a dead consumer's name leaves its group."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from redis.asyncio import Redis

from shared.bus import Bus, Heartbeat, ensure_group, live_members, trim_handled
from shared.protocol import Names
from tests.waiting import eventually


async def _fill(redis: Redis, stream: str, n: int) -> list[bytes]:
    return [await redis.xadd(stream, {"n": str(i)}) for i in range(n)]


async def test_trim_keeps_undelivered_and_pending_entries(redis: Redis, names: Names) -> None:
    stream = names.intake
    await ensure_group(redis, stream, "fast")
    await ensure_group(redis, stream, "slow")
    ids = await _fill(redis, stream, 1000)
    # "fast" handled everything; "slow" got 600 delivered and acked only the first 400.
    res: Any = await redis.xreadgroup("fast", "c", {stream: ">"}, count=1000)
    await redis.xack(stream, "fast", *(i for i, _ in res[0][1]))
    res = await redis.xreadgroup("slow", "c", {stream: ">"}, count=600)
    await redis.xack(stream, "slow", *(i for i, _ in res[0][1][:400]))

    trimmed = await trim_handled(redis, stream, retention_s=0, max_len=10)
    remaining = [i for i, _ in await redis.xrange(stream)]
    assert trimmed > 0
    assert ids[400] in remaining  # oldest pending entry of "slow" survives
    assert remaining[-1] == ids[-1]  # and so does everything after it
    assert set(ids[400:]) <= set(remaining)


async def test_trim_respects_retention_for_handled_entries(redis: Redis, names: Names) -> None:
    stream = names.intake
    await ensure_group(redis, stream, "g")
    await _fill(redis, stream, 500)
    res: Any = await redis.xreadgroup("g", "c", {stream: ">"}, count=500)
    await redis.xack(stream, "g", *(i for i, _ in res[0][1]))
    assert await trim_handled(redis, stream, retention_s=3600, max_len=100_000) == 0
    assert await redis.xlen(stream) == 500
    # Past max_len, handled entries go even inside the retention window.
    assert await trim_handled(redis, stream, retention_s=3600, max_len=100) > 0
    assert await redis.xlen(stream) < 500


async def test_trim_never_touches_a_stream_nobody_has_read(redis: Redis, names: Names) -> None:
    stream = names.intake
    await ensure_group(redis, stream, "g")
    await _fill(redis, stream, 300)
    assert await trim_handled(redis, stream, retention_s=0, max_len=1) == 0
    assert await redis.xlen(stream) == 300


async def test_heartbeat_lists_members_and_expires_them(redis: Redis, names: Names) -> None:
    beat = Heartbeat(
        redis,
        names,
        "worker-deepseek-a",
        service="worker",
        interval_s=0.1,
        ttl_s=0.5,
        info={"vendor": "deepseek", "model": "deepseek-chat", "capacity": "256"},
        live_info=lambda: {"in_flight": "3"},
    )
    task = asyncio.create_task(beat.run())
    members = await eventually(lambda: live_members(redis, names), what="member listed")
    [member] = members
    assert member["member_id"] == "worker-deepseek-a"
    assert member["vendor"] == "deepseek"
    assert member["in_flight"] == "3"
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    async def gone() -> bool:
        return await live_members(redis, names) == []

    await eventually(gone, timeout=5, what="member to expire after its TTL")
    assert not await redis.exists(names.member("worker-deepseek-a"))


async def test_leave_removes_the_member_at_once(redis: Redis, names: Names) -> None:
    beat = Heartbeat(redis, names, "m1", service="collector", interval_s=1, ttl_s=60)
    await beat.beat()
    assert [m["member_id"] for m in await live_members(redis, names)] == ["m1"]
    await beat.leave()
    assert await live_members(redis, names) == []


class _AckBetweenReads:
    """The client trim_handled reads through, except that once XINFO GROUPS has answered,
    every pending entry of `group` is acked before the caller's next command: the window
    in which a group's pending drops to 0 between XINFO GROUPS and XPENDING, made certain."""

    def __init__(self, redis: Redis, group: str) -> None:
        self._redis = redis
        self._group = group
        self.acked = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._redis, name)

    async def xinfo_groups(self, stream: str) -> Any:
        groups = await self._redis.xinfo_groups(stream)
        rows: Any = await self._redis.xpending_range(stream, self._group, "-", "+", 10_000)
        self.acked = await self._redis.xack(stream, self._group, *(r["message_id"] for r in rows))
        return groups


async def test_trim_survives_pending_acked_between_its_reads(redis: Redis, names: Names) -> None:
    stream = names.intake
    await ensure_group(redis, stream, "g")
    ids = await _fill(redis, stream, 1000)
    await redis.xreadgroup("g", "c", {stream: ">"}, count=600)  # 600 delivered, all pending
    racing = _AckBetweenReads(redis, "g")

    trimmed = await trim_handled(racing, stream, retention_s=0, max_len=10)  # type: ignore[arg-type]

    assert racing.acked == 600  # XINFO GROUPS said 600 pending, XPENDING then said none
    [group] = await redis.xinfo_groups(stream)
    assert group["pending"] == 0
    remaining = [i for i, _ in await redis.xrange(stream)]
    assert trimmed > 0  # the handled entries went (whole nodes: `~`)
    assert set(ids[600:]) <= set(remaining)  # never one that was not delivered yet


async def test_a_dead_consumer_with_nothing_pending_leaves_the_group(
    redis: Redis, names: Names, bus: Bus
) -> None:
    stream, group = names.vendor_tasks("deepseek"), Names.worker_group("deepseek")
    await ensure_group(redis, stream, group)
    # Two consumers that handled an entry each and hold nothing: one whose heartbeat is
    # gone, one live.
    for consumer in ("worker-deepseek-gone", "worker-deepseek-live"):
        await redis.xadd(stream, {"n": consumer})
        res: Any = await redis.xreadgroup(group, consumer, {stream: ">"}, count=1)
        await redis.xack(stream, group, res[0][1][0][0])
    stop = asyncio.Event()
    beat = Heartbeat(
        redis, names, "worker-deepseek-live", service="worker-deepseek",
        interval_s=0.2, ttl_s=1.0, info={"vendor": "deepseek"},
    )  # fmt: skip
    await beat.beat()
    beating = asyncio.create_task(beat.run(stop))

    async def consumers() -> dict[str, dict[str, Any]]:
        rows: Any = await redis.xinfo_consumers(stream, group)
        return {r["name"].decode(): r for r in rows}

    ttl_ms = bus.settings.heartbeat_ttl_s * 1000
    interval = bus.settings.reclaim_interval_s
    assert set(await consumers()) == {"worker-deepseek-gone", "worker-deepseek-live"}
    try:
        async with bus.subscribe(stream, group, "worker-deepseek-reader"):
            started = time.monotonic()

            async def gone_removed() -> bool:
                return "worker-deepseek-gone" not in await consumers()

            await eventually(gone_removed, timeout=10, what="the dead consumer removed")
            # Idle past the heartbeat TTL first, then within a few reclaim rounds.
            assert time.monotonic() - started < ttl_ms / 1000 + 5 * interval + 1
            await asyncio.sleep(5 * interval)  # a few more rounds: the live one stays
            assert await redis.exists(names.member("worker-deepseek-live"))
            live = (await consumers())["worker-deepseek-live"]
            assert live["pending"] == 0 and live["idle"] > ttl_ms  # as idle, but alive
    finally:
        stop.set()
        await beating
