"""Waiting time per urgency level behind a backlog (issue 20, item 2), against the same
tasks with urgency ignored (one FIFO queue: what a poster got before), in the same run.

The whole swarm on a private redis-server: the simulator answering every call in
`--latency` s, a dispatcher, a collector and one deepseek worker with `--capacity` slots.
Each variant posts `--backlog` normal tasks, then, every 0.5 s, `--probes` tasks of each
level in turn (critical, high, normal, low); a probe's wait is from its XADD to its finding.
In the FIFO variant the probes are posted as normal: their names keep their level.

    python bench/urgency.py [--backlog 300] [--probes 4] [--capacity 8] [--latency 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import ROOT, emit

sys.path.insert(0, str(ROOT))

from services.cli.redis_finder import private_redis_server
from shared.bus.findings import task_view
from shared.protocol import Names, Task, encode
from shared.protocol.names import URGENCY_ORDER
from shared.runtime.redis import connect
from shared.runtime.settings import BusSettings
from tests.chaos.checks import sim_config, simple_tier_policy
from tests.swarm_procs import SwarmProcs


async def variant(
    args: argparse.Namespace, *, honoured: bool, logs: Path
) -> dict[str, list[float]]:
    names = Names("bench")
    with private_redis_server() as (url, _):
        redis = connect(url, BusSettings())
        try:
            async with SwarmProcs(url, names, logs) as swarm:
                await swarm.simulator(sim_config(args.latency))
                policy = simple_tier_policy(logs / "policy.toml", "deepseek-flash")
                await swarm.start("dispatcher", "dispatcher", env=policy)
                await swarm.start("collector", "collector")
                worker_env = {"SWARM_MAX_IN_FLIGHT": str(args.capacity)}
                await swarm.start("worker", "worker", "--vendor", "deepseek", env=worker_env)
                await swarm.wait_live(redis, names, {"worker-deepseek": 1, "collector": 1})
                async with redis.pipeline(transaction=False) as pipe:
                    for i in range(args.backlog):
                        t = Task(task_id=f"b{i}", prompt=f"Note {i}.", complexity="simple")
                        pipe.xadd(names.intake, encode(t))  # type: ignore[arg-type]
                    await pipe.execute()
                posted: dict[str, tuple[str, float]] = {}
                for round_ in range(args.probes):
                    for level in URGENCY_ORDER:
                        task_id = f"{level}-{round_}"
                        task = Task(
                            task_id=task_id,
                            prompt=f"Probe {task_id}.",
                            complexity="simple",
                            urgency=level if honoured else "normal",
                        )
                        await redis.xadd(names.intake, encode(task))  # type: ignore[arg-type]
                        posted[task_id] = (level, time.monotonic())
                        await asyncio.sleep(0.5 / len(URGENCY_ORDER))
                waits: dict[str, list[float]] = {u: [] for u in URGENCY_ORDER}
                deadline = time.monotonic() + args.backlog * args.latency / args.capacity * 3 + 60
                while posted and time.monotonic() < deadline:
                    for task_id, (level, at) in list(posted.items()):
                        if await task_view(redis, names, task_id) is not None:
                            waits[level].append(time.monotonic() - at)
                            del posted[task_id]
                    await asyncio.sleep(0.05)
                if posted:
                    raise SystemExit(f"probes never finished: {sorted(posted)}")
                return waits
        finally:
            await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=300)
    parser.add_argument("--probes", type=int, default=4, help="probes per level")
    parser.add_argument("--capacity", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fifo = asyncio.run(variant(args, honoured=False, logs=Path(tmp, "fifo")))
        urgent = asyncio.run(variant(args, honoured=True, logs=Path(tmp, "urgency")))
    drain_s = args.backlog * args.latency / args.capacity
    print(f"backlog {args.backlog} normal tasks, 1 worker x {args.capacity} slots, "
          f"{args.latency} s per call: the backlog alone takes ~{drain_s:.0f} s")  # fmt: skip
    print(f"{'level':<10}{'FIFO median s':>15}{'FIFO max s':>12}{'urgency median s':>18}"
          f"{'urgency max s':>15}")  # fmt: skip
    result: dict[str, Any] = {"bench": "urgency", "backlog": args.backlog,
                              "capacity": args.capacity, "latency_s": args.latency}  # fmt: skip
    for level in URGENCY_ORDER:
        f_med, f_max = statistics.median(fifo[level]), max(fifo[level])
        u_med, u_max = statistics.median(urgent[level]), max(urgent[level])
        print(f"{level:<10}{f_med:>15.2f}{f_max:>12.2f}{u_med:>18.2f}{u_max:>15.2f}")
        result[f"fifo_{level}_median_s"] = round(f_med, 2)
        result[f"urgency_{level}_median_s"] = round(u_med, 2)
        result[f"urgency_{level}_max_s"] = round(u_max, 2)
    emit(result, details={"fifo": fifo, "urgency": urgent, "probes_per_level": args.probes})


if __name__ == "__main__":
    main()
