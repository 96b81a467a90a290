"""swarmbus: Bus.publish_many to fill, then one serve() loop over a subscription (defaults of
BusSettings but max_in_flight), through Redis Streams. Runs in the project's venv.

    .venv/bin/python bench/peers/peer_swarmbus.py --mode noop --n 20000 --in-flight 256
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from _common import SLEEP_S, Clock, namespace, parse_args, report, wait_acked_async

from shared.bus import Bus, Delivery, Outgoing, serve
from shared.protocol import Names
from shared.runtime.logging import configure_logging
from shared.runtime.metrics import Metrics
from shared.runtime.redis import connect
from shared.runtime.settings import BusSettings

GROUP = "bench"


async def main() -> None:
    args = parse_args(__doc__)
    configure_logging("warning", json=True)
    settings = BusSettings(max_in_flight=args.in_flight)
    redis = connect(args.redis_url, settings)
    ns = namespace("swarmbus")
    names = Names(ns)
    stream = names.intake
    bus = Bus(redis, names, settings, Metrics.create())
    clock = Clock(args.n)
    try:
        await bus.ensure_group(stream, GROUP)
        t0 = time.perf_counter()
        await bus.publish_many(Outgoing(stream, {"n": str(i)}) for i in range(args.n))
        fill_s = time.perf_counter() - t0

        async def handler(_d: Delivery) -> None:
            clock.begin()
            if args.mode == "io":
                await asyncio.sleep(SLEEP_S)
            clock.done()

        async def all_acked() -> bool:
            pending: Any = await redis.xpending(stream, GROUP)
            return int(pending["pending"]) == 0

        stop = asyncio.Event()
        sub = bus.subscribe(stream, GROUP, "c1")
        await sub.start()
        serving = asyncio.create_task(serve(sub, handler, stop=stop, drain_timeout_s=30))
        end = await wait_acked_async(clock, all_acked)
        stop.set()
        stats = await serving
        assert stats.acked == args.n, stats
    finally:
        keys = [k async for k in redis.scan_iter(match=f"{ns}:*", count=1000)]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
    report(
        system="swarmbus",
        args=args,
        clock=clock,
        end=end,
        fill_s=fill_s,
        config={
            "max_in_flight": settings.max_in_flight,
            "read_count": settings.read_count,
            "publish": "Bus.publish_many (one pipeline)",
        },
        packages=("swarmbus", "redis", "hiredis"),
    )


if __name__ == "__main__":
    asyncio.run(main())
