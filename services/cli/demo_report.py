"""The demo's closing table: per vendor tasks, tokens, cost and latency, the calls that failed
and the tasks that failed over elsewhere, the shard's share, and the same work priced on the
original design's baseline (all on one fast, cheap model: the cheapest Claude Haiku) and on
one premium model. Read back from Redis: the collector's summaries and findings, and the
tasks as workers handed them back to the intake stream with their attempt history."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from shared.bus import streamids
from shared.bus.findings import TaskSummary, run_progress, run_task_statuses, task_view
from shared.llm.prices import PriceTable, price_usage
from shared.llm.types import Usage
from shared.protocol import ContextReply, DecodeError, Names, Task, decode

PREMIUM_MODEL = "claude-opus-5-5"
_PAGE = 1000
BASELINE_FAMILY = ("claude", "haiku")  # the original design's swarm: all Claude Haiku
DESIGN_CLAIM = (
    "3-5\N{MULTIPLICATION SIGN} cheaper"  # the original design's benefits table, against all-Haiku
)


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
    # Calls to this vendor that failed: retried here (the task then finished here), or
    # given up on (the task failed over elsewhere, or failed). `errors`: why it gave up.
    retried_calls: int = 0
    given_up_calls: int = 0
    given_up_after_retries: int = 0  # gave up on a retryable error: earlier tries uncounted
    failed_over_to: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def tasks(self) -> int:
        return self.ok + self.failed

    @property
    def failed_calls(self) -> int:
        return self.retried_calls + self.given_up_calls

    @property
    def failed_over(self) -> int:
        return sum(self.failed_over_to.values())

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
    baseline_model: str | None  # the cheapest Claude Haiku for this work
    baseline_cost_usd: float
    baseline_tasks_cost_usd: float  # the tasks alone, without the shard's queries
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
                    "failed_calls": r.failed_calls,
                    "failed_calls_exact": not r.given_up_after_retries,
                    "retried_calls": r.retried_calls,
                    "failed_over": r.failed_over,
                    "failed_over_to": dict(r.failed_over_to),
                    "errors": dict(r.errors),
                }
                for v, r in sorted(self.rows.items())
            },
            "shard_queries": self.shard_queries,
            "shard_cost_usd": round(self.shard_cost_usd, 6),
            "total_cost_usd": round(self.total_cost_usd, 6),
            "premium_model": PREMIUM_MODEL,
            "premium_cost_usd": round(self.premium_cost_usd, 6),
            "premium_ratio": _ratio(self.premium_cost_usd, self.total_cost_usd),
            "baseline_model": self.baseline_model,
            "baseline_cost_usd": round(self.baseline_cost_usd, 6),
            "baseline_ratio": _ratio(self.baseline_cost_usd, self.total_cost_usd),
            "baseline_tasks_cost_usd": round(self.baseline_tasks_cost_usd, 6),
            "baseline_tasks_ratio": _ratio(self.baseline_tasks_cost_usd, self.tasks_cost_usd),
            "design_claim": f"{DESIGN_CLAIM} than all-Haiku",
            "rejected": self.rejected,
            "dead_lettered": self.dead_lettered,
        }


async def build_report(
    redis: Redis,
    names: Names,
    run_id: str,
    prices: PriceTable,
    vendors: tuple[str, ...] = (),
) -> Report:
    """The run's report; `vendors` (those with workers) get a row even with no task."""
    progress = await run_progress(redis, names, run_id)
    statuses = await run_task_statuses(redis, names, run_id)
    rows: dict[str, VendorRow] = {v: VendorRow(v) for v in vendors}
    per_task: dict[str, int] = {}
    usages: list[Usage] = []  # every task's tokens, its whole prompt uncached
    final_vendor: dict[str, str] = {}
    for task_id in sorted(statuses):
        view = await task_view(redis, names, task_id)
        if view is None:
            continue
        s: TaskSummary = view.summary
        per_task[task_id] = len(view.findings)
        final_vendor[task_id] = s.vendor
        row = rows.setdefault(s.vendor, VendorRow(s.vendor))
        row.models.add(s.model)
        row.ok += s.status == "ok"
        row.failed += s.status != "ok"
        row.input_tokens += s.input_tokens
        row.output_tokens += s.output_tokens
        row.cache_read_tokens += s.cache_read_tokens
        row.cost_usd += s.cost_usd or 0.0
        row.latencies_ms.append(s.latency_ms)
        if s.status == "ok":  # its tries before the one that answered failed, and were retried
            row.retried_calls += max(s.attempts - 1, 0)
        elif s.vendor != "dispatcher":  # it gave up here: every try failed
            row.given_up_calls += s.attempts
            finding = next((f for f in view.findings if f.finding_id == s.finding_id), None)
            row.errors[_last_error(finding.error if finding else None, s.vendor)] += 1
        prompt = s.input_tokens + s.cache_read_tokens + s.cache_write_tokens
        usages.append(Usage(input_tokens=prompt, output_tokens=s.output_tokens))
    async for task in _handed_back(redis, names, run_id):
        for record in task.history:
            row = rows.setdefault(record.vendor, VendorRow(record.vendor))
            row.given_up_calls += 1
            row.given_up_after_retries += record.retryable
            row.errors[record.error] += 1
            row.failed_over_to[final_vendor.get(task.task_id, "unfinished")] += 1
    shard_queries, shard_cost, shard_cached = 0, 0.0, 0
    tasks_only = list(usages)
    async for key in redis.scan_iter(match=names.shard_reply("*"), count=1000):
        raw = await redis.get(key)
        if raw is None:
            continue
        reply = decode(ContextReply, json.loads(streamids.text(raw)))
        shard_queries += 1
        shard_cost += reply.cost_usd or 0.0
        shard_cached += reply.cache_read_tokens
        # The naive way: the whole context, uncached, every query.
        prompt = reply.input_tokens + reply.cache_read_tokens + reply.cache_write_tokens
        usages.append(Usage(input_tokens=prompt, output_tokens=reply.output_tokens))
    baseline = _cheapest(prices, usages, *BASELINE_FAMILY)
    baseline_tasks = _priced(prices, baseline[0], tasks_only) if baseline else 0.0
    return Report(
        run_id=run_id,
        expected=progress.expected or len(statuses),
        rows=rows,
        findings_per_task=per_task,
        shard_queries=shard_queries,
        shard_cost_usd=shard_cost,
        shard_cache_read_tokens=shard_cached,
        premium_cost_usd=_priced(prices, PREMIUM_MODEL, usages),
        baseline_model=baseline[0] if baseline else None,
        baseline_cost_usd=baseline[1] if baseline else 0.0,
        baseline_tasks_cost_usd=baseline_tasks,
        rejected=int(await redis.xlen(names.rejected)),
        dead_lettered=int(await redis.xlen(names.dead_letter)),
    )


