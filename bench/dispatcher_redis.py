"""Redis CPU per routed task, and routing throughput, of the dispatcher with and without
300,000 keys of another namespace on the same Redis: its fleet view refreshed
single-flight, cooldowns read from their index (now), against the baseline of issue 16
(every handler that finds the view stale refreshes it, and each refresh SCANs the whole
keyspace for cooldown keys), in the same run.

A private redis-server (its own process: INFO cpu counts only this benchmark's work). Each
run: N flat-field tasks pre-filled on a fresh namespace's intake, a live worker registered
for every vendor, then the dispatcher in-process (default settings: 256 deliveries at
once, fleet refreshed every 1 s) until its intake group has nothing pending and no lag.
Measured over that window: routed tasks/s, Redis CPU (`used_cpu_sys + used_cpu_user`
deltas) per task, and the SCAN and EVALSHA calls Redis served (INFO commandstats deltas).

The baseline is the old code kept callable here: `ScanCooldowns.cooling` is the SCAN
listing shared/bus/cooldown.py had, `HerdFleetView.get` the refresh without single-flight
services/dispatcher/fleet.py had; both are swapped into services.dispatcher.service for
the baseline runs only. The baseline gets fewer tasks (it is slow with the foreign keys:
3,000 took 237 s in the issue's probe); per-task figures compare.

    python bench/dispatcher_redis.py [--tasks 20000] [--baseline-tasks 2000]
        [--foreign-keys 300000] [--repeat 1] [--no-baseline]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any
from unittest import mock

from benchlib import emit
from dispatcher import cleanup, drain_seconds, fill, make_tasks
from redis import Redis as SyncRedis

import services.dispatcher.service as dispatcher_service
from services.cli.redis_finder import private_redis_server
from services.dispatcher.fleet import FleetView
from services.dispatcher.router import Fleet
from shared.bus.cooldown import Cooldowns, _seconds
from shared.protocol import KNOWN_VENDORS, Names
from shared.runtime.logging import configure_logging

TIMEOUT_S = 900.0
GOAL_US = 50.0  # issue 16: Redis CPU per task
GOAL_NOISE = 0.10  # ... and within ±10% with 300k foreign keys
FOREIGN = "noisy-neighbour"


# -- the baseline: the code this benchmark measures against ------------------------------------
class ScanCooldowns(Cooldowns):
    """Cooldowns whose listing SCANs the keyspace, as before the index (issue 16)."""

    async def cooling(self) -> dict[tuple[str, str], float]:
        pattern = self._names.cooldown("*", "*")
        keys: set[bytes] = set()  # SCAN may return a key twice
        async for key in self._redis.scan_iter(match=pattern, count=500):
            keys.add(key)
        if not keys:
            return {}
        ordered = sorted(keys)
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in ordered:
                pipe.get(key)
                pipe.pttl(key)
            replies: list[Any] = await pipe.execute()
        out: dict[tuple[str, str], float] = {}
        for key, value, pttl in zip(ordered, replies[::2], replies[1::2], strict=True):
            pair = self._pair(key.decode(errors="replace"), value, pattern)
            left = _seconds(int(pttl))
            if pair is not None and left > 0:
                out[pair] = left
        return out

    def _pair(self, key: str, value: bytes | None, pattern: str) -> tuple[str, str] | None:
        try:
            vendor, model = json.loads(value or b"")
        except (ValueError, TypeError):
            vendor, _, model = key.removeprefix(pattern[: pattern.index("*")]).partition(":")
        if not isinstance(vendor, str) or not isinstance(model, str):
            return None
        return (vendor, model) if self._names.cooldown(vendor, model) == key else None


class HerdFleetView(FleetView):
    """A fleet view without single-flight: every caller that finds it stale refreshes."""

    async def get(self) -> Fleet:
        if time.monotonic() - self._read_at >= self._refresh_s:
            return await self._refresh()
        return self._fleet


@contextmanager
def baseline() -> Iterator[None]:
    with (
        mock.patch.object(dispatcher_service, "FleetView", HerdFleetView),
        mock.patch.object(dispatcher_service, "Cooldowns", ScanCooldowns),
    ):
        yield


# -- one run ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    mode: str  # "now" | "baseline"
    foreign_keys: int
    tasks: int
    seconds: float
    routed_per_s: float
    redis_cpu_s: float
    redis_cpu_us_per_task: float
    scans: int
    evalshas: int
    dbsize: int


def redis_cpu_s(redis: SyncRedis) -> float:
    info: Any = redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def calls(redis: SyncRedis, command: str) -> int:
    info: Any = redis.info("commandstats")
    row = info.get(f"cmdstat_{command}")
    return int(row["calls"]) if row else 0


async def dispatch(url: str, names: Names) -> float:
    """Seconds from the dispatcher's start until its intake group is drained."""
    return await drain_seconds(url, names, heartbeat_ttl_s=3600, timeout_s=TIMEOUT_S)


