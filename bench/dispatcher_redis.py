"""Redis CPU per routed task, and routing throughput, of the dispatcher with and without
300,000 keys of another namespace on the same Redis: its fleet view refreshed
single-flight, cooldowns read from their index, task-id claims batched (now), against
the baseline of issue 16 (every handler that finds the view stale refreshes it, each
refresh SCANs the whole keyspace for cooldown keys, and each task's claim is a script in
its own round trip), in the same run.

A private redis-server (its own process: INFO cpu counts only this benchmark's work). Each
run: N flat-field tasks pre-filled on a fresh namespace's intake, a live worker registered
for every vendor, then the dispatcher in-process (default settings: 256 deliveries at
once, fleet refreshed every 1 s) until its intake group has nothing pending and no lag.
Measured over that window: routed tasks/s, Redis CPU (`used_cpu_sys + used_cpu_user`
deltas) per task, the commands Redis served (INFO commandstats deltas: SCANs, EVALSHAs,
all commands per task, and calls and µs per task of each command) and the requests it
read (INFO stats `total_reads_processed`: round trips, a pipeline being one or a few).

The baseline is the old code kept callable here: `ScanCooldowns.cooling` is the SCAN
listing shared/bus/cooldown.py had, `HerdFleetView.get` the refresh without single-flight
services/dispatcher/fleet.py had, `ScriptClaims` the task-id claim it had (a script per
task in its own round trip, where the claims are now batched plain commands) and
`TtlIntake` its record write (HSET and PEXPIRE: the claim now sets the TTL); all are
swapped into services.dispatcher.service for the baseline runs only. The baseline gets
fewer tasks (it is slow with the foreign keys: 3,000 took 237 s in the issue's probe);
per-task figures compare.

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
from dataclasses import asdict, dataclass, replace
from typing import Any
from unittest import mock

from benchlib import emit
from dispatcher import cleanup, drain_seconds, fill, make_tasks
from redis import Redis as SyncRedis
from redis.asyncio import Redis

import services.dispatcher.service as dispatcher_service
from services.cli.redis_finder import private_redis_server
from services.dispatcher.fleet import FleetView
from services.dispatcher.router import Fleet
from services.dispatcher.service import Intake
from shared.bus import Delivery, Effect, SetFields
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


class ScriptClaims:
    """The task-id claim as a script per task, each in its own round trip (before the
    claims were batched plain commands)."""

    _LUA = """
    local owner = redis.call('HGET', KEYS[1], ARGV[1])
    if not owner then
      redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
      redis.call('PEXPIRE', KEYS[1], ARGV[3])
      return 1
    end
    return owner == ARGV[2] and 1 or 0
    """

    def __init__(self, redis: Redis, ttl_s: float) -> None:
        self._script = redis.register_script(self._LUA)
        self._ttl_ms = int(ttl_s * 1000)

    async def claim(self, key: str, field: str, entry_id: str) -> bool:
        won = await self._script(keys=[key], args=[field, entry_id, self._ttl_ms])
        return bool(won)

    async def close(self) -> None:
        return None


class TtlIntake(Intake):
    """The record written with its TTL (HSET and PEXPIRE), as before the claim set it."""

    async def handle(self, delivery: Delivery) -> list[Effect]:
        ttl = self.settings.record_ttl_s
        return [
            replace(e, ttl_s=ttl) if isinstance(e, SetFields) and not e.ttl_s else e
            for e in await super().handle(delivery)
        ]


@contextmanager
def baseline() -> Iterator[None]:
    with (
        mock.patch.object(dispatcher_service, "FleetView", HerdFleetView),
        mock.patch.object(dispatcher_service, "Cooldowns", ScanCooldowns),
        mock.patch.object(dispatcher_service, "TaskClaims", ScriptClaims),
        mock.patch.object(dispatcher_service, "Intake", TtlIntake),
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
    commands_per_task: float
    reads_per_task: float  # requests Redis read: round trips (a pipeline is one or a few)
    dbsize: int
    # command -> (calls, µs) Redis served during the drain (INFO commandstats deltas)
    commands: dict[str, tuple[int, int]]


def redis_cpu_s(redis: SyncRedis) -> float:
    info: Any = redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def command_stats(redis: SyncRedis) -> dict[str, tuple[int, int]]:
    """command -> (calls, µs) since the server started (INFO commandstats)."""
    info: Any = redis.info("commandstats")
    return {k.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for k, v in info.items()}


def reads(redis: SyncRedis) -> int:
    info: Any = redis.info("stats")
    return int(info["total_reads_processed"])


def delta(
    after: dict[str, tuple[int, int]], before: dict[str, tuple[int, int]]
) -> dict[str, tuple[int, int]]:
    out = {}
    for command, (n, us) in after.items():
        n0, us0 = before.get(command, (0, 0))
        if n > n0:
            out[command] = (n - n0, us - us0)
    return dict(sorted(out.items(), key=lambda kv: -kv[1][1]))


async def dispatch(url: str, names: Names) -> float:
    """Seconds from the dispatcher's start until its intake group is drained."""
    return await drain_seconds(url, names, heartbeat_ttl_s=3600, timeout_s=TIMEOUT_S)


