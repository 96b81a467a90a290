"""The whole swarm under load: intake -> dispatcher -> workers -> collector, every service its
own process (`swarm run ...`), the vendor calls through the real SDK to the simulator (its
own process, fixed latency). Measured in one run:

* sustained: N tasks posted at once (pinned to one vendor, so the scaling rows compare like
  with like), tasks/s from the first post to the collector storing the last finding;
* added latency: tasks posted open-loop at 50% and 90% of that rate for a fixed time; per
  task, (collector stored it - task posted) - the vendor call the worker timed: what the
  swarm adds around the vendor (queueing, routing, Redis hops), p50/p95/p99;
* CPU ms per task per service (utime + stime from /proc over the sustained run);
* Redis memory per 100,000 tasks (MEMORY USAGE of every key of the run's namespace after
  it: intake, queue and findings stream entries within retention, task records, done
  markers, the collector's per-task findings and summaries);
* scaling: the sustained run with 1, 2 and 4 worker processes of the vendor.

The baseline in the same run is the worker alone: the same tasks put straight on the vendor
queue, findings counted on the stream (no dispatcher, no collector), so the table shows what
the rest of the pipeline costs.

    python bench/swarm.py [--tasks 3000] [--latency 0.05] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchlib import cpu_seconds, emit
from redis.asyncio import Redis

from services.cli.demo import Fleet, clear_namespace
from services.cli.redis_finder import find_redis
from services.simulator.process import spawn_simulator
from shared.bus.findings import expect_run, run_progress, run_task_statuses, task_view
from shared.bus.membership import live_members
from shared.protocol import Names, Task, encode, encode_data
from shared.runtime.redis import connect
from shared.runtime.settings import BusSettings

VENDOR = "deepseek"
POLL_S = 0.05


def tasks(n: int, run_id: str) -> list[Task]:
    return [
        Task(task_id=f"{run_id}-{i:06d}", prompt=f"Check invoice {i} against its contract.",
             vendor=VENDOR, run_id=run_id, max_output_tokens=64)
        for i in range(n)
    ]  # fmt: skip


async def start_swarm(
    url: str, names: Names, sim_url: str, logs: Path, workers: int, *, pipeline: bool = True
) -> Fleet:
    env = {
        **os.environ,
        "REDIS_URL": url,
        "SWARM_NAMESPACE": names.namespace,
        "METRICS_PORT": "0",
        "LOG_LEVEL": "warning",
        "SWARM_SIMULATOR_URL": sim_url,
        "SWARM_COLLECTOR_EXPORT_PATH": str(logs / f"{names.namespace}.jsonl"),
        "SWARM_MAX_IN_FLIGHT": "500",
    }
    fleet = Fleet(env, logs)
    if pipeline:
        await fleet.start("dispatcher", "run", "dispatcher")
        await fleet.start("collector", "run", "collector")
    for i in range(workers):
        await fleet.start(f"worker-{i}", "run", "worker", "--vendor", VENDOR)
    redis = connect(url, BusSettings())
    try:
        want = workers + (2 if pipeline else 0)
        deadline = time.monotonic() + 60
        while len(await live_members(redis, names)) < want:
            fleet.check()
            if time.monotonic() > deadline:
                raise RuntimeError("the swarm did not come up")
            await asyncio.sleep(0.1)
    finally:
        await redis.aclose()
    return fleet


async def wait_run(redis: Redis, names: Names, run_id: str, n: int, fleet: Fleet) -> float:
    while True:
        fleet.check()
        p = await run_progress(redis, names, run_id)
        if p.finished >= n:
            return time.monotonic()
        await asyncio.sleep(POLL_S)


async def post_all(redis: Redis, names: Names, batch: Sequence[Task], stream: str) -> None:
    for i in range(0, len(batch), 500):
        async with redis.pipeline(transaction=False) as pipe:
            for t in batch[i : i + 500]:
                pipe.xadd(stream, encode_data(t) if stream == names.intake else encode(t))  # type: ignore[arg-type]
            await pipe.execute()


async def sustained(url: str, sim_url: str, logs: Path, n: int, workers: int) -> dict[str, Any]:
    names = Names(f"bench-swarm-{uuid.uuid4().hex[:8]}")
    redis = connect(url, BusSettings())
    fleet = await start_swarm(url, names, sim_url, logs, workers)
    try:
        run_id = "sustained"
        batch = tasks(n, run_id)
        await expect_run(redis, names, run_id, n)
        cpu0 = {name: cpu_seconds(p.pid) for name, p in fleet.procs.items()}
        started = time.monotonic()
        await post_all(redis, names, batch, names.intake)
        ended = await wait_run(redis, names, run_id, n, fleet)
        cpu1 = {name: cpu_seconds(p.pid) for name, p in fleet.procs.items()}
        mem = await namespace_bytes(redis, names)
        rate = n / (ended - started)
        cpu_ms = {
            "dispatcher": (cpu1["dispatcher"] - cpu0["dispatcher"]) * 1000 / n,
            "collector": (cpu1["collector"] - cpu0["collector"]) * 1000 / n,
            "workers": sum(cpu1[k] - cpu0[k] for k in cpu1 if k.startswith("worker")) * 1000 / n,
        }
        statuses = await run_task_statuses(redis, names, run_id)
        assert len(statuses) == n and set(statuses.values()) == {"ok"}, "every task, once, ok"
        return {
            "workers": workers,
            "tasks": n,
            "tasks_per_s": rate,
            "cpu_ms_per_task": cpu_ms,
            "redis_mb_per_100k": mem / n * 100_000 / 1e6,
            "names": names,
            "fleet": fleet,
            "redis": redis,
        }
    except BaseException:
        await fleet.stop()
        await clear_namespace(redis, names)
        await redis.aclose()
        raise


async def open_loop(
    redis: Redis, names: Names, fleet: Fleet, rate: float, seconds: float, label: str
) -> dict[str, float]:
    """Post at `rate` tasks/s for `seconds`; added latency per task, in ms."""
    n = max(1, int(rate * seconds))
    batch = tasks(n, label)
    await expect_run(redis, names, label, n)
    start = time.monotonic()
    posted_at: dict[str, float] = {}
    for i, task in enumerate(batch):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await redis.xadd(names.intake, encode_data(task))  # type: ignore[arg-type]
        posted_at[task.task_id] = time.time()
    await wait_run(redis, names, label, n, fleet)
    added = []
    for task_id, t0 in posted_at.items():
        view = await task_view(redis, names, task_id)
        assert view is not None
        s = view.summary
        added.append((s.updated_at - t0) * 1000 - s.latency_ms)
    q = statistics.quantiles(added, n=100)
    return {"rate": rate, "tasks": n, "p50_ms": q[49], "p95_ms": q[94], "p99_ms": q[98]}


async def worker_alone(url: str, sim_url: str, logs: Path, n: int) -> float:
    names = Names(f"bench-swarm-{uuid.uuid4().hex[:8]}")
    redis = connect(url, BusSettings())
    fleet = await start_swarm(url, names, sim_url, logs, 1, pipeline=False)
    try:
        started = time.monotonic()
        await post_all(redis, names, tasks(n, "alone"), names.vendor_tasks(VENDOR))
        while await redis.xlen(names.findings) < n:
            fleet.check()
            await asyncio.sleep(POLL_S)
        return n / (time.monotonic() - started)
    finally:
        await fleet.stop()
        await clear_namespace(redis, names)
        await redis.aclose()


async def namespace_bytes(redis: Redis, names: Names) -> int:
    """Bytes held by the swarm's keys (MEMORY USAGE of each, all stream nodes counted), so
    other tenants of the same Redis do not skew the figure."""
    total = 0
    async for key in redis.scan_iter(match=f"{names.namespace}:*", count=1000):
        total += int(await redis.memory_usage(key, samples=0) or 0)
    return total


async def main_async(args: argparse.Namespace, url: str, sim_url: str) -> dict[str, Any]:
    logs = Path(tempfile.mkdtemp(prefix="swarm-bench-"))
    scaling: list[dict[str, Any]] = []
    latency: list[dict[str, float]] = []
    alone = await worker_alone(url, sim_url, logs, args.tasks)
    for workers in (1, 2, 4):
        row = await sustained(url, sim_url, logs, args.tasks, workers)
        fleet, names, redis = row.pop("fleet"), row.pop("names"), row.pop("redis")
        try:
            if workers == 1:
                for share in (0.5, 0.9):
                    latency.append(
                        await open_loop(
                            redis, names, fleet, share * row["tasks_per_s"], args.seconds,
                            f"open-{int(share * 100)}",
                        )
                    )  # fmt: skip
        finally:
            await fleet.stop()
            await clear_namespace(redis, names)
            await redis.aclose()
        scaling.append(row)
    return {"worker_alone_per_s": alone, "scaling": scaling, "latency": latency}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--latency", type=float, default=0.05, help="simulated vendor latency, s")
    parser.add_argument("--seconds", type=float, default=8.0, help="open-loop run length, s")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    args = parser.parse_args()
    sim, sim_url = spawn_simulator(args=["--latency", str(args.latency)])
    try:
        with find_redis(args.redis_url) as url:
            res = asyncio.run(main_async(args, url, sim_url))
    finally:
        sim.terminate()
        sim.wait(10)
    one = res["scaling"][0]
    print(
        f"whole-swarm benchmark: {args.tasks:,} tasks per run, vendor {VENDOR} simulated at "
        f"{args.latency:g} s, Python {platform.python_version()}, {os.cpu_count()} cores"
    )
    print(f"{'measure':<58}{'value':>14}")
    alone_label = "worker alone (tasks straight on its queue), tasks/s"
    print(f"{alone_label:<58}{res['worker_alone_per_s']:>14,.0f}")
    for row in res["scaling"]:
        label = f"whole swarm, {row['workers']} worker process(es), tasks/s"
        print(f"{label:<58}{row['tasks_per_s']:>14,.0f}")
    for lat in res["latency"]:
        label = f"added latency at {lat['rate']:,.0f}/s (p50 / p95 / p99), ms"
        print(f"{label:<58}{lat['p50_ms']:>6.1f} /{lat['p95_ms']:>6.1f} /{lat['p99_ms']:>6.1f}")
    for service, ms in one["cpu_ms_per_task"].items():
        print(f"{'CPU per task, ' + service + ', ms':<58}{ms:>14.2f}")
    print(f"{'Redis memory per 100,000 tasks, MB':<58}{one['redis_mb_per_100k']:>14.1f}")
    emit(
        {
            "bench": "swarm",
            "tasks": args.tasks,
            "vendor_latency_s": args.latency,
            "worker_alone_per_s": round(res["worker_alone_per_s"], 1),
            "swarm_per_s": {str(r["workers"]): round(r["tasks_per_s"], 1) for r in res["scaling"]},
            "added_latency_ms": [
                {k: round(v, 2) for k, v in lat.items()} for lat in res["latency"]
            ],
            "cpu_ms_per_task": {k: round(v, 3) for k, v in one["cpu_ms_per_task"].items()},
            "redis_mb_per_100k_tasks": round(one["redis_mb_per_100k"], 1),
        },
        redis_url=args.redis_url,
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
