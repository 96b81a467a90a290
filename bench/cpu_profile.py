"""Where each service's CPU goes: the whole swarm (dispatcher, one DeepSeek worker, collector,
each its own process under cProfile: bench/profiled.py) runs N tasks against the simulator
(its own process, fixed latency), then each service's profile is summed up two ways:

* by package: the project's own code (services/, shared/), redis-py and hiredis, pydantic,
  the OpenAI SDK with httpx, asyncio, opentelemetry, structlog and logging, prometheus, the
  rest of the standard library and everything else; each function's own time (tottime)
  goes to the package of its file;
* the functions with the most own time, with their share of the service's total.

Profiling covers the run only (SIGUSR1 before the first post, SIGUSR2 after the last
finding), and the time a service waits in the event loop's epoll is shown apart, not
counted. cProfile slows what it measures (every Python call pays for it), so the figures are shares
of each service's profiled time and microseconds per task under the profiler, a map for
the next change rather than a speed. Every task must finish, once, ok.
Prints a table, then one JSON line; the full breakdown is saved in the results file.

    python bench/cpu_profile.py [--tasks 5000] [--latency 0.05] [--top 12] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchlib import emit
from redis.asyncio import Redis
from swarm import VENDOR, post_all, tasks

from services.cli.demo import clear_namespace
from services.cli.redis_finder import find_redis
from services.simulator.process import spawn_simulator
from shared.bus.findings import expect_run, run_progress, run_task_statuses
from shared.bus.membership import live_members
from shared.protocol import Names
from shared.runtime.redis import connect
from shared.runtime.settings import BusSettings

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SERVICES = {
    "dispatcher": ["run", "dispatcher"],
    "worker": ["run", "worker", "--vendor", VENDOR],
    "collector": ["run", "collector"],
}
IDLE = {"<method 'poll' of 'select.epoll' objects>"}
# A function's package, by the first of these its file path contains.
PACKAGES = (
    ("swarmbus", (f"{ROOT}/services/", f"{ROOT}/shared/")),
    ("redis-py", ("/redis/", "hiredis")),
    ("pydantic", ("/pydantic/", "/pydantic_core/", "pydantic_core")),
    ("openai + httpx", ("/openai/", "/httpx/", "/httpcore/", "/h11/", "/anyio/", "/httpx2/")),
    ("asyncio", ("/asyncio/", "_asyncio", "selectors.py")),
    ("opentelemetry", ("/opentelemetry/",)),
    ("logging", ("/structlog/", "/logging/", "orjson")),
    ("prometheus", ("/prometheus_client/",)),
    ("socket I/O", ("_socket", "_ssl")),
)


def package(filename: str, function: str) -> str:
    where = f"{filename} {function}"
    for name, marks in PACKAGES:
        if any(mark in where for mark in marks):
            return name
    if filename == "~" or "/lib/python3" in filename:
        return "stdlib and builtins"
    return "other"


def label(filename: str, line: int, function: str) -> str:
    """file:line(function), the file relative to the repository or site-packages."""
    if filename == "~":
        return function
    for prefix in (f"{ROOT}/", "site-packages/", "lib/python3.11/"):
        if prefix in filename:
            filename = filename.split(prefix, 1)[1]
            break
    return f"{filename}:{line}({function})"


def breakdown(path: Path, tasks: int, top: int) -> dict[str, Any]:
    stats: Any = pstats.Stats(str(path))
    rows = [
        (file, line, func, tottime)
        for (file, line, func), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items()
    ]
    # Time inside the loop's epoll is waiting for I/O, not work: shown apart, not counted.
    waiting = sum(r[3] for r in rows if r[2] in IDLE)
    rows = [r for r in rows if r[2] not in IDLE]
    total = sum(r[3] for r in rows) or 1e-9
    packages: dict[str, float] = {}
    for file, _line, func, tottime in rows:
        name = package(file, func)
        packages[name] = packages.get(name, 0.0) + tottime
    heaviest = sorted(rows, key=lambda r: r[3], reverse=True)[:top]
    return {
        "profiled_us_per_task": total / tasks * 1e6,
        "waiting_us_per_task": waiting / tasks * 1e6,
        "packages": {
            k: {"share": v / total, "us_per_task": v / tasks * 1e6}
            for k, v in sorted(packages.items(), key=lambda kv: kv[1], reverse=True)
        },
        "top": [
            {
                "function": label(file, line, func),
                "share": tottime / total,
                "us_per_task": tottime / tasks * 1e6,
            }
            for file, line, func, tottime in heaviest
        ],
    }


def size_of(path: Path) -> int:
    return path.stat().st_size if path.exists() else -1


async def wait_for_file(path: Path, timeout_s: float = 30) -> None:
    """Until `path` exists and its size holds still for 0.2 s (the stats are written)."""
    deadline, last = time.monotonic() + timeout_s, -1
    while time.monotonic() < deadline:
        size = size_of(path)
        if size > 0 and size == last:
            return
        last = size
        await asyncio.sleep(0.2)
    raise RuntimeError(f"no profile at {path}")


async def start(name: str, argv: list[str], env: dict[str, str], out: Path, logs: Path) -> Any:
    with (logs / f"{name}.log").open("ab") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable, str(HERE / "profiled.py"), str(out), *argv,
            env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


async def run(url: str, sim_url: str, n: int, top: int) -> dict[str, Any]:
    names = Names(f"bench-profile-{uuid.uuid4().hex[:8]}")
    tmp = Path(tempfile.mkdtemp(prefix="swarm-profile-"))
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": url,
        "SWARM_NAMESPACE": names.namespace,
        "METRICS_PORT": "0",
        "LOG_LEVEL": "warning",
        "SWARM_SIMULATOR_URL": sim_url,
        "SWARM_COLLECTOR_EXPORT_PATH": str(tmp / "findings.jsonl"),
        "SWARM_MAX_IN_FLIGHT": "500",
    }
    redis: Redis = connect(url, BusSettings())
    procs = {
        name: await start(name, argv, env, tmp / f"{name}.prof", tmp)
        for name, argv in SERVICES.items()
    }
    try:
        deadline = time.monotonic() + 60
        while len(await live_members(redis, names)) < len(SERVICES):
            if time.monotonic() > deadline or any(p.returncode is not None for p in procs.values()):
                raise RuntimeError(f"the swarm did not come up: logs in {tmp}")
            await asyncio.sleep(0.1)
        run_id = "profile"
        await expect_run(redis, names, run_id, n)
        for p in procs.values():
            p.send_signal(signal.SIGUSR1)  # profiling on: the run only
        started = time.monotonic()
        await post_all(redis, names, tasks(n, run_id), names.intake)
        while (await run_progress(redis, names, run_id)).finished < n:
            if any(p.returncode is not None for p in procs.values()):
                raise RuntimeError(f"a service stopped: logs in {tmp}")
            await asyncio.sleep(0.05)
        seconds = time.monotonic() - started
        for p in procs.values():
            p.send_signal(signal.SIGUSR2)  # profiling off, stats written
        for name in SERVICES:
            await wait_for_file(tmp / f"{name}.prof")
        statuses = await run_task_statuses(redis, names, run_id)
        assert len(statuses) == n and set(statuses.values()) == {"ok"}, "every task, once, ok"
    finally:
        for p in procs.values():
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            await asyncio.wait_for(p.wait(), 60)
        await clear_namespace(redis, names)
        await redis.aclose()
    services = {name: breakdown(tmp / f"{name}.prof", n, top) for name in SERVICES}
    return {"seconds": seconds, "services": services}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--latency", type=float, default=0.05, help="simulated vendor latency, s")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    args = parser.parse_args()
    sim, sim_url = spawn_simulator(args=["--latency", str(args.latency)])
    try:
        with find_redis(args.redis_url) as url:
            res = asyncio.run(run(url, sim_url, args.tasks, args.top))
    finally:
        sim.terminate()
        sim.wait(10)
    print(
        f"profile: {args.tasks:,} tasks through the whole swarm under cProfile in "
        f"{res['seconds']:.1f} s (vendor {VENDOR} simulated at {args.latency:g} s)"
    )
    for name, svc in res["services"].items():
        print(f"\n{name}: {svc['profiled_us_per_task']:,.0f} µs per task under the profiler")
        for pkg, v in svc["packages"].items():
            print(f"  {pkg:<24}{v['share']:>7.1%}{v['us_per_task']:>10,.0f} µs")
        for row in svc["top"]:
            print(f"  {row['share']:>6.1%}  {row['function']}")
    emit(
        {
            "bench": "cpu_profile",
            "tasks": args.tasks,
            "latency_s": args.latency,
            "profiled_us_per_task": {
                k: round(v["profiled_us_per_task"]) for k, v in res["services"].items()
            },
            "own_code_share": {
                k: round(v["packages"].get("swarmbus", {}).get("share", 0.0), 3)
                for k, v in res["services"].items()
            },
        },
        details=res,
    )


if __name__ == "__main__":
    main()