def run_once(url: str, redis: SyncRedis, mode: str, n: int, foreign_keys: int) -> Run:
    names = Names(f"bench-dr-{uuid.uuid4().hex[:8]}")
    os.environ["SWARM_NAMESPACE"] = names.namespace
    fill(redis, names.intake, make_tasks(n))
    cpu0, stats0, reads0 = redis_cpu_s(redis), command_stats(redis), reads(redis)
    if mode == "baseline":
        with baseline():
            seconds = asyncio.run(dispatch(url, names))
    else:
        seconds = asyncio.run(dispatch(url, names))
    cpu = redis_cpu_s(redis) - cpu0
    reads_n = reads(redis) - reads0
    # These INFO calls count too (a few, against thousands of tasks).
    commands = delta(command_stats(redis), stats0)
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
        scans=commands.get("scan", (0, 0))[0],
        evalshas=commands.get("evalsha", (0, 0))[0],
        commands_per_task=round(sum(c for c, _us in commands.values()) / n, 2),
        reads_per_task=round(reads_n / n, 3),
        dbsize=dbsize,
        commands=commands,
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
                        print(json.dumps({**asdict(run), "commands": "..."}), flush=True)
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
    print(head + f"{'SCANs':>10}{'EVALSHAs':>10}{'cmds/task':>11}{'reads/task':>12}")
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
                f"{median(runs, mode, foreign, 'commands_per_task'):>11,.2f}"
                f"{median(runs, mode, foreign, 'reads_per_task'):>12,.3f}"
            )
    print_commands(runs)
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
        "commands_per_task": median(runs, "now", 0, "commands_per_task"),
        "reads_per_task": median(runs, "now", 0, "reads_per_task"),
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
            baseline_commands_per_task=median(runs, "baseline", 0, "commands_per_task"),
            baseline_reads_per_task=median(runs, "baseline", 0, "reads_per_task"),
        )
    emit(result, details={"runs": [asdict(r) for r in runs]}, redis_url=url)


def print_commands(runs: list[Run], top: int = 8) -> None:
    """Per run, the commands that cost Redis most: calls and µs per routed task."""
    for r in runs:
        print(f"\n{r.mode}, {r.foreign_keys:,} foreign keys: commands per routed task")
        print(f"{'command':<20}{'calls/task':>12}{'µs/task':>10}{'µs/call':>10}")
        for command, (n, us) in list(r.commands.items())[:top]:
            print(f"{command:<20}{n / r.tasks:>12.3f}{us / r.tasks:>10.2f}{us / n:>10.2f}")


if __name__ == "__main__":
    main()
