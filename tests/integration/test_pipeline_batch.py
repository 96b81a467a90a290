"""PipelineBatch: the commands of callers waiting at once share a pipeline; each caller gets
its own reply or its own error."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from shared.bus.pipeline_batch import PipelineBatch
from shared.protocol import Names


async def test_each_caller_gets_its_own_reply(redis: Redis, names: Names) -> None:
    batch = PipelineBatch(redis)
    key = f"{names.namespace}:batch:n"
    replies = await asyncio.gather(*(batch.call(lambda p: p.incr(key)) for _ in range(200)))
    assert sorted(replies) == list(range(1, 201))  # every INCR ran once
    await batch.close()


async def test_an_error_reaches_only_its_caller(redis: Redis, names: Names) -> None:
    batch = PipelineBatch(redis)
    text, counter = f"{names.namespace}:batch:text", f"{names.namespace}:batch:count"
    await redis.set(text, "not a hash")
    wrong = batch.call(lambda p: p.hset(text, "f", "v"))  # WRONGTYPE
    right = batch.call(lambda p: p.incr(counter))
    results = await asyncio.gather(wrong, right, return_exceptions=True)
    assert isinstance(results[0], ResponseError) and "WRONGTYPE" in str(results[0])
    assert results[1] == 1
    await batch.close()


async def test_a_script_goes_in_the_batch(redis: Redis, names: Names) -> None:
    script = redis.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    batch = PipelineBatch(redis)
    key = f"{names.namespace}:batch:script"
    replies = await asyncio.gather(
        *(batch.call(lambda p, n=n: script(keys=[key], args=[n], client=p)) for n in (1, 2, 3))
    )
    assert replies == [1, 3, 6]  # the pipeline runs them in the order they were queued
    assert int(await redis.get(key)) == 6
    await batch.close()


async def test_redis_gone_fails_every_waiting_caller() -> None:
    dead = Redis(port=1, socket_connect_timeout=0.5)
    batch = PipelineBatch(dead)
    results = await asyncio.gather(
        *(batch.call(lambda p: p.ping()) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, RedisConnectionError) for r in results), results
    await dead.aclose()
