"""arq (its sorted-set queue) with its own Worker in this process: max_jobs = in flight,
keep_result=0, a short poll_delay (its default 0.5 s sleeps between polls even while jobs
wait, which caps it at max_jobs per half second). Filled with `enqueue_job`. Runs in its
own venv: arq pins redis-py below 6, the other peers need 8.

    .venv-bench-arq/bin/python bench/peers/peer_arq.py --mode noop --n 20000 --in-flight 256
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from _common import SLEEP_S, Clock, namespace, parse_args, report, wait_acked_async
from arq import Worker, create_pool
from arq.connections import RedisSettings
from arq.worker import func

FILL_CONCURRENCY = 100
POLL_DELAY_S = 0.005


async def main() -> None:
    args = parse_args(__doc__)
    logging.basicConfig(level=logging.WARNING)
    ns = namespace("arq")
    queue = f"{ns}:queue"
    clock = Clock(args.n)
    pool = await create_pool(RedisSettings.from_dsn(args.redis_url), default_queue_name=queue)

    async def noop(_ctx: dict[str, Any], _i: int) -> None:
        clock.begin()
        if args.mode == "io":
            await asyncio.sleep(SLEEP_S)
        clock.done()

    try:
        t0 = time.perf_counter()
        for start in range(0, args.n, FILL_CONCURRENCY):
            stop_at = min(start + FILL_CONCURRENCY, args.n)
            await asyncio.gather(
                *(pool.enqueue_job("noop", i, _job_id=f"{ns}-{i}") for i in range(start, stop_at))
            )
        fill_s = time.perf_counter() - t0

        async def all_acked() -> bool:
            # A job leaves the queue in the same transaction that ends it (finish_job).
            return int(await pool.zcard(queue)) == 0

        worker = Worker(
            functions=[func(noop, name="noop")],
            queue_name=queue,
            redis_pool=pool,
            max_jobs=args.in_flight,
            keep_result=0,
            poll_delay=POLL_DELAY_S,
            handle_signals=False,
            log_results=False,
        )
        working = asyncio.create_task(worker.main())
        end = await wait_acked_async(clock, all_acked)
        working.cancel()
        await asyncio.gather(working, return_exceptions=True)
        assert worker.jobs_complete == args.n, worker.jobs_complete
        await worker.close()
    finally:
        keys = [k async for k in pool.scan_iter(match=f"*{ns}*", count=1000)]
        if keys:
            await pool.delete(*keys)
        await pool.aclose()
    report(
        system="arq",
        args=args,
        clock=clock,
        end=end,
        fill_s=fill_s,
        config={
            "worker": "arq.Worker",
            "max_jobs": args.in_flight,
            "poll_delay_s": POLL_DELAY_S,
            "keep_result": 0,
            "publish": f"enqueue_job, {FILL_CONCURRENCY} at once",
        },
        packages=("arq", "redis", "hiredis"),
    )


if __name__ == "__main__":
    asyncio.run(main())
