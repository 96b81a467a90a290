"""Worker throughput: one `swarm run worker --vendor deepseek` process against the vendor
simulator at a fixed latency (default 1 s; the simulator is its own process), holding 100,
500 and 1,000 tasks in flight. Compared in the same run with the original design on the
same workload: a pool of 40 threads, each looping "LPOP a task from a Redis list, call the
vendor with the blocking OpenAI SDK, XADD the finding" (40 in flight at every level).

Per level, one warm-up wave (level tasks) and then level x rounds measured tasks are posted,
then the worker is started. tasks/s is measured tasks / (first measured claim -> last
measured finding), the same for both designs: start-up and first connections are left out,
and the first wave's simultaneous completions are not counted without their time. Worker
CPU is the worker process's utime+stime over that span (/proc). Every task must get exactly
one finding; a worker that stops making progress is reported, not waited out.
Prints a table, then one JSON line of headline numbers.

    python bench/worker.py [--levels 100,500,1000] [--rounds 3] [--latency 1.0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import openai
from benchlib import cpu_seconds, emit, rss_peak_mb
from redis import Redis

from services.cli.redis_finder import find_redis
from services.simulator.process import spawn_simulator
from shared.llm.settings import SIMULATOR_KEY
from shared.protocol import Finding, Names, Status, Task, encode

ROOT = Path(__file__).resolve().parents[1]
VENDOR = "deepseek"
MODEL = "deepseek-flash"
THREADS = 40
POLL_S = 0.05

Entries = list[tuple[bytes, dict[bytes, bytes]]]


def make_tasks(n: int, tag: str) -> list[Task]:
    return [Task(prompt=f"benchmark task {tag} {i}", max_output_tokens=32) for i in range(n)]


def read_findings(redis: Redis, stream: str) -> Entries:
    out: Entries = []
    start = "-"
    while True:
        batch: Any = redis.xrange(stream, min=start, count=5000)
        if not batch:
            return out
        out.extend(batch)
        ms, seq = batch[-1][0].decode().split("-")
        start = f"{ms}-{int(seq) + 1}"


def check(entries: Entries, posted: set[bytes]) -> dict[str, int]:
    seen = [f[b"task_id"] for _id, f in entries]
    return {
        "findings": len(seen),
        "missing": len(posted - set(seen)),
        "duplicates": len(seen) - len(set(seen)),
        "strangers": len(set(seen) - posted),
        "failed": sum(1 for _id, f in entries if f.get(b"status", b"ok") != b"ok"),
    }


def with_pool(url: str, max_connections: int) -> str:
    if not max_connections:
        return url
    return f"{url}{'&' if '?' in url else '?'}max_connections={max_connections}"


def run_swarmbus(
    redis: Redis,
    redis_url: str,
    sim_url: str,
    ns: str,
    level: int,
    rounds: int,
    latency: float,
    redis_pool: int,
) -> dict[str, Any]:
    names = Names(ns)
    warmup, measured = make_tasks(level, f"{ns} warm-up"), make_tasks(level * rounds, ns)
    n = len(measured)
    posted = {t.task_id.encode() for t in (*warmup, *measured)}
    timed = {t.task_id.encode() for t in measured}
    queue = names.vendor_tasks(VENDOR)
    with redis.pipeline(transaction=False) as pipe:
        for t in (*warmup, *measured):
            pipe.xadd(queue, encode(t))  # type: ignore[arg-type]
        pipe.execute()
    env = {
        **os.environ,
        "REDIS_URL": with_pool(redis_url, redis_pool),
        "SWARM_NAMESPACE": ns,
        "METRICS_PORT": "0",
        "SWARM_SIMULATOR_URL": sim_url,
        "SWARM_MAX_IN_FLIGHT": str(level),
        "SWARM_LLM_MAX_CONNECTIONS": str(level),
        "LOG_LEVEL": "warning",
    }
    problems: list[str] = []
    cpu0 = cpu1 = None
    peak_rss_mb = None
    stall_s = 5 + 3 * latency  # no new finding for this long: the rest is stuck
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", "run", "worker", "--vendor", VENDOR],
            env=env,
            cwd=ROOT,
            stdout=output,  # the worker logs to stdout; stderr too, in the same file
            stderr=subprocess.STDOUT,
        )
        try:
            # CPU is counted from the first measured claim: after start-up and warm-up.
            deadline = time.monotonic() + 60 + 5 * latency
            while True:
                groups: Any = redis.xinfo_groups(queue)
                if any((g.get("entries-read") or 0) > level for g in groups):
                    cpu0 = cpu_seconds(proc.pid)
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    problems.append(f"the worker never reached the measured tasks ({groups})")
                    break
                time.sleep(0.01)
            done, progress_at = 0, time.monotonic()
            while cpu0 is not None:
                now_done = int(redis.xlen(names.findings))
                if now_done != done:
                    done, progress_at = now_done, time.monotonic()
                # A duplicate can make up the count while a task still lacks its finding.
                if (
                    done >= len(posted)
                    and not check(read_findings(redis, names.findings), posted)["missing"]
                ):
                    cpu1 = cpu_seconds(proc.pid)
                    peak_rss_mb = rss_peak_mb(proc.pid)
                    break
                if proc.poll() is not None:
                    problems.append(f"the worker exited at {done}/{len(posted)} findings")
                    break
                if time.monotonic() - progress_at > stall_s:
                    problems.append(
                        f"no progress for {stall_s:g}s at {done}/{len(posted)} findings"
                    )
                    break
                time.sleep(POLL_S)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                problems.append("the worker did not stop within 60 s of SIGTERM; killed")
                proc.kill()
                proc.wait()
            output.seek(0)  # warnings and errors only (LOG_LEVEL=warning), a line each
            log_lines = output.read().decode(errors="replace").splitlines()
    if proc.returncode != 0:
        problems.append(f"worker exit code {proc.returncode}")
    entries = read_findings(redis, names.findings)  # after the drain: late duplicates too
    counts = check(entries, posted)
    starts, ends, call_ms = [], [], []
    for entry_id, f in entries:
        if f[b"task_id"] in timed:
            call_ms.append(float(f.get(b"latency_ms", b"nan")))
            ends.append(int(entry_id.split(b"-")[0]) / 1000)
            stamp = datetime.fromisoformat(f[b"timestamp"].decode()).timestamp()
            starts.append(stamp - float(f.get(b"latency_ms", b"0")) / 1000)
    complete = cpu1 is not None and not counts["missing"]
    span = max(ends) - min(starts) if ends else float("nan")
    return {
        "tasks": n,
        "posted": len(posted),
        "tasks_per_s": n / span if complete else None,
        "span_s": span,
        "cpu_ms_per_task": (cpu1 - cpu0) * 1000 / n if complete and cpu0 and cpu1 else None,
        "peak_rss_mb": peak_rss_mb,
        "call_ms": call_ms,
        "dead_letters": int(redis.xlen(names.dead_letter)),
        "rerouted": int(redis.xlen(names.intake)),
        "problems": problems,
        "log": log_lines,
        **counts,
    }


def run_threads(redis_url: str, sim_url: str, ns: str, n: int) -> dict[str, Any]:
    """The original design: threads, each with a blocking SDK client, a list as the queue.
    One warm-up task per thread goes first, as the worker gets a warm-up wave."""
    redis = Redis.from_url(redis_url)
    queue, findings = f"{ns}:queue", f"{ns}:findings"
    warmup, measured = make_tasks(THREADS, f"{ns} warm-up"), make_tasks(n, ns)
    posted = {t.task_id.encode() for t in (*warmup, *measured)}
    timed = {t.task_id for t in measured}
    with redis.pipeline(transaction=False) as pipe:
        for t in (*warmup, *measured):
            pipe.rpush(queue, t.model_dump_json())
        pipe.execute()
    clients = [
        openai.OpenAI(
            base_url=f"{sim_url}/deepseek/v1", api_key=SIMULATOR_KEY, max_retries=0, timeout=60
        )
        for _ in range(THREADS)
    ]
    claims: list[float] = []
    publishes: list[float] = []
    cpu0: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def loop(k: int) -> None:
        client = clients[k]
        while True:
            raw = redis.lpop(queue)
            if raw is None:
                return
            claimed = time.perf_counter()
            task = Task.model_validate_json(raw)  # type: ignore[arg-type]
            if task.task_id in timed and not cpu0:
                with lock:
                    cpu0.append(time.process_time())
            started = time.monotonic()
            try:
                res = client.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": task.prompt}],
                    max_tokens=task.max_output_tokens,
                )
                usage = res.usage
                finding = Finding(
                    task_id=task.task_id,
                    worker_id=f"thread-{k}",
                    vendor=VENDOR,
                    model=res.model,
                    summary=res.choices[0].message.content or "",
                    input_tokens=usage.prompt_tokens if usage else 0,
                    output_tokens=usage.completion_tokens if usage else 0,
                    latency_ms=(time.monotonic() - started) * 1000,
                )
            except Exception as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                finding = Finding(
                    task_id=task.task_id,
                    worker_id=f"thread-{k}",
                    vendor=VENDOR,
                    model=MODEL,
                    status=Status.FAILED,
                    error=f"{type(exc).__name__}: {exc}",
                )
            redis.xadd(findings, encode(finding))  # type: ignore[arg-type]
            if task.task_id in timed:
                published = time.perf_counter()
                with lock:
                    claims.append(claimed)
                    publishes.append(published)

    pool = [threading.Thread(target=loop, args=(k,), daemon=True) for k in range(THREADS)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    cpu = time.process_time() - cpu0[0]
    for c in clients:
        c.close()
    counts = check(read_findings(redis, findings), posted)
    redis.close()
    span = max(publishes) - min(claims)
    return {
        "tasks": n,
        "posted": len(posted),
        "tasks_per_s": n / span,
        "span_s": span,
        "cpu_ms_per_task": cpu * 1000 / n,
        "errors": errors,
        **counts,
    }


def cleanup(redis: Redis, prefix: str) -> None:
    batch: list[bytes] = []
    for key in redis.scan_iter(match=f"{prefix}*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            redis.unlink(*batch)
            batch = []
    if batch:
        redis.unlink(*batch)


def summarise(lines: list[str]) -> Counter[str]:
    """Error and log lines by kind: level, event and exception for the worker's JSON logs."""
    kinds: Counter[str] = Counter()
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            kinds[line[:120]] += 1
            continue
        if not isinstance(event, dict):
            kinds[line[:120]] += 1
            continue
        kind = f"{event.get('level', '?')} {event.get('event', '?')}"
        exc = event.get("exception")
        if isinstance(exc, list) and exc and isinstance(exc[-1], dict):
            kind += f" {exc[-1].get('exc_type')}: {str(exc[-1].get('exc_value'))[:80]}"
        elif event.get("error"):
            kind += f" ({str(event['error'])[:80]})"
        kinds[kind] += 1
    return kinds


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--levels", default="100,500,1000", help="tasks in flight, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="tasks per level = level x rounds")
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument(
        "--redis-pool",
        type=int,
        default=0,
        help="append ?max_connections=N to the worker's REDIS_URL (default: leave it alone)",
    )
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    run_id = f"benchworker-{uuid.uuid4().hex[:8]}"
    swarm: dict[int, dict[str, Any]] = {}
    threads: dict[int, dict[str, Any]] = {}
    with find_redis(os.environ.get("REDIS_URL")) as redis_url:
        redis = Redis.from_url(redis_url)
        proc, sim_url = spawn_simulator(args=("--latency", str(args.latency)))
        try:
            for level in levels:  # interleaved so drift hits both alike
                swarm[level] = run_swarmbus(
                    redis,
                    redis_url,
                    sim_url,
                    f"{run_id}-s{level}",
                    level,
                    args.rounds,
                    args.latency,
                    args.redis_pool,
                )
                threads[level] = run_threads(
                    redis_url, sim_url, f"{run_id}-t{level}", level * args.rounds
                )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            cleanup(redis, f"{run_id}-")
            redis.close()

    def ratio(level: int) -> float | None:
        s = swarm[level]["tasks_per_s"]
        return None if s is None else s / threads[level]["tasks_per_s"]

    pool_note = f", worker Redis pool {args.redis_pool}" if args.redis_pool else ""
    print(
        f"worker benchmark: one worker process ({VENDOR}) vs {THREADS} threads with blocking "
        f"clients, simulator latency {args.latency:g}s fixed, tasks = level x {args.rounds} "
        f"after a warm-up wave{pool_note}, Python {platform.python_version()}, "
        f"{os.cpu_count()} cores"
    )
    print(
        f"{'in flight':>9}{'swarmbus t/s':>14}{'ideal':>8}{'of ideal':>10}"
        f"{'threads t/s':>13}{'ratio':>8}{'worker CPU ms/task':>20}{'threads CPU ms/task':>21}"
    )
    for level in levels:
        s, t = swarm[level], threads[level]
        ideal = level / args.latency
        share = None if s["tasks_per_s"] is None else s["tasks_per_s"] / ideal
        print(
            f"{level:>9,}{fmt(s['tasks_per_s'], ',.1f'):>14}{ideal:>8,.0f}"
            f"{fmt(share, '.0%'):>10}{t['tasks_per_s']:>13,.1f}{fmt(ratio(level), '.1f'):>8}"
            f"{fmt(s['cpu_ms_per_task'], '.2f'):>20}{t['cpu_ms_per_task']:>21.2f}"
        )
    problems = 0
    keys = ("missing", "duplicates", "strangers", "failed", "dead_letters", "rerouted")
    for label, results in (("swarmbus", swarm), ("threads", threads)):
        for level, r in results.items():
            notes = [f"{k}={r[k]}" for k in keys if r.get(k)]
            if r["missing"]:
                notes[0] += f" of {r['posted']} posted (warm-up included)"
            notes += r.get("problems", [])
            errs = r.get("errors", []) or r.get("log", [])
            if errs:
                kinds = summarise(errs).most_common(3)
                notes.append(
                    f"{len(errs)} client errors/worker log lines: "
                    + ", ".join(f"{count} x {kind}" for kind, count in kinds)
                )
            if notes:
                problems += 1
                print(f"  {label} at {level}: " + "; ".join(notes))
    if not problems:
        print("every task got exactly one ok finding; no worker warnings/errors; no client errors")

    def level_json(level: int) -> dict[str, Any]:
        s, t, r = swarm[level], threads[level], ratio(level)
        return {
            "tasks": s["tasks"],
            "tasks_per_s": None if s["tasks_per_s"] is None else round(s["tasks_per_s"], 1),
            "ideal_tasks_per_s": level / args.latency,
            "fraction_of_ideal": None
            if s["tasks_per_s"] is None
            else round(s["tasks_per_s"] * args.latency / level, 3),
            "threads_tasks_per_s": round(t["tasks_per_s"], 1),
            "ratio": None if r is None else round(r, 2),
            "worker_cpu_ms_per_task": None
            if s["cpu_ms_per_task"] is None
            else round(s["cpu_ms_per_task"], 3),
            "threads_cpu_ms_per_task": round(t["cpu_ms_per_task"], 3),
            "missing": s["missing"] + t["missing"],
            "duplicates": s["duplicates"] + t["duplicates"],
            "failed": s["failed"] + t["failed"],
            "worker_log_lines": len(s["log"]),
        }

    ratio_1000 = ratio(1000) if 1000 in swarm else None
    emit(
        {
            "bench": "worker",
            "latency_s": args.latency,
            "rounds": args.rounds,
            "threads": THREADS,
            "redis_pool": args.redis_pool or None,
            "levels": {str(lv): level_json(lv) for lv in levels},
            "ratio_at_1000": None if ratio_1000 is None else round(ratio_1000, 2),
            "threads_tasks_per_s": round(
                statistics.median(t["tasks_per_s"] for t in threads.values()), 1
            ),
            "problems": problems,
        }
    )


if __name__ == "__main__":
    main()
