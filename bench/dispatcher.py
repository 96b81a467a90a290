"""Dispatcher throughput: N flat-field tasks (simple questions, code snippets, strategy
wording) pre-filled on the intake stream, a live worker registered for every vendor, then
the dispatcher run in-process until its intake group has nothing pending and no lag
(XINFO GROUPS polled every 100 ms). Every task must land on exactly one vendor stream.

Compared in the same run with a minimal raw redis-py loop over the same N entries
(XREADGROUP COUNT 100 from a copy stream, XADD each to another stream, XACK each), and
the router's pure decision time (`route()` over up to 20,000 decoded tasks, no Redis).
Prints a table, then one JSON line of headline numbers. Namespace keys are deleted at the end.

    python bench/dispatcher.py [--tasks 50000] [--redis-url redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
import uuid
from collections import Counter
from typing import Any

from benchlib import emit
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from services.cli.redis_finder import find_redis
from services.dispatcher.policy import Policy
from services.dispatcher.router import Fleet, route
from services.dispatcher.service import run_dispatcher
from services.dispatcher.settings import DispatcherSettings
from shared.bus.membership import Heartbeat
from shared.llm.registry import price_table
from shared.llm.settings import VendorSettings
from shared.protocol import KNOWN_VENDORS, Names, Task, decode, encode
from shared.runtime.logging import configure_logging
from shared.runtime.settings import BusSettings, SwarmSettings

ROUTE_SAMPLE = 20_000
POLL_S = 0.1
TIMEOUT_S = 120.0
PROMPTS = (
    "What is the capital of France?",
    "How many days are there in a leap year?",
    "Translate 'good morning' into Spanish.",
    "Fix the bug in this function:\n```python\ndef mean(xs):\n    return sum(xs) / len(xs)\n"
    "```\nIt fails on an empty list; add a test and handle the edge case.",
    "Refactor this class to use a dataclass and add type hints:\n```python\nclass Point:\n"
    "    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n```",
    "Write a SQL query that returns the top 10 customers by revenue, then explain the index "
    "it needs and why.",
    "Propose a go-to-market strategy for a developer tool entering a crowded market: "
    "positioning, pricing, trade-offs, risks and a 12-month roadmap.",
    "Evaluate the long-term strategic options for moving our platform to multi-region: "
    "compare costs, risks and competitive advantage, and recommend one.",
)


def make_tasks(n: int) -> list[dict[str, str]]:
    """Flat stream fields, as `redis-cli XADD <ns>:tasks '*' prompt ...` would post them."""
    return [
        encode(Task(prompt=f"{PROMPTS[i % len(PROMPTS)]} (#{i})", task_type="bench"))
        for i in range(n)
    ]


def fill(redis: SyncRedis, stream: str, entries: list[dict[str, str]]) -> None:
    for start in range(0, len(entries), 5_000):
        with redis.pipeline(transaction=False) as pipe:
            for fields in entries[start : start + 5_000]:
                pipe.xadd(stream, fields)  # type: ignore[arg-type]
            pipe.execute()


def group_backlog(redis: SyncRedis, stream: str, group: str) -> int | None:
    """pending + lag of the group, or None while it does not exist or lag is unknown."""
    for info in redis.xinfo_groups(stream):
        if info["name"].decode() == group:
            lag = info.get("lag")
            return None if lag is None else int(info["pending"]) + int(lag)
    return None


async def drain_seconds(
    url: str, names: Names, *, heartbeat_ttl_s: float = 600, timeout_s: float = TIMEOUT_S
) -> float:
    """Seconds from the dispatcher's start until its intake group is drained, with a live
    worker registered for every vendor for the whole run."""
    redis = Redis.from_url(url)
    for vendor in KNOWN_VENDORS:
        await Heartbeat(
            redis,
            names,
            f"bench-worker-{vendor}",
            service=f"worker-{vendor}",
            interval_s=300,
            ttl_s=heartbeat_ttl_s,
            info={"vendor": vendor},
        ).beat()
    await redis.aclose()
    poller = SyncRedis.from_url(url)
    stop = asyncio.Event()
    start = time.perf_counter()
    service = asyncio.create_task(
        run_dispatcher(stop, SwarmSettings(), BusSettings(), DispatcherSettings(), VendorSettings())
    )
    try:
        while True:
            await asyncio.sleep(POLL_S)
            if service.done():
                raise RuntimeError(f"the dispatcher stopped early: {service.result()}")
            # XINFO in a thread: the dispatcher shares this event loop.
            backlog = await asyncio.to_thread(
                group_backlog, poller, names.intake, Names.DISPATCHER_GROUP
            )
            if backlog == 0:
                return time.perf_counter() - start
            if time.perf_counter() - start > timeout_s:
                raise RuntimeError(f"not drained after {timeout_s:.0f}s (backlog {backlog})")
    finally:
        stop.set()
        await service
        poller.close()


async def dispatcher_run(url: str, names: Names, n: int) -> tuple[float, Counter[str], int]:
    """Routed tasks/s from the dispatcher's start until its intake group is drained."""
    elapsed = await drain_seconds(url, names)
    poller = SyncRedis.from_url(url)
    routed = Counter({v: int(poller.xlen(names.vendor_tasks(v))) for v in KNOWN_VENDORS})
    rejected = int(poller.xlen(names.rejected))
    poller.close()
    return n / elapsed, routed, rejected


