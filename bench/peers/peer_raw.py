"""The ceiling: a minimal redis-py loop, no framework. XADD to fill (one pipeline), then
XREADGROUP COUNT 100, call the handler on each entry, one XACK for the whole batch.
`--variant sync` (redis.Redis) or `--variant async` (redis.asyncio.Redis). Mode noop only:
a loop this simple runs one handler at a time.

    python bench/peers/peer_raw.py --variant sync --n 20000
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from _common import Clock, namespace, parse_args, report
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

GROUP, CONSUMER, COUNT = "bench", "c1", 100


def handler(clock: Clock, _fields: dict[bytes, bytes]) -> None:
    clock.begin()
    clock.done()


def fill(redis: Redis, stream: str, n: int) -> float:
    redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    t0 = time.perf_counter()
    with redis.pipeline(transaction=False) as pipe:
        for i in range(n):
            pipe.xadd(stream, {"n": str(i)})
        pipe.execute()
    return time.perf_counter() - t0


def drain_sync(url: str, stream: str, clock: Clock) -> float:
    redis = Redis.from_url(url)
    done = 0
    while done < clock.n:
        res: Any = redis.xreadgroup(GROUP, CONSUMER, {stream: ">"}, count=COUNT, block=1000)
        entries = res[0][1]
        for _id, fields in entries:
            handler(clock, fields)
        redis.xack(stream, GROUP, *(entry_id for entry_id, _f in entries))
        done += len(entries)
    end = clock.finish()
    redis.close()
    return end


async def drain_async(url: str, stream: str, clock: Clock) -> float:
    redis = AsyncRedis.from_url(url)
    done = 0
    while done < clock.n:
        res: Any = await redis.xreadgroup(GROUP, CONSUMER, {stream: ">"}, count=COUNT, block=1000)
        entries = res[0][1]
        for _id, fields in entries:
            handler(clock, fields)
        await redis.xack(stream, GROUP, *(entry_id for entry_id, _f in entries))
        done += len(entries)
    end = clock.finish()
    await redis.aclose()
    return end


def main() -> None:
    args = parse_args(__doc__)
    if args.mode != "noop":
        raise SystemExit("the raw loop is the no-op ceiling only")
    args.variant = args.variant or "sync"
    args.in_flight = 1
    redis = Redis.from_url(args.redis_url)
    stream = f"{namespace('raw')}:stream"
    clock = Clock(args.n)
    try:
        fill_s = fill(redis, stream, args.n)
        if args.variant == "sync":
            end = drain_sync(args.redis_url, stream, clock)
        else:
            end = asyncio.run(drain_async(args.redis_url, stream, clock))
        pending: Any = redis.xpending(stream, GROUP)
        assert pending["pending"] == 0, pending
    finally:
        redis.delete(stream)
        redis.close()
    report(
        system="raw redis-py",
        args=args,
        clock=clock,
        end=end,
        fill_s=fill_s,
        config={"client": args.variant, "count": COUNT, "ack": "one XACK per batch"},
        packages=("redis", "hiredis"),
    )


if __name__ == "__main__":
    main()
