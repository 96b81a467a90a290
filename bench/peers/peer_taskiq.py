"""taskiq with taskiq-redis's RedisStreamBroker, worked by taskiq's own Receiver (what
`taskiq worker` runs) in this process: max_async_tasks = in flight, ack when the result is
saved (taskiq's default), the broker's default xread_count 100. Filled with `.kiq()`.

    .venv-bench/bin/python bench/peers/peer_taskiq.py --mode noop --n 20000 --in-flight 256
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

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
from redis.asyncio import Redis
from taskiq.receiver import Receiver
from taskiq_redis import RedisStreamBroker

GROUP = "bench"


async def main() -> None:
    args = parse_args(__doc__)
    logging.basicConfig(level=logging.WARNING)
    ns = namespace("taskiq")
    stream = f"{ns}:stream"
    broker = RedisStreamBroker(
        args.redis_url,
        queue_name=stream,
        consumer_group_name=GROUP,
        consumer_id="0",  # the group starts before the fill, so it sees every message
    )
    clock = Clock(args.n)

    @broker.task(task_name="noop")
    async def noop(_i: int) -> None:
        await handle(clock, args.mode)

    redis = Redis.from_url(args.redis_url)
    try:
        await broker.startup()  # declares the group (client side: no receiver yet)
        fill_s = await fill(noop.kiq, args.n)
        all_acked = group_drained(redis, stream, GROUP)

        finish = asyncio.Event()
        broker.is_worker_process = True
        with ThreadPoolExecutor(max_workers=4) as executor:
            receiver = Receiver(
                broker=broker,
                executor=executor,
                max_async_tasks=args.in_flight,
                run_startup=False,  # done above
            )
            listening = asyncio.create_task(receiver.listen(finish))
            end = await wait_acked_async(clock, all_acked)
            finish.set()
            listening.cancel()
            await asyncio.gather(listening, return_exceptions=True)
    finally:
        await broker.shutdown()
        await drop_keys(redis, f"*{ns}*")
        await redis.aclose()
    report(
        system="taskiq",
        args=args,
        clock=clock,
        end=end,
        fill_s=fill_s,
        config={
            "broker": "taskiq_redis.RedisStreamBroker",
            "receiver": "taskiq.receiver.Receiver",
            "max_async_tasks": args.in_flight,
            "xread_count": broker.count,
            "ack": "when saved (default)",
            "publish": f".kiq(), {FILL_CONCURRENCY} at once",
        },
        packages=("taskiq", "taskiq-redis", "redis", "hiredis"),
    )


if __name__ == "__main__":
    asyncio.run(main())