def route_us_per_task(redis: SyncRedis, stream: str, count: int) -> float:
    """The router alone: decoded tasks, every vendor live, nothing cooling."""
    entries: Any = redis.xrange(stream, count=count)
    tasks = [decode(Task, fields) for _id, fields in entries]
    prices = price_table(VendorSettings())
    policy = Policy.load(DispatcherSettings().policy_file, prices)
    fleet = Fleet.everyone_live()
    start = time.perf_counter()
    for task in tasks:
        route(task, policy, prices, fleet)
    return (time.perf_counter() - start) / len(tasks) * 1e6


def raw_loop(redis: SyncRedis, names: Names, entries: list[dict[str, str]]) -> float:
    """The ceiling of read 100 -> XADD each elsewhere -> XACK each, same entries."""
    src, dst, group = f"{names.namespace}:bench:copy", f"{names.namespace}:bench:out", "g"
    fill(redis, src, entries)
    redis.xgroup_create(src, group, id="0")
    n, done = len(entries), 0
    start = time.perf_counter()
    while done < n:
        res: Any = redis.xreadgroup(group, "c", {src: ">"}, count=100, block=1000)
        for entry_id, fields in res[0][1]:
            redis.xadd(dst, fields)
            redis.xack(src, group, entry_id)
            done += 1
    elapsed = time.perf_counter() - start
    assert redis.xlen(dst) == n
    return n / elapsed


def cleanup(redis: SyncRedis, namespace: str) -> int:
    deleted = 0
    batch: list[bytes] = []
    for key in redis.scan_iter(match=f"{namespace}:*", count=1_000):
        batch.append(key)
        if len(batch) >= 1_000:
            deleted += int(redis.unlink(*batch))
            batch.clear()
    if batch:
        deleted += int(redis.unlink(*batch))
    return deleted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    args = parser.parse_args()
    n: int = args.tasks
    namespace = f"bench-disp-{uuid.uuid4().hex[:8]}"
    os.environ.update(SWARM_NAMESPACE=namespace, METRICS_PORT="0", LOG_LEVEL="warning")
    configure_logging("warning", json=True)
    names = Names(namespace)
    entries = make_tasks(n)
    with find_redis(args.redis_url) as url:
        os.environ["REDIS_URL"] = url
        redis = SyncRedis.from_url(url)
        try:
            fill(redis, names.intake, entries)
            routed_per_s, routed, rejected = asyncio.run(dispatcher_run(url, names, n))
            route_us = route_us_per_task(redis, names.intake, min(n, ROUTE_SAMPLE))
            raw_per_s = raw_loop(redis, names, entries)
        finally:
            cleanup(redis, namespace)
            redis.close()
    total = sum(routed.values())
    ratio = routed_per_s / raw_per_s
    print(
        f"dispatcher benchmark: {n:,} flat-field tasks, one process, "
        f"Python {platform.python_version()}, {os.cpu_count()} cores"
    )
    print(f"{'measure':<48}{'value':>14}")
    print(f"{'raw redis-py sync: read 100, XADD + XACK each':<48}{raw_per_s:>14,.0f}/s")
    print(f"{'dispatcher (validate, route, record, forward)':<48}{routed_per_s:>14,.0f}/s")
    print(f"{'router alone, route() per task':<48}{route_us:>14,.1f} µs")
    print(f"ratio dispatcher / raw loop: {ratio:.2f}")
    print("routed: " + ", ".join(f"{v} {c:,}" for v, c in routed.most_common() if c))
    print(f"total routed {total:,} of {n:,}; rejected {rejected:,}")
    assert total == n, f"routed {total:,} entries across vendor streams, expected {n:,}"
    emit(
        {
            "bench": "dispatcher",
            "tasks": n,
            "routed_per_s": round(routed_per_s),
            "raw_redis_per_s": round(raw_per_s),
            "ratio": round(ratio, 3),
            "route_us_per_task": round(route_us, 1),
        }
    )


if __name__ == "__main__":
    main()