def run_once(url: str, redis: SyncRedis, mode: str, n: int, foreign_keys: int) -> Run:
    names = Names(f"bench-dr-{uuid.uuid4().hex[:8]}")
    os.environ["SWARM_NAMESPACE"] = names.namespace
    fill(redis, names.intake, make_tasks(n))
    cpu0, scans0, evals0 = redis_cpu_s(redis), calls(redis, "scan"), calls(redis, "evalsha")
    if mode == "baseline":
        with baseline():
            seconds = asyncio.run(dispatch(url, names))
    else:
        seconds = asyncio.run(dispatch(url, names))
    cpu = redis_cpu_s(redis) - cpu0
    scans, evals = calls(redis, "scan") - scans0, calls(redis, "evalsha") - evals0
    routed = sum(int(redis.xlen(names.vendor_tasks(v))) for v in KNOWN_VENDORS)
    dbsize = int(redis.dbsize())
    cleanup(redis, names.namespace)
    assert routed == n, f"{mode}: routed {routed:,} of {n:,}"
    return Run(
        mode=mode,
        foreign_keys=foreign_keys,
        tasks=n,
        seconds=round(seconds, 2),
        routed_per_s=round(n / seconds, 1),
        redis_cpu_s=round(cpu, 3),
        redis_cpu_us_per_task=round(cpu / n * 1e6, 1),
        scans=scans,
        evalshas=evals,
        dbsize=dbsize,
    )


def add_foreign_keys(redis: SyncRedis, count: int) -> None:
    """`count` small string keys of another namespace (another swarm's, say)."""
    for start in range(0, count, 10_000):
        with redis.pipeline(transaction=False) as pipe:
            for i in range(start, min(start + 10_000, count)):
                pipe.set(f"{FOREIGN}:k:{i}", b"x")
            pipe.execute()


# -- the whole benchmark -------------------------------------------------------------------------
def median(runs: list[Run], mode: str, foreign: int, field: str) -> float:
    values = [getattr(r, field) for r in runs if r.mode == mode and r.foreign_keys == foreign]
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--baseline-tasks", type=int, default=2_000)
    parser.add_argument("--foreign-keys", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    os.environ.update(METRICS_PORT="0", LOG_LEVEL="warning")
    configure_logging("warning", json=True)
    modes = ["now"] if args.no_baseline else ["now", "baseline"]
    runs: list[Run] = []
    with private_redis_server() as (url, _proc):
        os.environ["REDIS_URL"] = url
        redis = SyncRedis.from_url(url)
        try:
            for foreign in (0, args.foreign_keys):
                if foreign:
                    add_foreign_keys(redis, foreign)
                for _ in range(args.repeat):
                    for mode in modes:
                        n = args.tasks if mode == "now" else args.baseline_tasks
                        run = run_once(url, redis, mode, n, foreign)
                        print(json.dumps(asdict(run)), flush=True)
                        runs.append(run)
        finally:
            redis.close()
        report(args, modes, runs, url)


def report(args: argparse.Namespace, modes: list[str], runs: list[Run], url: str) -> None:
    """The table, the goal, and the JSON line (saved with the machine, while Redis runs)."""
    with SyncRedis.from_url(url) as client:
        version = str(client.info("server")["redis_version"])
    print(
        f"\ndispatcher, Redis CPU per routed task: Redis {version}, Python "
        f"{platform.python_version()}, {os.cpu_count()} cores, median of {args.repeat}"
    )
    head = f"{'mode':<10}{'foreign keys':>14}{'tasks':>9}{'tasks/s':>10}{'Redis µs/task':>15}"
    print(head + f"{'SCANs':>10}{'EVALSHAs':>10}")
    for foreign in (0, args.foreign_keys):
        for mode in modes:
            n = args.tasks if mode == "now" else args.baseline_tasks
            scans = median(runs, mode, foreign, "scans")
            evals = median(runs, mode, foreign, "evalshas")
            print(
                f"{mode:<10}{foreign:>14,}{n:>9,}"
                f"{median(runs, mode, foreign, 'routed_per_s'):>10,.0f}"
                f"{median(runs, mode, foreign, 'redis_cpu_us_per_task'):>15,.1f}"
                f"{scans:>10,.0f}{evals:>10,.0f}"
            )
    now_clean = median(runs, "now", 0, "redis_cpu_us_per_task")
    now_noisy = median(runs, "now", args.foreign_keys, "redis_cpu_us_per_task")
    effect = now_noisy / now_clean - 1
    print(
        f"goal: Redis CPU per task <= {GOAL_US:.0f} µs: "
        f"{'met' if max(now_clean, now_noisy) <= GOAL_US else 'MISSED'}; "
        f"{args.foreign_keys:,} foreign keys change it by {effect:+.1%} "
        f"({'met' if abs(effect) <= GOAL_NOISE else 'MISSED'}, goal ±{GOAL_NOISE:.0%})"
    )
    result: dict[str, Any] = {
        "bench": "dispatcher_redis",
        "tasks": args.tasks,
        "foreign_keys": args.foreign_keys,
        "redis_us_per_task": round(now_clean, 1),
        "redis_us_per_task_foreign": round(now_noisy, 1),
        "foreign_effect_pct": round(effect * 100, 1),
        "routed_per_s": round(median(runs, "now", 0, "routed_per_s")),
        "routed_per_s_foreign": round(median(runs, "now", args.foreign_keys, "routed_per_s")),
        "scans": int(median(runs, "now", args.foreign_keys, "scans")),
    }
    if not args.no_baseline:
        result.update(
            baseline_tasks=args.baseline_tasks,
            baseline_redis_us_per_task=round(median(runs, "baseline", 0, "redis_cpu_us_per_task")),
            baseline_redis_us_per_task_foreign=round(
                median(runs, "baseline", args.foreign_keys, "redis_cpu_us_per_task")
            ),
            baseline_routed_per_s=round(median(runs, "baseline", 0, "routed_per_s")),
            baseline_routed_per_s_foreign=round(
                median(runs, "baseline", args.foreign_keys, "routed_per_s")
            ),
            baseline_scans_foreign=int(median(runs, "baseline", args.foreign_keys, "scans")),
        )
    emit(result, details={"runs": [asdict(r) for r in runs]}, redis_url=url)


if __name__ == "__main__":
    main()
