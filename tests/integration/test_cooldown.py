"""Cooldowns against a real Redis: streaks, windows, countdown, the index the dispatcher
lists them from."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from shared.bus.cooldown import Cooldowns
from shared.protocol import Names
from shared.runtime.redis import REDIS_UNAVAILABLE
from tests.waiting import eventually

V, M = "acme", "llama3:8b"  # a ':' in the model name must survive cooling()


async def test_threshold_starts_a_cooldown_exactly_once(redis: Redis, names: Names) -> None:
    cd = Cooldowns(redis, names, threshold=3, window_s=30, period_s=30)
    assert await cd.failure(V, M) is False
    assert await cd.failure(V, M) is False
    assert await cd.remaining(V, M) == 0.0
    assert await cd.failure(V, M) is True
    assert 29 < await cd.remaining(V, M) <= 30
    assert not await redis.exists(names.failures(V, M))  # the counter was reset
    # Failures of calls still in flight neither restart nor extend it.
    assert [await cd.failure(V, M) for _ in range(10)] == [False] * 10
    assert not await redis.exists(names.failures(V, M))


async def test_concurrent_failures_start_one_cooldown(
    redis: Redis, names: Names, redis_url: str
) -> None:
    # Two replicas on their own connections report 20 failures at once.
    other = Redis.from_url(redis_url)
    try:
        replicas = [Cooldowns(c, names, threshold=5, period_s=30) for c in (redis, other)]
        started = await asyncio.gather(*(replicas[i % 2].failure(V, M) for i in range(20)))
    finally:
        await other.aclose()
    assert started.count(True) == 1


async def test_success_breaks_the_streak(redis: Redis, names: Names) -> None:
    cd = Cooldowns(redis, names, threshold=3, window_s=30, period_s=30)
    await cd.failure(V, M)
    await cd.failure(V, M)
    await cd.success(V, M)
    assert await cd.failure(V, M) is False
    assert await cd.failure(V, M) is False
    assert await cd.remaining(V, M) == 0.0
    assert await cd.failure(V, M) is True


async def test_failures_outside_the_window_do_not_add_up(redis: Redis, names: Names) -> None:
    cd = Cooldowns(redis, names, threshold=3, window_s=0.3, period_s=30)
    await cd.failure(V, M)
    await cd.failure(V, M)
    ttl = await redis.pttl(names.failures(V, M))
    assert 0 < ttl <= 300

    async def window_over() -> bool:
        return not await redis.exists(names.failures(V, M))

    await eventually(window_over, timeout=5, what="the failure window to end")
    assert await cd.failure(V, M) is False
    assert await cd.remaining(V, M) == 0.0


async def test_remaining_counts_down_and_cooling_lists(redis: Redis, names: Names) -> None:
    cd = Cooldowns(redis, names, threshold=1, period_s=1.0)
    long = Cooldowns(redis, names, threshold=1, period_s=30)
    assert await cd.cooling() == {}
    assert await cd.failure(V, M) is True
    assert await long.failure("other", "m2") is True
    stranger = Names(names.namespace + "x")  # another swarm's cooldowns stay its own
    assert await Cooldowns(redis, stranger, threshold=1).failure(V, M) is True

    key = names.cooldown(V, M)
    assert key.startswith(names.namespace + ":")
    listed = await cd.cooling()
    assert set(listed) == {(V, M), ("other", "m2")}
    assert 0 < listed[(V, M)] <= 1.0
    assert 29 < listed[("other", "m2")] <= 30

    first = await cd.remaining(V, M)
    await asyncio.sleep(0.2)
    assert await cd.remaining(V, M) <= first - 0.15

    async def over() -> bool:
        return await cd.remaining(V, M) == 0.0

    await eventually(over, timeout=5, what="the cooldown to end")
    assert set(await cd.cooling()) == {("other", "m2")}
    # Over: the next failure (threshold 1) starts a new one.
    assert await cd.failure(V, M) is True


async def test_cooling_reads_the_index_and_prunes_what_ended(redis: Redis, names: Names) -> None:
    cd = Cooldowns(redis, names, threshold=1, period_s=0.5)
    long = Cooldowns(redis, names, threshold=1, period_s=30)
    assert await cd.failure(V, M) is True
    assert await long.failure("other", "m2") is True
    seconds, micros = await redis.time()
    now_ms = seconds * 1000 + micros // 1000
    scores = dict(await redis.zrange(names.cooldowns, 0, -1, withscores=True))
    assert set(scores) == {f"{V}:{M}".encode(), b"other:m2"}  # `<vendor>:<model>`
    assert now_ms < scores[b"other:m2"] <= now_ms + 30_000  # when it ends, in Redis time
    assert now_ms < scores[f"{V}:{M}".encode()] <= now_ms + 500
    assert 29_000 < await redis.pttl(names.cooldowns) <= 30_000  # gone with the last one

    async def over() -> bool:
        return await cd.remaining(V, M) == 0.0

    await eventually(over, timeout=5, what="the short cooldown to end")
    assert set(await cd.cooling()) == {("other", "m2")}
    assert await redis.zrange(names.cooldowns, 0, -1) == [b"other:m2"]  # pruned
    # Deleting the key ends a cooldown early: the index only says where to look.
    await redis.delete(names.cooldown("other", "m2"))
    assert await cd.cooling() == {}


async def test_cooldown_set_by_hand_is_listed(redis: Redis, names: Names) -> None:
    # What an operator types: the key (with its TTL, or none) and its index member.
    cd = Cooldowns(redis, names)
    seconds, _ = await redis.time()
    await redis.set(names.cooldown("ops", "big-model"), b"1", px=5000)
    await redis.zadd(names.cooldowns, {"ops:big-model": (seconds + 5) * 1000})
    await redis.set(names.cooldown("ops", "forever"), b"1")
    await redis.zadd(names.cooldowns, {"ops:forever": "+inf"})
    try:
        listed = await cd.cooling()
        assert 0 < listed[("ops", "big-model")] <= 5
        assert listed[("ops", "forever")] == float("inf")
        assert await cd.remaining("ops", "forever") == float("inf")
    finally:  # no TTL: it would outlive the test in a shared Redis
        await redis.delete(names.cooldown("ops", "forever"), names.cooldowns)


def test_rejects_nonsense_settings(redis: Redis, names: Names) -> None:
    with pytest.raises(ValueError):
        Cooldowns(redis, names, threshold=0)
    with pytest.raises(ValueError):
        Cooldowns(redis, names, window_s=0)
    with pytest.raises(ValueError):
        Cooldowns(redis, names, period_s=-1)


async def test_redis_errors_propagate(names: Names) -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    try:
        cd = Cooldowns(dead, names)
        with pytest.raises(REDIS_UNAVAILABLE):
            await cd.failure(V, M)
        with pytest.raises(REDIS_UNAVAILABLE):
            await cd.remaining(V, M)
    finally:
        await dead.aclose()
