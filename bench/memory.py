"""Soak: does Redis memory stay flat under steady load once retention is reached?

The whole swarm (intake -> dispatcher -> one worker -> collector, each its own process, the
SDK to the simulator) on a private redis-server, tasks posted open-loop at a fixed rate, in
runs of one run id per 10 s (tasks without a run id are grouped under one per task type,
which grows with every task). `INFO memory used_memory` is sampled every few seconds.

Two phases in the same run, each on a fresh private Redis:

* baseline: the default retention (handled stream entries 1 h, per-task keys 7 days), so
  memory grows with every task for the whole phase;
* bounded: short retention (`SWARM_RETENTION_S`, `SWARM_COLLECTOR_RETENTION_S`, the
  done-marker and task-record TTLs), so memory should level off once the first tasks'
  keys and entries have expired or been trimmed.

Flatness is the growth over the last half of a phase, in MB per minute and in bytes per
task posted meanwhile; the bounded phase's should be near zero, the baseline's not.

    python bench/memory.py [--rate 100] [--seconds 150] [--retention 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchlib import emit
from redis.asyncio import Redis
from swarm import VENDOR, start_swarm, tasks

from services.cli.redis_finder import private_redis_server
from services.simulator.process import spawn_simulator
from shared.protocol import Names, encode_data
from shared.runtime.redis import connect
from shared.runtime.settings import BusSettings

SAMPLE_S = 5.0
RUN_S = 10  # one run id per this many seconds of posting


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """The swarm's processes inherit os.environ (bench/swarm.py's start_swarm)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def short_retention(seconds: float) -> dict[str, str]:
    s = str(seconds)
    return {
        "SWARM_RETENTION_S": s,  # handled stream entries
        "SWARM_TRIM_INTERVAL_S": str(max(1.0, seconds / 4)),
        "SWARM_COLLECTOR_RETENTION_S": s,
        "SWARM_WORKER_DONE_TTL_S": s,
        "SWARM_DISPATCHER_RECORD_TTL_S": s,
    }


async def used_memory(redis: Redis) -> int:
    info: Any = await redis.info("memory")
    return int(info["used_memory"])


async def phase(
    url: str, sim_url: str, logs: Path, label: str, rate: float, seconds: float
) -> dict[str, Any]:
    names = Names(f"soak-{uuid.uuid4().hex[:8]}")
    redis = connect(url, BusSettings())
    fleet = await start_swarm(url, names, sim_url, logs, 1)
    samples: list[dict[str, float]] = []
    posted = 0
    try:
        base = await used_memory(redis)
        start = time.monotonic()
        next_sample = start
        while (now := time.monotonic()) < start + seconds:
            due = int((now - start) * rate)
            if due > posted:
                run_id = f"{label}-{int((now - start) // RUN_S)}"
                batch = tasks(due - posted, run_id)
                async with redis.pipeline(transaction=False) as pipe:
                    for i, t in enumerate(batch):
                        unique = t.model_copy(update={"task_id": f"{run_id}-{posted + i:07d}"})
                        pipe.xadd(names.intake, encode_data(unique))  # type: ignore[arg-type]
                    await pipe.execute()
                posted = due
            if now >= next_sample:
                fleet.check()
                samples.append(await sample(redis, names, now - start, posted))
                next_sample += SAMPLE_S
            await asyncio.sleep(0.02)
        # Group counters, not run records or stream lengths: both expire or get trimmed.
        finished = await _group_field(redis, names.findings, "collector", "entries-read")
        backlog = await _group_field(redis, names.intake, "dispatcher", "lag")
        samples.append(await sample(redis, names, time.monotonic() - start, posted))
    finally:
        await fleet.stop()
        await redis.aclose()
    half = [s for s in samples if s["t"] >= seconds / 2]
    first, last = half[0], half[-1]
    grown = last["used"] - first["used"]
    minutes = (last["t"] - first["t"]) / 60
    return {
        "phase": label,
        "posted": posted,
        "findings_collected": finished,
        "intake_not_yet_routed": backlog,
        "base_mb": base / 1e6,
        "end_mb": last["used"] / 1e6,
        "peak_mb": max(s["used"] for s in samples) / 1e6,
        "max_backlog": max(s["backlog"] for s in samples),
        "last_half_mb_per_min": grown / 1e6 / minutes if minutes else 0.0,
        "last_half_bytes_per_task": grown / max(1, last["posted"] - first["posted"]),
        "samples": samples,
    }


