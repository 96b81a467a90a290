"""Dispatcher throughput: N flat-field tasks (simple questions, code snippets, strategy
wording) pre-filled on the intake stream, a live worker registered for every vendor, then
the dispatcher run in-process until its intake group has nothing pending and no lag
(XINFO GROUPS polled every 100 ms). Every task must land on exactly one vendor stream.

Compared in the same run with a minimal raw redis-py loop over the same N entries
(XREADGROUP COUNT 100 from a copy stream, XADD each to another stream, XACK each), and
the router's pure decision time (`route()` over up to 20,000 decoded tasks, no Redis).
Both run `--rounds` times, interleaved, each on a fresh namespace; the medians are shown,
with the process CPU time per task beside each rate (it holds still when other work shares
the machine). Prints a table, then one JSON line of headline numbers, judged against issue
19's goals: the dispatcher at >= 0.5x its raw loop and <= 0.4 ms CPU per task. Namespace
keys are deleted at the end of each round.

    python bench/dispatcher.py [--tasks 50000] [--rounds 3] [--redis-url redis://...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
import uuid
from collections import Counter
from dataclasses import dataclass
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
TIMEOUT_S = 300.0
GOAL_RATIO = 0.5  # issue 19: the dispatcher at half its raw loop's rate or better
GOAL_CPU_MS = 0.4  # and at most this much of its process's CPU per routed task
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


@dataclass(frozen=True)
class Drain:
    seconds: float
    cpu_s: float  # this process's CPU time over the drain (the dispatcher and the poller)


async def drain_seconds(
    url: str, names: Names, *, heartbeat_ttl_s: float = 600, timeout_s: float = TIMEOUT_S
) -> Drain:
    """Seconds (and CPU seconds) from the dispatcher's start until its intake group is
    drained, with a live worker registered for every vendor for the whole run."""
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
    start, cpu = time.perf_counter(), time.process_time()
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
                return Drain(time.perf_counter() - start, time.process_time() - cpu)
            if time.perf_counter() - start > timeout_s:
                raise RuntimeError(f"not drained after {timeout_s:.0f}s (backlog {backlog})")
    finally:
        stop.set()
        await service
        poller.close()


async def dispatcher_run(url: str, names: Names, n: int) -> tuple[Drain, Counter[str], int]:
    """The drain, and where the tasks went."""
    drain = await drain_seconds(url, names)
    poller = SyncRedis.from_url(url)
    routed = Counter({v: int(poller.xlen(names.vendor_tasks(v))) for v in KNOWN_VENDORS})
    rejected = int(poller.xlen(names.rejected))
    poller.close()
    return drain, routed, rejected


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


def raw_loop(redis: SyncRedis, names: Names, entries: list[dict[str, str]]) -> Drain:
    """The ceiling of read 100 -> XADD each elsewhere -> XACK each, same entries."""
    src, dst, group = f"{names.namespace}:bench:copy", f"{names.namespace}:bench:out", "g"
    fill(redis, src, entries)
    redis.xgroup_create(src, group, id="0")
    n, done = len(entries), 0
    start, cpu = time.perf_counter(), time.process_time()
    while done < n:
        res: Any = redis.xreadgroup(group, "c", {src: ">"}, count=100, block=1000)
        for entry_id, fields in res[0][1]:
            redis.xadd(dst, fields)
            redis.xack(src, group, entry_id)
            done += 1
    drain = Drain(time.perf_counter() - start, time.process_time() - cpu)
    assert redis.xlen(dst) == n
    return drain


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


@dataclass(frozen=True)
class Round:
    dispatcher: Drain
    raw: Drain
    route_us: float
    routed: Counter[str]
    rejected: int


def one_round(url: str, entries: list[dict[str, str]]) -> Round:
    """The dispatcher, the router alone and the raw loop on a fresh namespace, cleaned up."""
    namespace = f"bench-disp-{uuid.uuid4().hex[:8]}"
    os.environ["SWARM_NAMESPACE"] = namespace
    names = Names(namespace)
    redis = SyncRedis.from_url(url)
    try:
        fill(redis, names.intake, entries)
        drain, routed, rejected = asyncio.run(dispatcher_run(url, names, len(entries)))
        route_us = route_us_per_task(redis, names.intake, min(len(entries), ROUTE_SAMPLE))
        raw = raw_loop(redis, names, entries)
    finally:
        cleanup(redis, namespace)
        redis.close()
    return Round(drain, raw, route_us, routed, rejected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    args = parser.parse_args()
    n: int = args.tasks
    os.environ.update(METRICS_PORT="0", LOG_LEVEL="warning")
    configure_logging("warning", json=True)
    entries = make_tasks(n)
    with find_redis(args.redis_url) as url:
        os.environ["REDIS_URL"] = url
        rounds = [one_round(url, entries) for _ in range(args.rounds)]
    for r in rounds:
        total = sum(r.routed.values())
        assert total == n, f"routed {total:,} entries across vendor streams, expected {n:,}"

    routed_per_s = statistics.median([n / r.dispatcher.seconds for r in rounds])
    raw_per_s = statistics.median([n / r.raw.seconds for r in rounds])
    cpu_ms = statistics.median([r.dispatcher.cpu_s / n * 1e3 for r in rounds])
    raw_cpu_ms = statistics.median([r.raw.cpu_s / n * 1e3 for r in rounds])
    route_us = statistics.median([r.route_us for r in rounds])
    ratio = routed_per_s / raw_per_s
    print(
        f"dispatcher benchmark: {n:,} flat-field tasks, one process, {len(rounds)} rounds "
        f"(medians), Python {platform.python_version()}, {os.cpu_count()} cores"
    )
    print(f"{'measure':<48}{'tasks/s':>12}{'CPU ms/task':>14}")
    for label, rate, cpu in (
        ("raw redis-py sync: read 100, XADD + XACK each", raw_per_s, raw_cpu_ms),
        ("dispatcher (validate, route, record, forward)", routed_per_s, cpu_ms),
    ):
        print(f"{label:<48}{rate:>12,.0f}{cpu:>14.3f}")
    print(f"{'router alone, route() per task':<48}{'':>12}{route_us / 1e3:>14.3f}")
    print(f"ratio dispatcher / raw loop: {ratio:.2f}")
    last = rounds[-1]
    print(
        "routed (last round): " + ", ".join(f"{v} {c:,}" for v, c in last.routed.most_common() if c)
    )
    print(f"rejected {last.rejected:,}")
    met_ratio, met_cpu = ratio >= GOAL_RATIO, cpu_ms <= GOAL_CPU_MS
    print(f"goal: >= {GOAL_RATIO}x the raw loop: {'met' if met_ratio else 'missed'} ({ratio:.2f}x)")
    print(
        f"goal: <= {GOAL_CPU_MS} ms CPU per task: {'met' if met_cpu else 'missed'} ({cpu_ms:.3f})"
    )
    emit(
        {
            "bench": "dispatcher",
            "tasks": n,
            "rounds": len(rounds),
            "routed_per_s": round(routed_per_s),
            "raw_redis_per_s": round(raw_per_s),
            "ratio": round(ratio, 3),
            "cpu_ms_per_task": round(cpu_ms, 3),
            "raw_cpu_ms_per_task": round(raw_cpu_ms, 3),
            "route_us_per_task": round(route_us, 1),
            "goal_ratio": GOAL_RATIO,
            "goal_cpu_ms_per_task": GOAL_CPU_MS,
        },
        details={
            "rounds": [
                {
                    "routed_per_s": round(n / r.dispatcher.seconds),
                    "raw_per_s": round(n / r.raw.seconds),
                    "cpu_ms_per_task": round(r.dispatcher.cpu_s / n * 1e3, 3),
                    "raw_cpu_ms_per_task": round(r.raw.cpu_s / n * 1e3, 3),
                    "route_us_per_task": round(r.route_us, 1),
                }
                for r in rounds
            ]
        },
    )


if __name__ == "__main__":
    main()
