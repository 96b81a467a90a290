"""False deaths under load, before vs after the threaded heartbeat (issue 16, item 2).

The whole swarm (dispatcher, collector, N workers, the simulator), every service its own
process with the shipped bus defaults, on a private redis-server; N tasks posted at once to
the intake. No process is stopped, so every takeover of a worker's entries by a peer
(`consumer.dead`) is a false death, and every vendor call beyond one per task is paid twice.
Meanwhile a probe reads each worker's member key every 0.1 s: a lapse is a moment a live
worker was absent from the fleet; the least TTL left is the heartbeat's margin.

Both variants run in the same run, each from a clean export of its commit (`git archive`):
`before` is the parent of the commit that moved the beats to a thread, `after` that commit
(`--before`/`--after` pick others). `--hogs K` adds K processes spinning on the CPU.

    python bench/liveness.py [--tasks 20000] [--workers 2] [--latency 0.05] [--hogs 0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from benchlib import ROOT, emit
from redis.asyncio import Redis

from services.cli.redis_finder import private_redis_server
from shared.bus.findings import expect_run, run_progress
from shared.bus.membership import live_members
from shared.protocol import Names, Task, encode_data
from shared.runtime.net import free_port
from shared.runtime.redis import connect
from shared.runtime.settings import BusSettings

VENDOR = "deepseek"
_SPIN = "import time\nwhile True: time.monotonic()\n"


def thread_commit() -> str:
    """The commit that moved the beats to a thread (the first to define `_beat_forever`)."""
    argv = ["git", "log", "--reverse", "--format=%H", "-S", "_beat_forever"]
    out = subprocess.run(
        [*argv, "--", "shared/bus/membership.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not out:
        raise SystemExit("no commit defines _beat_forever yet: pass --before and --after")
    return out[0]


def export(ref: str, into: Path) -> Path:
    """A clean tree of `ref` (what the processes of a variant import)."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


class Swarm:
    """The variant's processes, started from its tree, each logging JSON to its own file."""

    def __init__(self, tree: Path, env: dict[str, str], logs: Path) -> None:
        self.tree, self.env, self.logs = tree, env, logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *argv: str) -> None:
        with (self.logs / f"{name}.log").open("ab") as out:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "services.cli.main", "run", *argv],
                cwd=self.tree, env={**self.env, "CONSUMER_NAME": name},
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}); logs in {self.logs}")

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def events(self, event: str) -> list[dict[str, Any]]:
        found = []
        for path in self.logs.glob("*.log"):
            for line in path.read_text(errors="replace").splitlines():
                if f'"{event}"' in line:
                    with contextlib.suppress(ValueError):
                        record = json.loads(line)
                        if record.get("event") == event:
                            found.append(record)
        return found