async def _handed_back(redis: Redis, names: Names, run_id: str) -> AsyncIterator[Task]:
    """Each of the run's tasks that a worker handed back (`swarm:reroutes`; workers of
    earlier releases, the intake stream), a failed vendor excluded and the failed try in
    `history`, as it was last handed back: its history holds every earlier one."""
    last: dict[str, Task] = {}
    for stream in (names.reroutes, names.intake):
        start = "-"
        while True:
            raw: Any = await redis.xrange(stream, min=start, count=_PAGE)
            page: list[tuple[bytes, dict[bytes, bytes]]] = list(raw or [])
            for _, fields in page:
                try:
                    task = decode(Task, fields)
                except DecodeError:
                    continue  # the malformed task, rejected at intake
                seen = last.get(task.task_id)
                if (
                    task.run_id == run_id
                    and task.history
                    and (seen is None or task.attempt > seen.attempt)
                ):
                    last[task.task_id] = task
            if len(page) < _PAGE:
                break
            start = "(" + page[-1][0].decode()
    for task in last.values():
        yield task


def _last_error(error: str | None, vendor: str) -> str:
    """The vendor's own error from a failed finding's `vendor: error; vendor: error`."""
    last = (error or "no error given").rsplit("; ", 1)[-1]
    return last.removeprefix(f"{vendor}: ")


def _priced(prices: PriceTable, model: str, usages: list[Usage]) -> float:
    return sum(price_usage(prices, model, u) or 0.0 for u in usages)


def _cheapest(
    prices: PriceTable, usages: list[Usage], vendor: str, family: str
) -> tuple[str, float] | None:
    """The vendor's model of this family that would have cost least for these calls."""
    today = datetime.now(UTC).date()
    costs = [
        (_priced(prices, m.name, usages), m.name)
        for m in prices.models_for(vendor, on=today)
        if family in m.name
    ]
    if not costs:
        return None
    cost, model = min(costs)
    return model, cost


def _ratio(baseline: float, measured: float) -> float | None:
    """How many times cheaper the run was than `baseline` (below 1: dearer)."""
    return round(baseline / measured, 3) if measured > 0 else None


