"""Stream trimming never drops waiting work; heartbeats list the live fleet."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from shared.bus import Heartbeat, ensure_group, live_members, trim_handled
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
