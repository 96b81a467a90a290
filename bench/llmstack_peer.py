"""One stack a user would assemble instead of a swarmbus worker, run by bench/llmstack.py in
.venv-bench (the peers' venv), against the vendor simulator's DeepSeek endpoint:

* `router`: a LiteLLM `Router` with the vendor as its one deployment, no queue: at most
  --in-flight `acompletion()` calls at once (asyncio.Semaphore);
* `taskiq-router`: the same Router called in a taskiq task (taskiq-redis RedisStreamBroker,
  taskiq's Receiver with max_async_tasks = --in-flight, ack when the task returns), each
  result XADDed to a Redis stream as a swarmbus worker XADDs its finding;
* `sdk`: the raw OpenAI SDK loop (AsyncOpenAI, the vendor is OpenAI-compatible), no queue.

Every pool is sized for --in-flight: LiteLLM's aiohttp connector through its
AIOHTTP_CONNECTOR_LIMIT(_PER_HOST) (the driver sets both), the SDK's httpx2 pool by Limits,
taskiq's result stream on a redis-py pool of its own. A warm-up wave of --in-flight calls
goes first and is not timed. Prints one JSON line: tasks/s over the measured tasks (first
measured call started -> last measured call returned, for taskiq -> all acked), CPU of this
process over that span, peak RSS, and each measured call's added latency (call time minus
the simulator's fixed latency), as measured around the call by the caller.

    .venv-bench/bin/python bench/llmstack_peer.py --stack router --sim-url http://127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

from benchlib import rss_peak_mb

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
from _common import drop_keys, fill, group_drained

MODEL = "deepseek-flash"
GROUP = "bench"
MAX_TOKENS = 32


def make_router(args: argparse.Namespace) -> Any:
    import litellm  # noqa: PLC0415 (slow import, only these stacks need it)
    from litellm import Router  # noqa: PLC0415

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    return Router(
        model_list=[
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"deepseek/{MODEL}",
                    "api_base": f"{args.sim_url}/deepseek/v1",
                    "api_key": args.api_key,
                },
            }
        ],
        num_retries=0,
        timeout=60,
    )


class Calls:
    """The measured calls' timings and the errors; CPU from the first measured call."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.first: float | None = None
        self.first_cpu = 0.0
        self.last = 0.0
        self.last_cpu = 0.0
        self.added_ms: list[float] = []
        self.errors: list[str] = []

    def start(self, i: int) -> float:
        now = time.perf_counter()
        if i >= self.warmup and self.first is None:
            self.first, self.first_cpu = now, time.process_time()
        return now

    def end(self, i: int, started: float, latency_s: float, error: Exception | None) -> None:
        now = time.perf_counter()
        if error is not None:
            self.errors.append(f"{type(error).__name__}: {str(error)[:120]}")
        if i >= self.warmup:
            self.last = max(self.last, now)
            if error is None:
                self.added_ms.append((now - started - latency_s) * 1000)


async def run_loop(args: argparse.Namespace, calls: Calls, total: int) -> dict[str, Any]:
    """router / sdk: no queue, at most --in-flight calls at once."""
    gate = asyncio.Semaphore(args.in_flight)
    if args.stack == "router":
        router = make_router(args)

        async def call(i: int) -> None:
            await router.acompletion(
                model=MODEL,
                messages=[{"role": "user", "content": f"benchmark task {i}"}],
                max_tokens=MAX_TOKENS,
            )

        config = {"litellm.Router": "1 deployment (deepseek/ on the simulator)", "num_retries": 0}
    else:
        import httpx2  # noqa: PLC0415
        import openai  # noqa: PLC0415

        client = openai.AsyncOpenAI(
            base_url=f"{args.sim_url}/deepseek/v1",
            api_key=args.api_key,
            max_retries=0,
            timeout=60,
            http_client=openai.DefaultAsyncHttpxClient(
                limits=httpx2.Limits(
                    max_connections=args.in_flight, max_keepalive_connections=args.in_flight
                )
            ),
        )

        async def call(i: int) -> None:
            await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": f"benchmark task {i}"}],
                max_tokens=MAX_TOKENS,
            )

        config = {"openai.AsyncOpenAI": "max_retries 0", "httpx2 pool": args.in_flight}

    async def one(i: int) -> None:
        async with gate:
            started = calls.start(i)
            try:
                await call(i)
            except Exception as exc:
                calls.end(i, started, args.latency, exc)
            else:
                calls.end(i, started, args.latency, None)

    await asyncio.gather(*(one(i) for i in range(calls.warmup)))
    await asyncio.gather(*(one(i) for i in range(calls.warmup, total)))
    calls.last_cpu = time.process_time()
    return config


