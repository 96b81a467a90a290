"""Mega-shard cost and latency: cached context vs the naive full re-send, side by side.

For each case (a Gemini shard of ~200K and of ~900K tokens, and a Claude shard filling its
200K window) the context is loaded with the vendor's token counter, a real shard service
runs in this process, and 20 questions go to it over Redis Streams (ContextClient ->
shard -> reply stream) through the real SDK to the simulator. The baseline is the same 20
questions sent straight to the same model with the whole context in every request and no
caching (what the original design did).

Costs come from the usage each call reported, priced by the project's price table. The
cache's own cost is included: creation (billed once, as input) and, for Gemini, storage per
token-hour. Storage depends on time, so it is charged at the default query rate (one query
per shard every DEFAULT_INTERVAL_S seconds) plus a full TTL of idle tail after the last
query; latency is measured wall time per query (SDK + HTTP + simulator + Redis), with no
vendor prefill time modelled unless --prefill-s-per-mtok is given.

    python bench/megashard.py [--queries 20] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
import uuid
from dataclasses import dataclass

from benchlib import emit
from redis.asyncio import Redis

from services.cli.redis_finder import find_redis
from services.megashard.corpus import SYSTEM_PROMPT, Document, render
from services.megashard.load import load_context
from services.megashard.service import run_megashard
from services.megashard.settings import ShardSettings
from services.megashard.store import ContextStore
from services.simulator.config import SimulatorConfig
from services.simulator.server import Simulator
from shared.bus import Bus
from shared.bus.context_client import ContextClient
from shared.llm.prices import PriceTable, cache_storage_usd, price_usage
from shared.llm.registry import build_client, price_table
from shared.llm.settings import VendorSettings
from shared.llm.types import LLMRequest, Usage
from shared.protocol import Names, Status
from shared.runtime.logging import configure_logging
from shared.runtime.metrics import Metrics
from shared.runtime.redis import connect
from shared.runtime.settings import BusSettings, SwarmSettings

DEFAULT_INTERVAL_S = 10.0  # the default query rate: one query per shard every 10 s
TARGET_RATIO = 0.15
CASES = (
    ("gemini", "gemini-2.5-flash-lite", 200_000),
    ("gemini", "gemini-2.5-flash-lite", 900_000),
    ("claude", "claude-haiku-4-5", 190_000),  # 200K window minus the query/answer reserve
)
QUESTIONS = (
    "Which region had the most failover incidents?",
    "Summarise the supplier contract changes.",
    "What did the audit say about the ledger?",
    "When did latency budgets get breached?",
)
_WORDS = [
    "ledger",
    "invoice",
    "supplier",
    "contract",
    "payment",
    "terms",
    "outage",
    "incident",
    "database",
    "failover",
    "latency",
    "budget",
    "quarter",
    "audit",
    "region",
    "cluster",
    "deploy",
    "rollback",
    "capacity",
    "forecast",
]


def corpus(tokens: int) -> list[Document]:
    """Documents of ~10K simulator tokens each (4 characters a token) adding up to `tokens`."""
    docs, chars_left, i = [], tokens * 4 - 2000, 0
    while chars_left > 0:
        size = min(40_000, chars_left)
        words = " ".join(_WORDS[(j * 7 + i) % len(_WORDS)] for j in range(size // 6))
        docs.append(Document(f"ops/{2019 + i % 6}/report-{i:03d}.md", words[:size]))
        chars_left -= size + 40
        i += 1
    return docs


@dataclass
class Side:
    latencies_s: list[float]
    costs: list[float]  # per query, storage excluded
    usages: list[Usage]

    def p(self, q: float) -> float:
        xs = sorted(self.latencies_s)
        return xs[min(len(xs) - 1, int(q * len(xs)))]


async def cached_side(
    redis: Redis, url: str, names: Names, vendors: VendorSettings, shard: str, n: int
) -> tuple[Side, int]:
    stop = asyncio.Event()
    swarm = SwarmSettings(
        REDIS_URL=url, SWARM_NAMESPACE=names.namespace, METRICS_PORT=0, LOG_LEVEL="error"
    )
    bus = BusSettings(block_ms=200, heartbeat_interval_s=0.5, heartbeat_ttl_s=3)
    service = asyncio.create_task(run_megashard(stop, swarm, bus, ShardSettings(id=shard), vendors))
    side = Side([], [], [])
    tokens = 0
    try:
        client_bus = Bus(redis, names, bus, Metrics.create())
        async with ContextClient(client_bus, requester_id=f"bench-{shard}") as ctx:
            for i in range(n):
                started = time.perf_counter()
                reply = await ctx.ask(shard, QUESTIONS[i % len(QUESTIONS)], timeout_s=300)
                side.latencies_s.append(time.perf_counter() - started)
                assert reply.status is Status.OK, reply.error
                usage = Usage(
                    input_tokens=reply.input_tokens,
                    output_tokens=reply.output_tokens,
                    cache_read_tokens=reply.cache_read_tokens,
                    cache_write_tokens=reply.cache_write_tokens,
                )
                side.usages.append(usage)
                cost = price_usage(price_table(vendors), reply.model, usage)
                assert cost is not None
                side.costs.append(cost)
                tokens = reply.context_tokens_searched
    finally:
        stop.set()
        await service
    return side, tokens


async def naive_side(
    vendors: VendorSettings, vendor: str, model: str, context: str, n: int, prices: PriceTable
) -> Side:
    llm = build_client(vendor, vendors, model)
    side = Side([], [], [])
    try:
        for i in range(n):
            request = LLMRequest(
                prompt=QUESTIONS[i % len(QUESTIONS)],
                model=model,
                system=SYSTEM_PROMPT,
                context=context,
                cache_context=False,
                max_output_tokens=4096,
            )
            started = time.perf_counter()
            res = await llm.complete(request)
            side.latencies_s.append(time.perf_counter() - started)
            cost = price_usage(prices, res.model, res.usage)
            assert cost is not None and res.usage.cache_read_tokens == 0
            side.costs.append(cost)
            side.usages.append(res.usage)
    finally:
        await llm.aclose()
    return side


async def run_case(
    url: str, vendors: VendorSettings, vendor: str, model: str, target: int, n: int
) -> dict[str, float | int | str]:
    names = Names(f"bench-shard-{uuid.uuid4().hex[:8]}")
    redis = connect(url, BusSettings())
    prices = price_table(vendors)
    price = prices.get(model)
    assert price is not None
    shard = f"{vendor}-{target // 1000}k"
    docs = corpus(target)
    try:
        llm = build_client(vendor, vendors, model)
        try:
            manifest = await load_context(
                ContextStore(redis, names), llm, prices, shard=shard, documents=docs, model=model
            )
        finally:
            await llm.aclose()
        cached, tokens = await cached_side(redis, url, names, vendors, shard, n)
        naive = await naive_side(vendors, vendor, model, render(docs), n, prices)
    finally:
        keys = [k async for k in redis.scan_iter(match=f"{names.namespace}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
    ttl = ShardSettings().cache_ttl_s
    per_interval = cache_storage_usd(price, tokens, DEFAULT_INTERVAL_S) or 0.0
    tail = cache_storage_usd(price, tokens, ttl) or 0.0
    storage_total = per_interval * (n - 1) + tail if vendor == "gemini" else 0.0
    cached_total = sum(cached.costs) + storage_total
    naive_total = sum(naive.costs)
    steady = statistics.median(cached.costs[1:]) + (per_interval if vendor == "gemini" else 0)
    naive_each = statistics.median(naive.costs)
    read_part = statistics.median(cached.costs[1:])
    # Longest interval between queries at which a steady-state query still costs <= 15%.
    storage_per_s = per_interval / DEFAULT_INTERVAL_S
    break_even = (
        (TARGET_RATIO * naive_each - read_part) / storage_per_s if storage_per_s else float("inf")
    )
    return {
        "case": f"{vendor} {model}",
        "tokens": manifest.tokens,
        "naive_p50_s": naive.p(0.5),
        "naive_p95_s": naive.p(0.95),
        "cached_p50_s": cached.p(0.5),
        "cached_p95_s": cached.p(0.95),
        "naive_usd_per_query": naive_each,
        "cached_usd_per_query_steady": steady,
        "steady_ratio": steady / naive_each,
        "naive_usd_total": naive_total,
        "cached_usd_total": cached_total,
        "total_ratio": cached_total / naive_total,
        "creation_usd": cached.costs[0] - read_part,
        "break_even_interval_s": break_even,
    }


async def main_async(args: argparse.Namespace, url: str) -> list[dict[str, float | int | str]]:
    config = SimulatorConfig(seed=11)
    if args.prefill_s_per_mtok:
        config = config.model_copy(
            update={
                "defaults": config.defaults.model_copy(
                    update={"prefill_s_per_mtok": args.prefill_s_per_mtok}
                )
            }
        )
    sim = Simulator(config)
    await sim.start()
    try:
        vendors = VendorSettings(SWARM_SIMULATOR_URL=sim.base_url, SWARM_LLM_TIMEOUT_S=300)
        return [
            await run_case(url, vendors, vendor, model, target, args.queries)
            for vendor, model, target in CASES
        ]
    finally:
        await sim.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--prefill-s-per-mtok", type=float, default=0.0)
    args = parser.parse_args()
    configure_logging("error", json=False)
    with find_redis(args.redis_url) as url:
        rows = asyncio.run(main_async(args, url))
    print(
        f"mega-shard benchmark: {args.queries} queries per case, cached (shard service over "
        f"Redis) vs naive re-send; Python {platform.python_version()}, {os.cpu_count()} cores"
    )
    print(
        f"storage charged at one query per {DEFAULT_INTERVAL_S:g} s plus a "
        f"{ShardSettings().cache_ttl_s:g} s idle tail; latency is wall time per query"
    )
    head = (
        f"{'case':<30}{'tokens':>9}{'naive p50':>11}{'cached p50':>11}{'naive p95':>11}"
        f"{'cached p95':>11}{'naive $/q':>11}{'cached $/q':>11}{'ratio':>7}"
        f"{'naive $20':>10}{'cached $20':>11}{'ratio':>7}{'≤15% if q every':>17}"
    )
    print(head)
    for r in rows:
        print(
            f"{r['case']:<30}{r['tokens']:>9,}{r['naive_p50_s']:>10.3f}s{r['cached_p50_s']:>10.3f}s"
            f"{r['naive_p95_s']:>10.3f}s{r['cached_p95_s']:>10.3f}s"
            f"{r['naive_usd_per_query']:>11.5f}{r['cached_usd_per_query_steady']:>11.5f}"
            f"{r['steady_ratio']:>7.1%}{r['naive_usd_total']:>10.4f}{r['cached_usd_total']:>11.4f}"
            f"{r['total_ratio']:>7.1%}{_interval(float(r['break_even_interval_s'])):>17}"
        )
    print(
        "cached $/q: a query after the first (cache read + output + storage for one interval); "
        "$20: all queries, cache creation and idle tail included"
    )
    emit(
        {
            "bench": "megashard",
            "queries": args.queries,
            "cases": [
                {k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()}
                for r in rows
            ],
            "max_steady_ratio": round(max(float(r["steady_ratio"]) for r in rows), 4),
        }
    )


def _interval(seconds: float) -> str:
    if seconds == float("inf"):
        return "any rate"
    if seconds <= 0:
        return "never"
    return f"≤{seconds:,.0f} s"


if __name__ == "__main__":
    main()