def _compared(baseline: float, measured: float) -> str:
    ratio = _ratio(baseline, measured)
    if ratio is None:
        return "not comparable (nothing was spent)"
    if ratio >= 1:
        return f"{ratio:.1f}x cheaper"
    return f"{1 / ratio:.1f}x dearer"


def format_report(report: Report, *, elapsed_s: float, logs: Path, namespace: str) -> str:
    models = {v: ", ".join(sorted(r.models)) or "-" for v, r in report.rows.items()}
    w = max([22, *(len(m) for m in models.values())]) + 2
    lines = [
        "",
        f"run {report.run_id}: {len(report.findings_per_task)}/{report.expected} tasks finished "
        f"in {elapsed_s:.1f}s",
        f"{'vendor':<10}{'model':<{w}}{'tasks':>6}{'failed':>7}{'in tok':>10}{'out tok':>9}"
        f"{'cached':>9}{'cost $':>11}{'p50 s':>7}{'p95 s':>7}",
    ]
    for v, r in sorted(report.rows.items()):
        latency = f"{r.percentile(0.5):>7.2f}{r.percentile(0.95):>7.2f}" if r.latencies_ms else ""
        lines.append(
            f"{v:<10}{models[v]:<{w}}{r.tasks:>6}{r.failed:>7}"
            f"{r.input_tokens:>10,}{r.output_tokens:>9,}{r.cache_read_tokens:>9,}"
            f"{r.cost_usd:>11.5f}{latency}"
        )
    rows = report.rows.values()
    lines.append(
        f"{'all':<{10 + w}}{sum(r.tasks for r in rows):>6}{sum(r.failed for r in rows):>7}"
        f"{sum(r.input_tokens for r in rows):>10,}{sum(r.output_tokens for r in rows):>9,}"
        f"{sum(r.cache_read_tokens for r in rows):>9,}{report.tasks_cost_usd:>11.5f}"
    )
    lines += _failures(report, logs)
    lines += [
        f"history shard: {report.shard_queries} context queries, "
        f"{report.shard_cache_read_tokens:,} tokens read from its cache, "
        f"${report.shard_cost_usd:.5f}",
        f"total cost ${report.total_cost_usd:.4f} (tasks ${report.tasks_cost_usd:.4f}, history "
        f"shard ${report.shard_cost_usd:.4f}); the same work on one model, the shard's context "
        "re-sent per query:",
    ]
    if report.baseline_model is not None:
        lines.append(
            f"  {report.baseline_model}, the original design's all-Haiku baseline (its cheapest "
            f"Haiku): ${report.baseline_cost_usd:.4f}, so this run was "
            f"{_compared(report.baseline_cost_usd, report.total_cost_usd)}; the tasks alone "
            f"${report.baseline_tasks_cost_usd:.4f} against the run's "
            f"${report.tasks_cost_usd:.4f}: "
            f"{_compared(report.baseline_tasks_cost_usd, report.tasks_cost_usd)} "
            f'(the design claimed "{DESIGN_CLAIM}")'
        )
    lines += [
        f"  {PREMIUM_MODEL}, one premium model: ${report.premium_cost_usd:.4f}, so this run was "
        f"{_compared(report.premium_cost_usd, report.total_cost_usd)}",
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


def _failures(report: Report, logs: Path) -> list[str]:
    """Per vendor whose calls failed: how many, the tasks that failed over and where to,
    and each error (most frequent first). A retried call's error is only in its log."""
    failing = [r for _, r in sorted(report.rows.items()) if r.failed_calls]
    if not failing:
        return ["failed calls: none"]
    lines = ["failed calls:"]
    for r in failing:
        more = "+" if r.given_up_after_retries else ""
        parts = [f"{r.failed_calls}{more} failed"]
        if r.retried_calls:
            parts.append(
                f"{r.retried_calls} retried here (why: `vendor.retry` in "
                f"{logs / f'worker-{r.vendor}.log'})"
            )
        if r.failed_over:
            to = ", ".join(f"{v} {n}" for v, n in r.failed_over_to.most_common())
            parts.append(f"{r.failed_over} tasks failed over elsewhere ({to})")
        lines.append(f"  {r.vendor:<10}{'; '.join(parts)}")
        lines += [f"    {n}x {_clip(e)}" for e, n in r.errors.most_common(3)]
    if any(r.given_up_after_retries for r in failing):
        lines.append("  (+: a task that failed over after retries counts only its last try)")
    return lines


def _clip(text: str, width: int = 150) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