async def run_taskiq(args: argparse.Namespace, calls: Calls, total: int) -> dict[str, Any]:
    from redis.asyncio import Redis  # noqa: PLC0415
    from taskiq.receiver import Receiver  # noqa: PLC0415
    from taskiq_redis import RedisStreamBroker  # noqa: PLC0415

    ns = f"benchllmstack-taskiq-{uuid.uuid4().hex[:10]}"
    stream, results = f"{ns}:stream", f"{ns}:results"
    broker = RedisStreamBroker(
        args.redis_url, queue_name=stream, consumer_group_name=GROUP, consumer_id="0"
    )
    router = make_router(args)
    out = Redis.from_url(args.redis_url, max_connections=args.in_flight)
    finished = asyncio.Event()
    done = 0

    @broker.task(task_name="llm")
    async def llm(i: int) -> None:
        nonlocal done
        started = calls.start(i)
        try:
            res = await router.acompletion(
                model=MODEL,
                messages=[{"role": "user", "content": f"benchmark task {i}"}],
                max_tokens=MAX_TOKENS,
            )
            usage = res.usage
            await out.xadd(
                results,
                {
                    "task": i,
                    "text": res.choices[0].message.content or "",
                    "input_tokens": usage.prompt_tokens,
                    "output_tokens": usage.completion_tokens,
                },
            )
        except Exception as exc:
            calls.end(i, started, args.latency, exc)
        else:
            calls.end(i, started, args.latency, None)
        done += 1
        if done == total:
            finished.set()

    redis = Redis.from_url(args.redis_url)
    try:
        await broker.startup()
        await fill(llm.kiq, total)
        broker.is_worker_process = True
        stop = asyncio.Event()
        receiver = Receiver(broker=broker, max_async_tasks=args.in_flight, run_startup=False)
        listening = asyncio.create_task(receiver.listen(stop))
        await asyncio.wait_for(finished.wait(), timeout=600)
        drained = group_drained(redis, stream, GROUP)
        while not await drained():  # noqa: ASYNC110 (Redis is polled, no flag to wait on)
            await asyncio.sleep(0.001)
        calls.last = time.perf_counter()
        calls.last_cpu = time.process_time()
        stop.set()
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        results_n = int(await redis.xlen(results))
    finally:
        await broker.shutdown()
        await drop_keys(redis, f"{ns}*")
        await redis.aclose()
        await out.aclose()
    if results_n != total - len(calls.errors):
        calls.errors.append(f"{results_n} results stored for {total} tasks")
    return {
        "broker": "taskiq_redis.RedisStreamBroker",
        "receiver": "taskiq.receiver.Receiver",
        "max_async_tasks": args.in_flight,
        "xread_count": broker.count,
        "ack": "when the task returns (default)",
        "result": "XADD to a stream, redis-py pool of in-flight size",
        "litellm.Router": "1 deployment (deepseek/ on the simulator)",
        "num_retries": 0,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stack", choices=("router", "taskiq-router", "sdk"), required=True)
    parser.add_argument("--sim-url", required=True)
    parser.add_argument("--api-key", default="sim-key-not-secret")
    parser.add_argument("--n", type=int, default=2_000, help="measured tasks")
    parser.add_argument("--in-flight", type=int, default=1_000)
    parser.add_argument("--latency", type=float, default=1.0, help="the simulator's, seconds")
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    calls = Calls(warmup=args.in_flight)
    total = args.in_flight + args.n
    if args.stack == "taskiq-router":
        config = await run_taskiq(args, calls, total)
    else:
        config = await run_loop(args, calls, total)
    assert calls.first is not None
    span = calls.last - calls.first
    cpu = calls.last_cpu - calls.first_cpu
    packages = ("litellm", "openai", "httpx2", "aiohttp", "taskiq", "taskiq-redis", "redis")
    print(
        json.dumps(
            {
                "stack": args.stack,
                "tasks": args.n,
                "in_flight": args.in_flight,
                "tasks_per_s": args.n / span,
                "span_s": span,
                "cpu_ms_per_task": cpu * 1000 / args.n,
                "peak_rss_mb": rss_peak_mb(os.getpid()),
                "added_ms": [round(x, 2) for x in calls.added_ms],
                "errors": calls.errors,
                "config": {**config, "in_flight": args.in_flight},
                "versions": {p: metadata.version(p) for p in packages},
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main())
