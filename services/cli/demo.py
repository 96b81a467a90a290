"""`swarm demo` (the README's `make demo`): the whole swarm on this machine, in one command.

Redis: REDIS_URL, else a Redis on 127.0.0.1:6379, else a private `redis-server`. Vendors:
the simulator, except those whose key is set (ANTHROPIC_API_KEY, GOOGLE_API_KEY,
OPENAI_API_KEY, DEEPSEEK_API_KEY), which are called for real. Every service is its own
process (`swarm run ...`, logs in the log folder): the dispatcher, one worker per vendor
with the original design's 40 workers as in-flight capacity, a Gemini history shard loaded
with five years of operations history, and the collector. The workload (200 research tasks
of mixed complexity, a fifth of them asking the shard, plus one malformed task) is posted
as one run; progress is shown until the collector has every finding; then a table per
vendor, the calls that failed per vendor (with the errors) and the tasks that failed over
elsewhere, the cost against the original design's all-Haiku baseline (with its "3-5x
cheaper" claim) and against one premium model, and where the findings are. The end, Ctrl-C,
SIGTERM or SIGHUP (a closed terminal) stops every service with SIGTERM, so each drains and
leaves the fleet cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from services.cli.demo_report import build_report, format_report
from services.cli.demo_workload import (
    SHARD,
    SHARD_SPECIALTY,
    SIMULATOR_LATENCY_S,
    WORKERS,
    history_corpus,
    research_tasks,
)
from services.cli.errors import CliError
from services.cli.fleet import Fleet, start_simulator, stoppable, until_stopped, wait_live
from services.cli.progress import WaitProgress
from services.megashard.load import load_context
from services.megashard.settings import DEFAULT_SHARD_MODEL
from services.megashard.store import ContextStore
from shared.bus.findings import expect_run, run_progress
from shared.llm.registry import build_client, price_table
from shared.llm.settings import VendorSettings
from shared.protocol import Names, encode_data
from shared.runtime.redis import connect, wait_ready
from shared.runtime.settings import BusSettings

KEY_ENV = {
    "claude": "ANTHROPIC_API_KEY",
    "gemini": "GOOGLE_API_KEY",
    "openai": "OPENAI_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
}


def add_parser(sub: Any) -> None:
    demo = sub.add_parser(
        "demo",
        help="the whole swarm on this machine: dispatcher, workers, shard, collector",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--tasks", type=int, default=200, help="research tasks (default 200)")
    demo.add_argument(
        "--namespace",
        default="swarm-demo",
        help="key namespace; its keys are deleted first (default: swarm-demo)",
    )
    demo.add_argument("--logs", type=Path, default=Path(".swarm-demo"), help="logs and exports")
    demo.add_argument("--timeout", type=float, default=300.0, help="give up after, s (300)")
    demo.add_argument("--json", action="store_true", help="end with the summary as one JSON line")


def run(args: argparse.Namespace) -> int:
    from services.cli.redis_finder import find_redis  # noqa: PLC0415
    from shared.runtime.logging import configure_logging  # noqa: PLC0415

    if args.tasks < 1:
        raise CliError("--tasks must be at least 1")
    configure_logging("error", json=False)

    def body() -> int:
        with find_redis(os.environ.get("REDIS_URL")) as url:
            return asyncio.run(until_stopped(run_demo(url, args)))

    try:
        return stoppable(body)
    except RuntimeError as exc:
        raise CliError(str(exc)) from exc


async def run_demo(url: str, args: argparse.Namespace) -> int:
    names = Names(args.namespace)
    args.logs.mkdir(parents=True, exist_ok=True)
    redis = connect(url, BusSettings())
    try:
        await wait_ready(redis, url, 10)
        await clear_namespace(redis, names)
        async with _fleet(url, names, args.logs) as (fleet, vendors):
            say(f"loading the {SHARD} shard (five years of operations history) ...")
            manifest = await _load_shard(redis, names, vendors)
            say(
                f"  {len(manifest.documents)} documents, {manifest.tokens:,} tokens "
                f"({manifest.token_method})"
            )
            await _wait_ready(redis, names, fleet)
            run_id = f"demo-{int(time.time())}"
            tasks = research_tasks(args.tasks, run_id)
            await expect_run(redis, names, run_id, len(tasks))
            async with redis.pipeline(transaction=False) as pipe:
                for task in tasks:
                    pipe.xadd(names.intake, encode_data(task))  # type: ignore[arg-type]
                pipe.xadd(names.intake, {"prompt": "", "complexity": "galactic"})  # malformed
                await pipe.execute()
            say(f"posted {len(tasks)} tasks as run {run_id} (and one malformed task)")
            started = time.monotonic()
            done = await _follow(
                redis, names, fleet, run_id, total=len(tasks), timeout_s=args.timeout
            )
            elapsed = time.monotonic() - started
            report = await build_report(
                redis, names, run_id, price_table(vendors), vendors=tuple(WORKERS)
            )
    finally:
        await redis.aclose()
    print(format_report(report, elapsed_s=elapsed, logs=args.logs, namespace=names.namespace))
    if args.json:
        print(json.dumps(report.as_json(elapsed_s=elapsed)))
    return 0 if done and report.complete else 1


def say(text: str) -> None:
    print(text, flush=True)


async def clear_namespace(redis: Redis, names: Names) -> None:
    """Delete every key of the namespace (and only of it)."""
    keys = [k async for k in redis.scan_iter(match=f"{names.namespace}:*", count=1000)]
    for i in range(0, len(keys), 500):
        await redis.unlink(*keys[i : i + 500])


@asynccontextmanager
async def _fleet(url: str, names: Names, logs: Path) -> AsyncIterator[tuple[Fleet, VendorSettings]]:
    env = {
        **os.environ,
        "REDIS_URL": url,
        "SWARM_NAMESPACE": names.namespace,
        "METRICS_PORT": "0",
        "LOG_JSON": "1",
        "LOG_LEVEL": "info",
        "SWARM_HEARTBEAT_INTERVAL_S": "0.5",
        "SWARM_HEARTBEAT_TTL_S": "2",
        "SWARM_DRAIN_TIMEOUT_S": "10",
        "SWARM_COLLECTOR_EXPORT_PATH": str(logs / "findings.jsonl"),
    }
    env.pop("SWARM_SIMULATOR_URL", None)
    fleet = Fleet(env, logs)
    try:
        async with fleet:
            simulated = [v for v in WORKERS if not os.environ.get(KEY_ENV[v])]
            sim_env: dict[str, str] = {}
            if simulated:
                url = await start_simulator(fleet, _simulator_config())
                sim_env = {"SWARM_SIMULATOR_URL": url}
            real = [v for v in WORKERS if v not in simulated]
            say(
                f"vendors: {', '.join(simulated) or 'none'} simulated"
                + (f"; {', '.join(real)} real (keys set)" if real else "")
            )

            def vendor_env(vendor: str, capacity: int) -> dict[str, str]:
                extra = {"SWARM_MAX_IN_FLIGHT": str(capacity)}
                return {**extra, **(sim_env if vendor in simulated else {})}

            await fleet.start("dispatcher", "run", "dispatcher")
            await fleet.start("collector", "run", "collector")
            for vendor, capacity in WORKERS.items():
                await fleet.start(
                    f"worker-{vendor}",
                    "run",
                    "worker",
                    "--vendor",
                    vendor,
                    env=vendor_env(vendor, capacity),
                )
            await fleet.start(
                "megashard", "run", "megashard", "--shard", SHARD, env=vendor_env("gemini", 64)
            )
            sim_url = sim_env.get("SWARM_SIMULATOR_URL") if "gemini" in simulated else None
            yield fleet, VendorSettings(SWARM_SIMULATOR_URL=sim_url)
    finally:
        say(f"stopped {len(fleet.procs)} processes; logs in {logs}/")


def _simulator_config() -> str:
    lines = ["seed = 42"]
    prefix = {"claude": "anthropic", "gemini": "gemini", "openai": "openai", "deepseek": "deepseek"}
    for vendor, latency in SIMULATOR_LATENCY_S.items():
        lines += [
            f"[vendors.{prefix[vendor]}]",
            f'latency = {{ kind = "lognormal", mean_s = {latency}, sigma = 0.35 }}',
        ]
    lines += ["[vendors.deepseek.faults]", "rate_429 = 0.03"]  # shows retries at work
    return "\n".join(lines) + "\n"


async def _load_shard(redis: Redis, names: Names, vendors: VendorSettings) -> Any:
    model = DEFAULT_SHARD_MODEL["gemini"]
    llm = build_client("gemini", vendors, model)
    try:
        return await load_context(
            ContextStore(redis, names),
            llm,
            price_table(vendors),
            shard=SHARD,
            documents=history_corpus(),
            model=model,
            specialty=SHARD_SPECIALTY,
        )
    finally:
        await llm.aclose()


_DISPATCHER_VIEW_S = 1.5  # the dispatcher's default fleet refresh, and a margin


async def _wait_ready(redis: Redis, names: Names, fleet: Fleet) -> None:
    wanted = {"dispatcher": 1, "collector": 1, "megashard": 1} | {f"worker-{v}": 1 for v in WORKERS}

    def shard_loaded(members: list[dict[str, str]]) -> bool:
        return any(
            m.get("loaded_tokens", "0") != "0" for m in members if m.get("service") == "megashard"
        )

    members = await wait_live(redis, names, fleet, wanted, ready=shard_loaded)
    # The dispatcher reads the fleet once per SWARM_DISPATCHER_FLEET_REFRESH_S (1 s): let it
    # see every worker before the first task, or a vendor's worker that came up last gets
    # none of the first tasks (CI, under load, saw openai get none at all).
    await asyncio.sleep(_DISPATCHER_VIEW_S)
    capacity = sum(int(m.get("capacity", "0") or 0) for m in members if m.get("vendor"))
    say(f"swarm up: {len(members)} services, {capacity} tasks of worker capacity")


async def _follow(
    redis: Redis, names: Names, fleet: Fleet, run_id: str, *, total: int, timeout_s: float
) -> bool:
    deadline = time.monotonic() + timeout_s
    with WaitProgress(total, "tasks") as bar:
        while True:
            fleet.check()
            p = await run_progress(redis, names, run_id)
            bar.update(p.finished, f"ok {p.ok}, failed {p.failed}")
            if p.complete:
                return True
            if time.monotonic() > deadline:
                say(f"timed out after {timeout_s:.0f}s with {total - p.finished} tasks unfinished")
                return False
            await asyncio.sleep(0.25)
