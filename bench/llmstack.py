"""The LLM stack a user would assemble instead of swarmbus, in one run: the same tasks at the
same concurrency against the vendor simulator (its own process, fixed latency, default 1 s,
pinned to the last core where there are two or more; everything else to the others), through

* swarmbus: one `swarm run worker --vendor deepseek` process (bench/worker.py's run:
  SWARM_MAX_IN_FLIGHT and SWARM_LLM_MAX_CONNECTIONS = in flight), tasks pre-filled on its
  vendor stream, a finding XADDed per task;
* a LiteLLM `Router` alone (no queue), and the same Router inside a taskiq worker
  (taskiq-redis streams, max_async_tasks = in flight, each result XADDed);
* the raw OpenAI SDK loop (no queue), the baseline with no framework at all.

Each in a process of its own (bench/llmstack_peer.py in .venv-bench for the three peers), a
warm-up wave of in-flight tasks first and not timed, then --n measured tasks; rounds
interleaved so drift hits every stack alike; medians over rounds. Per stack: tasks/s (first
measured task started -> last finished), the stack process's CPU ms per task over that span,
its peak RSS (at in-flight tasks at once), the p50/p99 added latency (each call's time, as
its caller measured it, minus the simulator's fixed latency), how many vendor calls were
open at once on average (tasks/s x mean call time: a queue's worker can hold in-flight
tasks and still have fewer calls open) and client errors.
Prints a table, then one JSON line; saves bench/results/llmstack.json.

    python bench/llmstack.py [--n 2000] [--in-flight 1000] [--rounds 3] [--latency 1.0]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

from benchlib import cpu_seconds, emit
from redis import Redis
from worker import VENDOR, cleanup, run_swarmbus

from services.cli.redis_finder import find_redis
from services.simulator.process import spawn_simulator
from shared.llm.settings import SIMULATOR_KEY

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT / "bench" / "llmstack_peer.py"
STACKS = {
    "swarmbus": "swarmbus worker",
    "router": "LiteLLM Router alone",
    "taskiq-router": "taskiq + LiteLLM Router",
    "sdk": "raw OpenAI SDK loop",
}


def pin() -> dict[str, list[int]]:
    """The simulator's core(s) and ours; the simulator is pinned after it starts."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return {"simulator": cores, "stacks": cores}
    return {"simulator": cores[-1:], "stacks": cores[:-1]}