async def sample(redis: Redis, names: Names, t: float, posted: int) -> dict[str, float]:
    """used_memory, and the tasks not yet through (a backlog holds memory no retention
    frees: the swarm must keep up for the curve to mean anything)."""
    backlog = await _group_field(redis, names.intake, "dispatcher", "lag")
    backlog += await _group_field(redis, names.vendor_tasks(VENDOR), f"worker-{VENDOR}", "lag")
    return {"t": t, "posted": posted, "used": await used_memory(redis), "backlog": backlog}


async def _group_field(redis: Redis, stream: str, group: str, name: str) -> int:
    for g in await redis.xinfo_groups(stream):
        if g["name"].decode() == group:
            return int(g[name] or 0) + (int(g["pending"]) if name == "lag" else 0)
    return 0


async def run_phase(
    label: str, env: dict[str, str], sim_url: str, logs: Path, args: argparse.Namespace
) -> dict[str, Any]:
    with environment(env), private_redis_server() as (url, _proc):
        return await phase(url, sim_url, logs, label, args.rate, args.seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=100.0, help="tasks posted per second")
    parser.add_argument("--seconds", type=float, default=150.0, help="length of each phase")
    parser.add_argument("--retention", type=float, default=20.0, help="bounded phase, s")
    parser.add_argument("--latency", type=float, default=0.02, help="simulated vendor, s")
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="swarm-soak-"))
    sim, sim_url = spawn_simulator(args=["--latency", str(args.latency)])
    try:
        baseline = asyncio.run(run_phase("baseline", {}, sim_url, logs, args))
        bounded = asyncio.run(
            run_phase("bounded", short_retention(args.retention), sim_url, logs, args)
        )
    finally:
        sim.terminate()
        sim.wait(10)
    print(
        f"memory soak: {args.rate:g} tasks/s for {args.seconds:g} s per phase, vendor {VENDOR} "
        f"simulated at {args.latency:g} s, bounded retention {args.retention:g} s, "
        f"Python {platform.python_version()}, {os.cpu_count()} cores; used_memory in MB"
    )
    print(f"{'':>15} {'baseline':>19} {'bounded':>19}")
    print(f"{'t (s)':>6} {'posted':>8} {'MB':>9} {'backlog':>9} {'MB':>9} {'backlog':>9}")
    for a, b in zip(baseline["samples"], bounded["samples"], strict=False):
        print(
            f"{a['t']:>6.0f} {a['posted']:>8,} {a['used'] / 1e6:>9.2f} {a['backlog']:>9,} "
            f"{b['used'] / 1e6:>9.2f} {b['backlog']:>9,}"
        )
    print()
    print(f"{'measure':<44}{'baseline':>12}{'bounded':>12}")
    for key, fmt in (
        ("posted", ",.0f"),
        ("findings_collected", ",.0f"),
        ("intake_not_yet_routed", ",.0f"),
        ("max_backlog", ",.0f"),
        ("end_mb", ".2f"),
        ("last_half_mb_per_min", ".3f"),
        ("last_half_bytes_per_task", ",.0f"),
    ):
        print(f"{key.replace('_', ' '):<44}{baseline[key]:>12{fmt}}{bounded[key]:>12{fmt}}")
    phases = {"baseline": baseline, "bounded": bounded}
    emit(
        {
            "bench": "memory",
            "rate": args.rate,
            "seconds": args.seconds,
            "retention_s": args.retention,
            "baseline_end_mb": round(baseline["end_mb"], 2),
            "bounded_end_mb": round(bounded["end_mb"], 2),
            "baseline_last_half_bytes_per_task": round(baseline["last_half_bytes_per_task"]),
            "bounded_last_half_bytes_per_task": round(bounded["last_half_bytes_per_task"]),
            "baseline_max_backlog": baseline["max_backlog"],
            "bounded_max_backlog": bounded["max_backlog"],
        },
        details=phases,
    )


if __name__ == "__main__":
    main()
