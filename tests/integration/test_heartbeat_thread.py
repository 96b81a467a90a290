"""The heartbeat beats from its own thread: a busy event loop keeps its membership, a loop
stalled past the guard loses it, and a member that left stays gone."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from shared.bus import Heartbeat
from shared.protocol import Names
from tests.waiting import eventually


@pytest.fixture
def observer(redis_url: str) -> Iterator[sync_redis.Redis]:
    """A synchronous client: it can look while the test's own loop is blocked."""
    client = sync_redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _watch(observer: sync_redis.Redis, key: str, seconds: float) -> list[bool]:
    """Block the calling (event loop) thread for `seconds`, sampling whether `key` exists."""
    seen = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        seen.append(bool(observer.exists(key)))
        time.sleep(0.05)
    return seen


@contextlib.asynccontextmanager
async def _beating(redis: Redis, names: Names, loop_stall_s: float) -> AsyncIterator[Heartbeat]:
    """Member `w1` beating every 0.1 s with a 0.5 s TTL, as a service context runs it; it
    leaves at the end."""
    beat = Heartbeat(
        redis,
        names,
        "w1",
        service="worker",
        interval_s=0.1,
        ttl_s=0.5,
        live_info=lambda: {"in_flight": "7"},
        loop_stall_s=loop_stall_s,
    )
    await beat.beat()
    stop = asyncio.Event()
    running = asyncio.create_task(beat.run(stop))
    await asyncio.sleep(0.3)
    try:
        yield beat
    finally:
        stop.set()
        await running
        await beat.leave()


async def test_a_blocked_loop_keeps_beating_past_the_ttl(
    redis: Redis, names: Names, observer: sync_redis.Redis
) -> None:
    async with _beating(redis, names, loop_stall_s=30):
        seen_at = float(await redis.hget(names.member("w1"), "seen_at") or 0)
        samples = _watch(observer, names.member("w1"), 2.0)  # 4 TTLs without a loop turn
        assert all(samples), f"member gone while the loop was blocked: {samples}"
        fields = observer.hgetall(names.member("w1"))
        assert float(fields[b"seen_at"]) > seen_at + 1.5  # beaten during the block
        assert fields[b"in_flight"] == b"7"  # the loop's last snapshot


async def test_a_loop_stalled_past_the_guard_loses_membership_until_it_turns_again(
    redis: Redis, names: Names, observer: sync_redis.Redis
) -> None:
    async def back() -> bool:
        return bool(await redis.exists(names.member("w1")))

    async with _beating(redis, names, loop_stall_s=1.0):
        samples = _watch(observer, names.member("w1"), 3.0)
        assert samples[0] and not samples[-1], "a stalled loop kept its membership"
        await eventually(back, timeout=3, what="membership back once the loop turns")


async def test_a_member_that_left_stays_gone(
    redis: Redis, names: Names, observer: sync_redis.Redis
) -> None:
    async with _beating(redis, names, loop_stall_s=30):
        pass
    assert not any(_watch(observer, names.member("w1"), 0.5))
    assert await redis.zscore(names.members, "w1") is None