def spawn_hogs(n: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", _SPIN]) for _ in range(n)]


async def watch_members(redis: Redis, names: Names, ids: list[str], out: dict[str, Any]) -> None:
    """Every 0.1 s, each worker's member key: absent (a lapse) or its TTL left."""
    absent = dict.fromkeys(ids, False)
    while True:
        async with redis.pipeline(transaction=False) as pipe:
            for member_id in ids:
                pipe.pttl(names.member(member_id))
            ttls = await pipe.execute()
        for member_id, ttl in zip(ids, ttls, strict=True):
            if ttl < 0 and not absent[member_id]:
                out["member_lapses"] += 1
            absent[member_id] = ttl < 0
            if ttl >= 0:
                out["min_ttl_left_ms"] = min(out["min_ttl_left_ms"], int(ttl))
        await asyncio.sleep(0.1)


async def one_variant(
    label: str, tree: Path, url: str, args: argparse.Namespace, logs: Path
) -> dict[str, Any]:
    names = Names(f"bench-live-{label}-{uuid.uuid4().hex[:6]}")
    (logs := logs / label).mkdir(parents=True)
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("SWARM_")}
    env = {
        **base,
        "REDIS_URL": url,
        "SWARM_NAMESPACE": names.namespace,
        "METRICS_PORT": "0",
        "LOG_JSON": "1",
        "LOG_LEVEL": "warning",
        "SWARM_SIMULATOR_URL": f"http://127.0.0.1:{port}",
        "SWARM_COLLECTOR_EXPORT_PATH": str(logs / "findings.jsonl"),
    }
    swarm = Swarm(tree, env, logs)
    sim = f"http://127.0.0.1:{port}"
    redis = connect(url, BusSettings())
    workers = [f"worker-{i}" for i in range(args.workers)]
    hogs: list[subprocess.Popen[bytes]] = []
    try:
        swarm.start("simulator", "simulator", "--port", str(port), "--latency", str(args.latency))
        swarm.start("dispatcher", "dispatcher")
        swarm.start("collector", "collector")
        for name in workers:
            swarm.start(name, "worker", "--vendor", VENDOR)
        deadline = time.monotonic() + 60
        while len(await live_members(redis, names)) < len(workers) + 2:
            swarm.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the swarm did not come up; logs in {logs}")
            await asyncio.sleep(0.2)
        hogs = spawn_hogs(args.hogs)
        probe = {"member_lapses": 0, "min_ttl_left_ms": 10**9}
        watcher = asyncio.create_task(watch_members(redis, names, workers, probe))
        run_id = "load"
        batch = [
            Task(task_id=f"{run_id}-{i:06d}", prompt=f"Check invoice {i} against its contract.",
                 vendor=VENDOR, run_id=run_id, max_output_tokens=64)
            for i in range(args.tasks)
        ]  # fmt: skip
        await expect_run(redis, names, run_id, args.tasks)
        started = time.monotonic()
        for i in range(0, len(batch), 500):
            async with redis.pipeline(transaction=False) as pipe:
                for t in batch[i : i + 500]:
                    pipe.xadd(names.intake, encode_data(t))  # type: ignore[arg-type]
                await pipe.execute()
        while (await run_progress(redis, names, run_id)).finished < args.tasks:
            swarm.check()
            if time.monotonic() - started > args.timeout:
                raise RuntimeError(f"{label}: not drained in {args.timeout}s; logs in {logs}")
            await asyncio.sleep(0.2)
        drain_s = time.monotonic() - started
        async with httpx.AsyncClient(timeout=5) as client:
            while True:  # calls still on the wire count too
                stats = (await client.get(f"{sim}/_sim/stats")).json()
                if not stats["in_flight"]:
                    break
                await asyncio.sleep(0.2)
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        swarm.stop()
        await redis.aclose()
    deaths = [e for e in swarm.events("consumer.dead") if e.get("consumer") in workers]
    return {
        "false_deaths": len(deaths),
        "entries_reclaimed": sum(int(e.get("reclaimed", 0)) for e in deaths),
        "duplicate_vendor_calls": int(stats["by_vendor"].get(VENDOR, 0)) - args.tasks,
        "member_lapses": probe["member_lapses"],
        "min_ttl_left_ms": probe["min_ttl_left_ms"],
        "heartbeats_withheld": len(swarm.events("heartbeat.withheld")),
        "drain_s": round(drain_s, 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--latency", type=float, default=0.05, help="simulated vendor call, s")
    parser.add_argument("--hogs", type=int, default=0, help="extra processes spinning the CPU")
    parser.add_argument("--timeout", type=float, default=900.0, help="per variant, s")
    parser.add_argument("--before", help="git ref of the baseline (default: see above)")
    parser.add_argument("--after", help="git ref with the threaded heartbeat")
    args = parser.parse_args()
    after = args.after or thread_commit()
    before = args.before or f"{after}^"
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-liveness-") as tmp:
        for label, ref in (("before", before), ("after", after)):
            tree = export(ref, Path(tmp) / f"tree-{label}")
            with private_redis_server() as (url, _proc):
                results[label] = await one_variant(label, tree, url, args, Path(tmp) / "logs")
    cols = list(results["before"])
    print(f"\n{args.tasks} tasks, {args.workers} workers, {os.cpu_count()} CPUs, {args.hogs} hogs")
    print(f"{'':8}" + "".join(f"{c:>24}" for c in cols))
    for label, row in results.items():
        print(f"{label:8}" + "".join(f"{row[c]!s:>24}" for c in cols))
    emit(
        {
            "bench": "liveness-hogs" if args.hogs else "liveness",
            "tasks": args.tasks,
            "workers": args.workers,
            "hogs": args.hogs,
            "cpus": os.cpu_count(),
            **{f"{label}_{k}": v for label, row in results.items() for k, v in row.items()},
        },
        details={"before": before, "after": after, "latency_s": args.latency},
    )


if __name__ == "__main__":
    asyncio.run(main())
