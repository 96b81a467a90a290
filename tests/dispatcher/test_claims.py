"""Task-id claims on a real Redis: one entry per task id and attempt wins, however the
claims are batched; the winner's redelivery wins again; Redis down fails every waiter."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from services.dispatcher.claims import TaskClaims
from shared.protocol import Names
from shared.runtime.net import free_port
from shared.runtime.redis import REDIS_UNAVAILABLE

TTL_S = 3600.0


async def test_two_copies_claimed_at_once_one_wins_and_its_redelivery_still_does(
    redis: Redis, names: Names
) -> None:
    claims = TaskClaims(redis, TTL_S)
    keys = [names.task(f"t{i}") for i in range(50)]
    # Both copies of every task id in the same batches, first copies queued first.
    firsts = [claims.claim(k, "entry:1", f"{i}-1") for i, k in enumerate(keys)]
    seconds = [claims.claim(k, "entry:1", f"{i}-2") for i, k in enumerate(keys)]
    won = await asyncio.gather(*firsts, *seconds)
    assert won == [True] * 50 + [False] * 50
    for i, key in enumerate(keys):
        assert await redis.hget(key, "entry:1") == f"{i}-1".encode()
        assert 0 < await redis.pttl(key) <= TTL_S * 1000
    # Later, in batches of their own: a redelivery of the owner still owns the task id,
    # the other copy never; another attempt is a new claim.
    assert await claims.claim(keys[0], "entry:1", "0-1")
    assert not await claims.claim(keys[0], "entry:1", "0-2")
    assert await claims.claim(keys[0], "entry:2", "0-3")
    # A claim released (a dead-letter replay) is free again.
    await redis.hdel(keys[1], "entry:1")
    assert await claims.claim(keys[1], "entry:1", "1-2")


async def test_redis_down_fails_every_waiting_claim_and_later_claims_are_sent_again(
    names: Names,
) -> None:
    down = Redis(port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    claims = TaskClaims(down, TTL_S)
    try:
        for _ in range(2):
            results = await asyncio.wait_for(
                asyncio.gather(
                    *(claims.claim(names.task(f"t{i}"), "entry:1", f"{i}-1") for i in range(5)),
                    return_exceptions=True,
                ),
                10,
            )
            assert all(isinstance(r, REDIS_UNAVAILABLE) for r in results), results
    finally:
        await down.aclose()


async def test_a_claim_that_fails_on_its_key_fails_alone(redis: Redis, names: Names) -> None:
    claims = TaskClaims(redis, TTL_S)
    await redis.set(names.task("bad"), "not a hash")
    results = await asyncio.gather(
        claims.claim(names.task("a"), "entry:1", "1-1"),
        claims.claim(names.task("bad"), "entry:1", "2-1"),
        claims.claim(names.task("b"), "entry:1", "3-1"),
        return_exceptions=True,
    )
    assert results[0] is True and results[2] is True
    assert isinstance(results[1], ResponseError) and "WRONGTYPE" in str(results[1])


@pytest.mark.parametrize("copies", [1, 3])
async def test_a_claim_cancelled_while_waiting_leaves_the_others_decided(
    redis: Redis, names: Names, copies: int
) -> None:
    claims = TaskClaims(redis, TTL_S)
    key = names.task("c")
    waiting = [asyncio.create_task(claims.claim(key, "entry:1", f"1-{i}")) for i in range(copies)]
    other = asyncio.create_task(claims.claim(names.task("d"), "entry:1", "2-1"))
    await asyncio.sleep(0)
    waiting[0].cancel()
    assert await other
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert results[1:] == [False] * (copies - 1)  # the cancelled one had claimed it
