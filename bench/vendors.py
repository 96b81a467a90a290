"""Adapter throughput: one process holds C concurrent requests (default 1,000) against the
vendor simulator at a fixed 1 s latency, through each adapter's real SDK over real HTTP.
Reports achieved requests/s against the ideal C / latency, and client CPU per request.
The simulator runs as its own process (`swarm run simulator`), so its CPU is not counted.

    python bench/vendors.py [--concurrency 1000] [--rounds 3] [--latency 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import time
from pathlib import Path

import httpx2
from benchlib import emit

from services.simulator.process import spawn_simulator
from shared.llm.base import LLMClient
from shared.llm.registry import build_client
from shared.llm.settings import VendorSettings
from shared.llm.types import LLMRequest

ROOT = Path(__file__).resolve().parents[1]
VENDORS = ("claude", "gemini", "openai", "deepseek", "codex", "openai-compatible")
MODELS = {
    "claude": "claude-haiku-4-5",
    "gemini": "gemini-2.5-flash",
    "openai": "gpt-5-mini",
    "deepseek": "deepseek-chat",
    "codex": "gpt-5-codex",
    "openai-compatible": "local-model",
}


async def run_adapter(
    client: LLMClient, vendor: str, concurrency: int, rounds: int
) -> dict[str, float]:
    gate = asyncio.Semaphore(concurrency)
    total = concurrency * rounds
    failures = 0

    async def one(i: int) -> None:
        nonlocal failures
        async with gate:
            try:
                await client.complete(
                    LLMRequest(
                        prompt=f"benchmark request {i}",
                        model=MODELS[vendor],
                        max_output_tokens=32,
                        timeout_s=60,
                    )
                )
            except Exception:
                failures += 1

    await one(-1)  # warm the connection pool's first connection and imports
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(total)))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {
        "requests": total,
        "failures": failures,
        "wall_s": wall,
        "rps": total / wall,
        "cpu_ms_per_req": cpu * 1000 / total,
    }


async def raw_baseline(url: str, concurrency: int, rounds: int) -> dict[str, float]:
    """The same calls with no SDK: httpx2 posting Chat Completions JSON, pools of 20."""
    shards = max(1, concurrency // 20)
    clients = [
        httpx2.AsyncClient(
            timeout=60, limits=httpx2.Limits(max_connections=20, max_keepalive_connections=20)
        )
        for _ in range(shards)
    ]
    gate = asyncio.Semaphore(concurrency)
    total, failures = concurrency * rounds, 0

    async def one(i: int) -> None:
        nonlocal failures
        body = {
            "model": "gpt-6-luna",
            "max_completion_tokens": 32,
            "messages": [{"role": "user", "content": f"benchmark request {i}"}],
        }
        async with gate:
            res = await clients[i % shards].post(
                f"{url}/openai/v1/chat/completions",
                json=body,
                headers={"authorization": "Bearer sim"},
            )
            if res.status_code != 200 or not json.loads(res.content)["choices"]:
                failures += 1

    await one(0)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(total)))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    for c in clients:
        await c.aclose()
    return {
        "requests": total,
        "failures": failures,
        "wall_s": wall,
        "rps": total / wall,
        "cpu_ms_per_req": cpu * 1000 / total,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="requests = concurrency x rounds")
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--vendors", default=",".join(VENDORS))
    args = parser.parse_args()
    proc, url = spawn_simulator(args=("--latency", str(args.latency)))
    ideal = args.concurrency / args.latency
    results: dict[str, dict[str, float]] = {}
    try:
        results["raw httpx2 (no SDK)"] = await raw_baseline(url, args.concurrency, args.rounds)
        settings = VendorSettings(
            SWARM_SIMULATOR_URL=url, SWARM_LLM_MAX_CONNECTIONS=args.concurrency
        )
        for vendor in args.vendors.split(","):
            client = build_client(vendor, settings, MODELS[vendor])
            try:
                results[vendor] = await run_adapter(client, vendor, args.concurrency, args.rounds)
            finally:
                await client.aclose()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    print(
        f"adapter benchmark: C={args.concurrency} concurrent, simulator latency "
        f"{args.latency:g}s fixed, {args.rounds} rounds, Python {platform.python_version()}, "
        f"{os.cpu_count()} cores; ideal {ideal:,.0f} req/s"
    )
    print(f"{'client':<20}{'req/s':>10}{'of ideal':>10}{'client CPU ms/req':>20}{'failed':>8}")
    for vendor, r in results.items():
        print(
            f"{vendor:<20}{r['rps']:>10,.0f}{r['rps'] / ideal:>10.0%}"
            f"{r['cpu_ms_per_req']:>20.2f}{int(r['failures']):>8}"
        )
    adapters = {v: r for v, r in results.items() if v in VENDORS}
    worst = min(r["rps"] for r in adapters.values())
    emit(
        {
            "bench": "vendors",
            "concurrency": args.concurrency,
            "ideal_rps": ideal,
            "min_rps": round(worst, 1),
            "min_fraction_of_ideal": round(worst / ideal, 3),
            "rps": {v: round(r["rps"], 1) for v, r in results.items()},
            "cpu_ms_per_req": {v: round(r["cpu_ms_per_req"], 3) for v, r in results.items()},
            "failures": sum(int(r["failures"]) for r in results.values()),
        }
    )


if __name__ == "__main__":
    asyncio.run(main())
