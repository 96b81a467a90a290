"""FastStream's RedisBroker with a Redis Streams subscriber in a consumer group, started in
this process (what `faststream run` starts): max_workers = in flight (its concurrent
subscriber: at most that many handlers at once, the same cap every system gets),
ack_policy ACK (XACK after the handler returns), max_records 100 per XREADGROUP (taskiq's
xread_count; FastStream's default reads the whole backlog in one call). Filled with
`broker.publish()`. The group is made at id 0 before the fill: FastStream would make it at
`$` and skip the pre-filled messages.

    .venv-bench/bin/python bench/peers/peer_faststream.py --mode noop --n 20000 --in-flight 256
"""

from __future__ import annotations

import asyncio
import logging

from _common import (
    FILL_CONCURRENCY,
    Clock,
    drop_keys,
    fill,
    group_drained,
    handle,
    namespace,
    parse_args,
    report,
    wait_acked_async,
)
from faststream import AckPolicy
from faststream.redis import RedisBroker, StreamSub
from redis.asyncio import Redis

GROUP = "bench"
MAX_RECORDS = 100


async def main() -> None:
    args = parse_args(__doc__)
    logging.basicConfig(level=logging.WARNING)
    ns = namespace("faststream")
    stream = f"{ns}:stream"
    broker = RedisBroker(args.redis_url, logger=None)
    clock = Clock(args.n)

    @broker.subscriber(
        stream=StreamSub(stream, group=GROUP, consumer="0", max_records=MAX_RECORDS),
        max_workers=args.in_flight,
        ack_policy=AckPolicy.ACK,
    )
    async def noop(_i: int) -> None:
        await handle(clock, args.mode)

    redis = Redis.from_url(args.redis_url)
    try:
        await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
        await broker.connect()
        fill_s = await fill(lambda i: broker.publish(i, stream=stream), args.n)
        all_acked = group_drained(redis, stream, GROUP)

        await broker.start()
        end = await wait_acked_async(clock, all_acked)
    finally:
        await broker.stop()
        await drop_keys(redis, f"*{ns}*")
        await redis.aclose()
    report(
        system="faststream",
        args=args,
        clock=clock,
        end=end,
        fill_s=fill_s,
        config={
            "broker": "faststream.redis.RedisBroker",
            "subscriber": "StreamSub(group, consumer), concurrent",
            "max_workers": args.in_flight,
            "max_records": MAX_RECORDS,
            "ack": "AckPolicy.ACK (after the handler)",
            "publish": f"broker.publish(), {FILL_CONCURRENCY} at once",
        },
        packages=("faststream", "redis", "hiredis"),
    )


if __name__ == "__main__":
    asyncio.run(main())
