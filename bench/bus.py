"""Bus throughput: N no-op messages through publish -> consume -> ack in one process,
against a minimal raw redis-py loop (XADD, XREADGROUP COUNT, XACK per message) in the
same run. Prints a table, then one JSON line of headline numbers.

    python bench/bus.py [--n 20000] [--redis-url redis://127.0.0.1:6379/0] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
import uuid
from typing import Any

from benchlib import emit
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from shared.bus import Bus, Delivery, Outgoing, serve
from shared.protocol import Names
from shared.runtime.logging import configure_logging
from shared.runtime.metrics import Metrics
from shared.runtime.redis import connect
from shared.runtime.settings import BusSettings


async def _fill(redis: Redis, stream: str, n: int) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(n):
            pipe.xadd(stream, {"n": str(i)})
        await pipe.execute()


def raw_sync_loop(url: str, n: int) -> float:
    """The same raw loop with the synchronous client (often the faster of the two)."""
    redis = SyncRedis.from_url(url)
    stream, group = f"bench:{uuid.uuid4().hex}", "g"
    redis.xgroup_create(stream, group, id="0", mkstream=True)
    start = time.perf_counter()
    with redis.pipeline(transaction=False) as pipe:
        for i in range(n):
            pipe.xadd(stream, {"n": str(i)})
        pipe.execute()
    done = 0
    while done < n:
        res: Any = redis.xreadgroup(group, "c", {stream: ">"}, count=100, block=1000)
        for entry_id, _fields in res[0][1]:
            redis.xack(stream, group, entry_id)
            done += 1
    elapsed = time.perf_counter() - start
    redis.delete(stream)
    redis.close()
    return n / elapsed


async def raw_loop(url: str, n: int) -> float:
    """The ceiling a per-message-ack consumer can reach: read 100, ack each one."""
    redis = Redis.from_url(url)
    stream, group = f"bench:{uuid.uuid4().hex}", "g"
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    start = time.perf_counter()
    await _fill(redis, stream, n)
    done = 0
    while done < n:
        res = await redis.xreadgroup(group, "c", {stream: ">"}, count=100, block=1000)
        for entry_id, _fields in res[0][1]:
            await redis.xack(stream, group, entry_id)
            done += 1
    elapsed = time.perf_counter() - start
    await redis.delete(stream)
    await redis.aclose()
    return n / elapsed


async def bus_loop(url: str, n: int) -> float:
    settings = BusSettings(max_in_flight=256, read_count=100)
    redis = connect(url, settings)
    names = Names(f"bench{uuid.uuid4().hex[:8]}")
    bus = Bus(redis, names, settings, Metrics.create())
    stream = names.intake
    await bus.ensure_group(stream, "g")
    stop = asyncio.Event()
    done = 0

    async def noop(_d: Delivery) -> None:
        nonlocal done
        done += 1
        if done == n:
            stop.set()

    sub = bus.subscribe(stream, "g", "c")
    start = time.perf_counter()
    await bus.publish_many(Outgoing(stream, {"n": str(i)}) for i in range(n))
    await sub.start()
    await serve(sub, noop, stop=stop, drain_timeout_s=30)
    elapsed = time.perf_counter() - start
    pending = (await redis.xpending(stream, "g"))["pending"]
    assert pending == 0, f"{pending} entries left unacked"
    await redis.delete(stream)
    await redis.aclose()
    return n / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args()
    configure_logging("warning", json=True)
    raw_async: list[float] = []
    raw_sync: list[float] = []
    bus: list[float] = []
    for _ in range(args.rounds):  # interleaved so drift hits all alike
        raw_async.append(await raw_loop(args.redis_url, args.n))
        raw_sync.append(raw_sync_loop(args.redis_url, args.n))
        bus.append(await bus_loop(args.redis_url, args.n))
    # The baseline is whichever raw loop is faster here, so the ratio is never flattered.
    raw = max(raw_async, raw_sync, key=statistics.median)
    raw_med, bus_med = statistics.median(raw), statistics.median(bus)
    print(
        f"bus benchmark: {args.n} no-op messages x {args.rounds} rounds, one process, "
        f"Python {platform.python_version()}, {os.cpu_count()} cores"
    )
    print(f"{'loop':<34}{'median msg/s':>14}{'min':>10}{'max':>10}")
    for label, rates in (
        ("raw redis-py asyncio, XACK each", raw_async),
        ("raw redis-py sync, XACK each", raw_sync),
    ):
        print(
            f"{label:<34}{statistics.median(rates):>14,.0f}{min(rates):>10,.0f}{max(rates):>10,.0f}"
        )
    print(
        f"{'swarmbus (publish/serve/ack)':<34}{bus_med:>14,.0f}{min(bus):>10,.0f}{max(bus):>10,.0f}"
    )
    print(f"ratio bus / faster raw loop: {bus_med / raw_med:.2f} (target >= 0.70)")
    emit(
        {
            "bench": "bus",
            "bus_msgs_per_s": round(bus_med),
            "raw_msgs_per_s": round(raw_med),
            "ratio": round(bus_med / raw_med, 3),
        },
        redis_url=args.redis_url,
    )


if __name__ == "__main__":
    asyncio.run(main())