def percentile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_peer(stack: str, python: str, sim_url: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [python, str(PEER), "--stack", stack, "--sim-url", sim_url, "--api-key", SIMULATOR_KEY]
    cmd += ["--n", str(args.n), "--in-flight", str(args.in_flight)]
    cmd += ["--latency", str(args.latency), "--redis-url", args.redis_url]
    env = {
        **os.environ,
        "AIOHTTP_CONNECTOR_LIMIT": str(args.in_flight),
        "AIOHTTP_CONNECTOR_LIMIT_PER_HOST": str(args.in_flight),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of its price list: loopback only
        "LITELLM_TELEMETRY": "False",
    }
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise RuntimeError(f"{stack} failed, exit {proc.returncode}:\n{tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def run_bus(
    redis: Redis, redis_url: str, sim_url: str, ns: str, args: argparse.Namespace
) -> dict[str, Any]:
    rounds, rest = divmod(args.n, args.in_flight)
    if rest:
        raise SystemExit("--n must be a multiple of --in-flight for the swarmbus worker")
    r = run_swarmbus(redis, redis_url, sim_url, ns, args.in_flight, rounds, args.latency, 0)
    errors = [f"{k}={r[k]}" for k in ("missing", "duplicates", "failed", "dead_letters") if r[k]]
    errors += r["problems"]
    return {
        "stack": "swarmbus",
        "tasks": r["tasks"],
        "in_flight": args.in_flight,
        "tasks_per_s": r["tasks_per_s"],
        "span_s": r["span_s"],
        "cpu_ms_per_task": r["cpu_ms_per_task"],
        "peak_rss_mb": r["peak_rss_mb"],
        "added_ms": [ms - args.latency * 1000 for ms in r["call_ms"]],
        "errors": errors + [line[:200] for line in r["log"]],
        "config": {
            "service": f"swarm run worker --vendor {VENDOR}",
            "SWARM_MAX_IN_FLIGHT": args.in_flight,
            "SWARM_LLM_MAX_CONNECTIONS": args.in_flight,
            "in_flight": args.in_flight,
        },
        "versions": {p: metadata.version(p) for p in ("openai", "httpx2", "redis", "hiredis")},
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(key: str) -> float | None:
        xs = [r[key] for r in runs if r[key] is not None]
        return statistics.median(xs) if xs else None

    p99 = [percentile(r["added_ms"], 0.99) for r in runs]
    p50 = [percentile(r["added_ms"], 0.5) for r in runs]
    rates = [r["tasks_per_s"] for r in runs if r["tasks_per_s"] is not None]
    return {
        "tasks_per_s": med("tasks_per_s"),
        "tasks_per_s_min": min(rates, default=None),
        "tasks_per_s_max": max(rates, default=None),
        "cpu_ms_per_task": med("cpu_ms_per_task"),
        "peak_rss_mb": med("peak_rss_mb"),
        "simulator_cpu_ms_per_call": med("simulator_cpu_ms_per_call"),
        "calls_at_once": med("calls_at_once"),
        "added_p50_ms": statistics.median(x for x in p50 if x is not None),
        "added_p99_ms": statistics.median(x for x in p99 if x is not None),
        "errors": sum(len(r["errors"]) for r in runs),
        "error_kinds": sorted({e.split(":")[0][:80] for r in runs for e in r["errors"]})[:5],
        "rounds": len(runs),
        "config": runs[0]["config"],
        "versions": runs[0].get("versions", {}),
    }


def rounded(x: float | None, k: int) -> float | None:
    return None if x is None else round(x, k)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2_000, help="measured tasks per stack and round")
    parser.add_argument("--in-flight", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--only", default="", help="comma-separated stacks: " + ",".join(STACKS))
    parser.add_argument("--bench-python", default=str(ROOT / ".venv-bench/bin/python"))
    args = parser.parse_args()
    stacks = [s for s in STACKS if not args.only or s in args.only.split(",")]
    cores = pin()
    run_id = f"benchllmstack-{uuid.uuid4().hex[:8]}"
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in stacks}
    with find_redis(os.environ.get("REDIS_URL")) as redis_url:
        args.redis_url = redis_url
        redis = Redis.from_url(redis_url)
        proc, sim_url = spawn_simulator(args=("--latency", str(args.latency)))
        os.sched_setaffinity(proc.pid, cores["simulator"])
        os.sched_setaffinity(0, cores["stacks"])  # the stacks' processes inherit it
        try:
            for rnd in range(args.rounds):
                for stack in stacks:
                    sim_cpu0 = cpu_seconds(proc.pid)
                    if stack == "swarmbus":
                        r = run_bus(redis, redis_url, sim_url, f"{run_id}-{rnd}", args)
                    else:
                        r = run_peer(stack, args.bench_python, sim_url, args)
                    r["round"] = rnd + 1
                    calls = args.n + args.in_flight  # the warm-up wave too
                    r["simulator_cpu_ms_per_call"] = (
                        (cpu_seconds(proc.pid) - sim_cpu0) * 1000 / calls
                    )
                    if r["tasks_per_s"] and r["added_ms"]:  # Little's law: rate x time
                        call_s = statistics.fmean(r["added_ms"]) / 1000 + args.latency
                        r["calls_at_once"] = r["tasks_per_s"] * call_s
                    else:
                        r["calls_at_once"] = None
                    runs[stack].append(r)
                    print(
                        f"  round {rnd + 1} {STACKS[stack]:<26}"
                        f"{rounded(r['tasks_per_s'], 1)} tasks/s "
                        f"{rounded(r['cpu_ms_per_task'], 2)} CPU ms/task "
                        f"{rounded(r['peak_rss_mb'], 0)} MB, {len(r['errors'])} errors",
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            cleanup(redis, f"{run_id}-")
            redis.close()
    summary = {s: summarise(rs) for s, rs in runs.items()}
    ideal = args.in_flight / args.latency
    print(
        f"LLM-stack benchmark: {args.n:,} tasks at {args.in_flight:,} in flight after a warm-up "
        f"wave, simulator (DeepSeek endpoint) latency {args.latency:g}s on core(s) "
        f"{cores['simulator']}, stacks on {cores['stacks']}; {args.rounds} rounds, median; "
        f"ideal {ideal:,.0f} tasks/s"
    )
    print(
        f"{'stack':<26}{'tasks/s':>9}{'min':>8}{'max':>8}{'CPU ms/task':>13}"
        f"{'RSS MB':>8}{'p50 +ms':>9}{'p99 +ms':>9}{'errors':>8}"
    )
    for stack, s in summary.items():
        print(
            f"{STACKS[stack]:<26}{s['tasks_per_s'] or 0:>9,.1f}{s['tasks_per_s_min'] or 0:>8,.1f}"
            f"{s['tasks_per_s_max'] or 0:>8,.1f}{s['cpu_ms_per_task'] or 0:>13.2f}"
            f"{s['peak_rss_mb'] or 0:>8,.0f}{s['added_p50_ms']:>9,.0f}{s['added_p99_ms']:>9,.0f}"
            f"{s['errors']:>8}"
        )

    print(
        "vendor calls open at once (mean, tasks/s x mean call time): "
        + ", ".join(f"{STACKS[s]} {rounded(v['calls_at_once'], 0)}" for s, v in summary.items())
    )
    print(
        "simulator CPU ms/call: "
        + ", ".join(
            f"{STACKS[s]} {rounded(v['simulator_cpu_ms_per_call'], 2)}" for s, v in summary.items()
        )
    )

    def ratio(a: str, b: str, key: str = "tasks_per_s") -> float | None:
        x = summary.get(a, {}).get(key)
        y = summary.get(b, {}).get(key)
        return round(x / y, 2) if x and y else None

    ratios = {
        "swarmbus_vs_router": ratio("swarmbus", "router"),
        "swarmbus_vs_taskiq_router": ratio("swarmbus", "taskiq-router"),
        "swarmbus_vs_sdk": ratio("swarmbus", "sdk"),
        "router_cpu_vs_swarmbus": ratio("router", "swarmbus", "cpu_ms_per_task"),
        "taskiq_router_cpu_vs_swarmbus": ratio("taskiq-router", "swarmbus", "cpu_ms_per_task"),
        "sdk_cpu_vs_swarmbus": ratio("sdk", "swarmbus", "cpu_ms_per_task"),
    }
    for name, value in ratios.items():
        print(f"{name}: {value}x")
    emit(
        {
            "bench": "llmstack",
            "n": args.n,
            "in_flight": args.in_flight,
            "latency_s": args.latency,
            "rounds": args.rounds,
            "ideal_tasks_per_s": ideal,
            "cores": cores,
            "labels": {s: STACKS[s] for s in stacks},
            "tasks_per_s": {s: rounded(v["tasks_per_s"], 1) for s, v in summary.items()},
            "cpu_ms_per_task": {s: rounded(v["cpu_ms_per_task"], 2) for s, v in summary.items()},
            "peak_rss_mb": {s: rounded(v["peak_rss_mb"], 0) for s, v in summary.items()},
            "added_p50_ms": {s: rounded(v["added_p50_ms"], 1) for s, v in summary.items()},
            "added_p99_ms": {s: rounded(v["added_p99_ms"], 1) for s, v in summary.items()},
            "errors": {s: v["errors"] for s, v in summary.items()},
            "calls_at_once": {s: rounded(v["calls_at_once"], 0) for s, v in summary.items()},
            "simulator_cpu_ms_per_call": {
                s: rounded(v["simulator_cpu_ms_per_call"], 2) for s, v in summary.items()
            },
            "ratios": ratios,
        },
        details={
            "summary": summary,
            "runs": {
                s: [{k: v for k, v in r.items() if k != "added_ms"} for r in rs]
                for s, rs in runs.items()
            },
        },
        redis_url=args.redis_url,
    )


if __name__ == "__main__":
    main()
