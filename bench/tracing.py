"""What tracing costs the dispatcher: the same N flat-field tasks drained three ways in one
run, each round on a fresh namespace, medians of `--rounds`:

* `off`: SWARM_TRACE_START=false and tasks without a traceparent, so no headers are
  written (the baseline: the dispatcher before traces, plus two no-op spans);
* `context`: the default: a trace started at intake, carried in the routed task's
  headers, logged; nothing exported;
* `otlp`: the default plus OTEL_EXPORTER_OTLP_ENDPOINT pointing at a receiver in another
  process, so every intake and route span is exported by OpenTelemetry's batch processor
  over OTLP/HTTP.

Routed tasks/s and the dispatcher process's CPU per task (its exporter thread included).
Prints a table, then one JSON line.

    python bench/tracing.py [--tasks 20000] [--rounds 3] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid

from benchlib import emit
from dispatcher import cleanup, drain_seconds, fill, make_tasks
from redis import Redis as SyncRedis

from services.cli.redis_finder import find_redis
from shared.protocol import KNOWN_VENDORS, Names
from shared.runtime.logging import configure_logging
from shared.runtime.net import free_port

RECEIVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""

VARIANTS = {
    "off": {"SWARM_TRACE_START": "false"},
    "context": {"SWARM_TRACE_START": "true"},
    "otlp": {"SWARM_TRACE_START": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "{receiver}"},
}


def one_round(url: str, variant: str, n: int, receiver: str) -> tuple[float, float]:
    """(tasks/s, CPU µs per task) for one drain of `n` tasks."""
    namespace = f"bench-trace-{uuid.uuid4().hex[:8]}"
    names = Names(namespace)
    redis = SyncRedis.from_url(url)
    for key in ("SWARM_TRACE_START", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        os.environ.pop(key, None)
    os.environ.update(
        {k: v.format(receiver=receiver) for k, v in VARIANTS[variant].items()},
        SWARM_NAMESPACE=namespace,
    )
    try:
        fill(redis, names.intake, make_tasks(n))
        cpu = time.process_time()
        elapsed = asyncio.run(drain_seconds(url, names))
        cpu = time.process_time() - cpu
        routed = sum(int(redis.xlen(names.vendor_tasks(v))) for v in KNOWN_VENDORS)
        assert routed == n, f"{variant}: routed {routed:,} of {n:,}"
    finally:
        cleanup(redis, namespace)
        redis.close()
    return n / elapsed, cpu / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    args = parser.parse_args()
    os.environ.update(METRICS_PORT="0", LOG_LEVEL="warning", OTEL_BSP_SCHEDULE_DELAY="200")
    configure_logging("warning", json=True)
    port = free_port()
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)])
    results: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
    try:
        with find_redis(args.redis_url) as url:
            for _ in range(args.rounds):  # interleaved, so drift hits every variant alike
                for variant in VARIANTS:
                    results[variant].append(
                        one_round(url, variant, args.tasks, f"http://127.0.0.1:{port}")
                    )
    finally:
        receiver.terminate()
        receiver.wait()
    rate = {v: statistics.median(r for r, _ in runs) for v, runs in results.items()}
    cpu = {v: statistics.median(c for _, c in runs) for v, runs in results.items()}
    print(
        f"tracing cost in the dispatcher: {args.tasks:,} tasks, median of {args.rounds} "
        f"rounds, {os.cpu_count()} cores"
    )
    print(f"{'variant':<52}{'tasks/s':>10}{'CPU µs/task':>13}{'vs off':>9}")
    labels = {
        "off": "off: no trace started, no headers (baseline)",
        "context": "context: trace started and carried, not exported",
        "otlp": "otlp: every span exported over OTLP/HTTP",
    }
    for v in VARIANTS:
        print(f"{labels[v]:<52}{rate[v]:>10,.0f}{cpu[v]:>13,.0f}{rate[v] / rate['off']:>9.2f}")
    emit(
        {
            "bench": "tracing",
            "tasks": args.tasks,
            "rounds": args.rounds,
            **{f"{v}_per_s": round(rate[v]) for v in VARIANTS},
            **{f"{v}_cpu_us": round(cpu[v]) for v in VARIANTS},
            "context_ratio": round(rate["context"] / rate["off"], 3),
            "otlp_ratio": round(rate["otlp"] / rate["off"], 3),
        }
    )


if __name__ == "__main__":
    main()
