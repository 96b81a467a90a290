"""The demo's closing table: per vendor tasks, tokens, cost and latency, the shard's share,
and the same work priced on one premium model. Read back from what the collector stored."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from shared.bus import streamids
from shared.bus.findings import TaskSummary, run_progress, run_task_statuses, task_view
from shared.llm.prices import PriceTable, price_usage
from shared.llm.types import Usage
from shared.protocol import ContextReply, Names, decode

PREMIUM_MODEL = "claude-opus-5-5"


@dataclass
class VendorRow:
    vendor: str
    models: set[str] = field(default_factory=set)
    ok: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cost_usd: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def tasks(self) -> int:
        return self.ok + self.failed

    def percentile(self, q: float) -> float:
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(q * len(xs)))] / 1000 if xs else 0.0


@dataclass
class Report:
    run_id: str
    expected: int
    rows: dict[str, VendorRow]
    findings_per_task: dict[str, int]  # task id -> distinct findings stored
    shard_queries: int
    shard_cost_usd: float
    shard_cache_read_tokens: int
    premium_cost_usd: float
    rejected: int
    dead_lettered: int

    @property
    def tasks_cost_usd(self) -> float:
        return sum(r.cost_usd for r in self.rows.values())

    @property
    def total_cost_usd(self) -> float:
        return self.tasks_cost_usd + self.shard_cost_usd

    @property
    def complete(self) -> bool:
        """Every task posted has exactly one finding."""
        return len(self.findings_per_task) == self.expected and all(
            n == 1 for n in self.findings_per_task.values()
        )

    def as_json(self, *, elapsed_s: float) -> dict[str, Any]:
        return {
            "demo": self.run_id,
            "tasks": self.expected,
            "finished": len(self.findings_per_task),
            "exactly_one_finding": self.complete,
            "elapsed_s": round(elapsed_s, 2),
            "vendors": {
                v: {
                    "tasks": r.tasks,
                    "ok": r.ok,
                    "failed": r.failed,
                    "input_tokens": r.input_tokens,
                    "output_tokens": r.output_tokens,
                    "cache_read_tokens": r.cache_read_tokens,
                    "cost_usd": round(r.cost_usd, 6),
                    "p50_s": round(r.percentile(0.5), 3),
                    "p95_s": round(r.percentile(0.95), 3),
                }
                for v, r in sorted(self.rows.items())
            },
            "shard_queries": self.shard_queries,
            "shard_cost_usd": round(self.shard_cost_usd, 6),
            "total_cost_usd": round(self.total_cost_usd, 6),
            "premium_model": PREMIUM_MODEL,
            "premium_cost_usd": round(self.premium_cost_usd, 6),
            "rejected": self.rejected,
            "dead_lettered": self.dead_lettered,
        }


async def build_report(redis: Redis, names: Names, run_id: str, prices: PriceTable) -> Report:
    progress = await run_progress(redis, names, run_id)
    statuses = await run_task_statuses(redis, names, run_id)
    rows: dict[str, VendorRow] = {}
    per_task: dict[str, int] = {}
    premium = prices.get(PREMIUM_MODEL)
    premium_cost = 0.0
    for task_id in sorted(statuses):
        view = await task_view(redis, names, task_id)
        if view is None:
            continue
        s: TaskSummary = view.summary
        per_task[task_id] = len(view.findings)
        row = rows.setdefault(s.vendor, VendorRow(s.vendor))
        row.models.add(s.model)
        row.ok += s.status == "ok"
        row.failed += s.status != "ok"
        row.input_tokens += s.input_tokens
        row.output_tokens += s.output_tokens
        row.cache_read_tokens += s.cache_read_tokens
        row.cost_usd += s.cost_usd or 0.0
        row.latencies_ms.append(s.latency_ms)
        if premium is not None:
            prompt = s.input_tokens + s.cache_read_tokens + s.cache_write_tokens
            premium_cost += (
                price_usage(
                    prices, premium.name, Usage(input_tokens=prompt, output_tokens=s.output_tokens)
                )
                or 0.0
            )
    shard_queries, shard_cost, shard_cached = 0, 0.0, 0
    async for key in redis.scan_iter(match=names.shard_reply("*"), count=1000):
        raw = await redis.get(key)
        if raw is None:
            continue
        reply = decode(ContextReply, json.loads(streamids.text(raw)))
        shard_queries += 1
        shard_cost += reply.cost_usd or 0.0
        shard_cached += reply.cache_read_tokens
        if premium is not None:  # the naive way: the whole context, uncached, every query
            prompt = reply.input_tokens + reply.cache_read_tokens + reply.cache_write_tokens
            premium_cost += (
                price_usage(
                    prices,
                    premium.name,
                    Usage(input_tokens=prompt, output_tokens=reply.output_tokens),
                )
                or 0.0
            )
    return Report(
        run_id=run_id,
        expected=progress.expected or len(statuses),
        rows=rows,
        findings_per_task=per_task,
        shard_queries=shard_queries,
        shard_cost_usd=shard_cost,
        shard_cache_read_tokens=shard_cached,
        premium_cost_usd=premium_cost,
        rejected=int(await redis.xlen(names.rejected)),
        dead_lettered=int(await redis.xlen(names.dead_letter)),
    )


def format_report(report: Report, *, elapsed_s: float, logs: Path, namespace: str) -> str:
    lines = [
        "",
        f"run {report.run_id}: {len(report.findings_per_task)}/{report.expected} tasks finished "
        f"in {elapsed_s:.1f}s",
        f"{'vendor':<10}{'model':<24}{'tasks':>6}{'failed':>7}{'in tok':>10}{'out tok':>9}"
        f"{'cached':>9}{'cost $':>11}{'p50 s':>7}{'p95 s':>7}",
    ]
    for v, r in sorted(report.rows.items()):
        lines.append(
            f"{v:<10}{', '.join(sorted(r.models)):<24}{r.tasks:>6}{r.failed:>7}"
            f"{r.input_tokens:>10,}{r.output_tokens:>9,}{r.cache_read_tokens:>9,}"
            f"{r.cost_usd:>11.5f}{r.percentile(0.5):>7.2f}{r.percentile(0.95):>7.2f}"
        )
    rows = report.rows.values()
    lines.append(
        f"{'all':<34}{sum(r.tasks for r in rows):>6}{sum(r.failed for r in rows):>7}"
        f"{sum(r.input_tokens for r in rows):>10,}{sum(r.output_tokens for r in rows):>9,}"
        f"{sum(r.cache_read_tokens for r in rows):>9,}{report.tasks_cost_usd:>11.5f}"
    )
    lines += [
        f"history shard: {report.shard_queries} context queries, "
        f"{report.shard_cache_read_tokens:,} tokens read from its cache, "
        f"${report.shard_cost_usd:.5f}",
        f"total cost ${report.total_cost_usd:.4f}; the same work on {PREMIUM_MODEL} alone "
        f"(context re-sent per query) ${report.premium_cost_usd:.4f}"
        + (
            f": {report.premium_cost_usd / report.total_cost_usd:.1f}x more"
            if report.total_cost_usd > 0
            else ""
        ),
        f"rejected at intake: {report.rejected} (the malformed task; `swarm dlq list --stream "
        f"rejected`), dead-lettered: {report.dead_lettered}",
        "every task has exactly one finding"
        if report.complete
        else "WARNING: not every task has exactly one finding",
        "findings: "
        f"SWARM_NAMESPACE={namespace} swarm findings --run {report.run_id}; "
        f"redis-cli HGETALL {namespace}:findings:<task_id>; {logs / 'findings.jsonl'}",
    ]
    return "\n".join(lines)
