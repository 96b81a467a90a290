"""`swarm findings TASK_ID | --run RUN` and `swarm status TASK_ID`: what the swarm found, read
from the collector's records (`shared.bus.findings`) and the dispatcher's task record."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from services.cli.errors import CliError
from services.cli.status import connected, run_async, text
from shared.bus.findings import (
    RunProgress,
    TaskSummary,
    TaskView,
    run_progress,
    run_task_statuses,
    task_view,
)
from shared.protocol import Finding, Names

_CHUNK = 100  # task views fetched at once


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "findings",
        help="every finding of a task, or a run's progress and its tasks",
        description="TASK_ID: every finding of the task, newest last (status, vendor/model, "
        "tokens, cost, latency, the answer). --run RUN: the run's progress and one line per "
        "finished task. Reads what the collector stored (swarm run collector). Uses REDIS_URL "
        "and SWARM_NAMESPACE. Exit code 1 if there is nothing yet.",
    )
    p.add_argument("task_id", metavar="TASK_ID", nargs="?", help="a task's id")
    p.add_argument("--run", metavar="RUN", help="a run's id (or type:<task_type>)")
    p.add_argument("--json", action="store_true", help="print it as JSON")


def run(args: argparse.Namespace) -> int:
    if (args.task_id is None) == (args.run is None):
        raise CliError("give a TASK_ID or --run RUN (one of them)")
    if args.run is not None:
        return run_async(_run_findings(args.run, as_json=args.json))
    return run_async(_task_findings(args.task_id, as_json=args.json))


def task_status(task_id: str, *, as_json: bool) -> int:
    """`swarm status TASK_ID`: the dispatcher's record, the collector's summary, findings."""
    return run_async(_task_status(task_id, as_json=as_json))


# -- reading ---------------------------------------------------------------------------------


async def task_record(redis: Redis, names: Names, task_id: str) -> dict[str, str]:
    """The dispatcher's record of the task (state, routing), {} if there is none."""
    raw = await redis.hgetall(names.task(task_id))
    return {text(k): text(v) for k, v in raw.items() if not text(k).startswith("entry:")}


async def task_views(redis: Redis, names: Names, task_ids: list[str]) -> dict[str, TaskView]:
    """The collector's view of each task that has one, fetched a chunk at a time."""
    out: dict[str, TaskView] = {}
    for i in range(0, len(task_ids), _CHUNK):
        chunk = task_ids[i : i + _CHUNK]
        views = await asyncio.gather(*(task_view(redis, names, t) for t in chunk))
        out.update({t: v for t, v in zip(chunk, views, strict=True) if v is not None})
    return out


async def run_views(redis: Redis, names: Names, run_id: str) -> tuple[RunProgress, list[TaskView]]:
    progress = await run_progress(redis, names, run_id)
    statuses = await run_task_statuses(redis, names, run_id)
    views = await task_views(redis, names, sorted(statuses))
    return progress, sorted(views.values(), key=lambda v: (v.summary.updated_at, v.summary.task_id))


# -- commands --------------------------------------------------------------------------------


async def _task_findings(task_id: str, *, as_json: bool) -> int:
    async with connected() as s:
        view = await task_view(s.redis, s.names, task_id)
        record = await task_record(s.redis, s.names, task_id) if view is None else {}
    if view is None:
        if as_json:
            print(json.dumps({"task_id": task_id, "summary": None, "findings": []}))
        else:
            print(f"no findings of task {task_id} yet{_state_note(record)}")
        return 1
    if as_json:
        data = task_json(task_id, {}, view)
        print(json.dumps({k: data[k] for k in ("task_id", "summary", "findings")}, indent=2))
        return 0
    print(f"task {task_id}: {len(view.findings)} finding(s), newest last")
    for f in view.findings:
        print()
        print("\n".join(format_finding(f)))
    return 0


async def _run_findings(run_id: str, *, as_json: bool) -> int:
    async with connected() as s:
        progress, views = await run_views(s.redis, s.names, run_id)
    if as_json:
        print(json.dumps(run_json(progress, views), indent=2))
    else:
        print("\n".join(format_run(progress, views)))
    return 0 if views or progress.expected is not None else 1


async def _task_status(task_id: str, *, as_json: bool) -> int:
    async with connected() as s:
        record = await task_record(s.redis, s.names, task_id)
        view = await task_view(s.redis, s.names, task_id)
    if not record and view is None:
        raise CliError(
            f"no record of task {task_id!r} in namespace {s.names.namespace!r} "
            "(unknown, expired, or posted straight to a vendor stream)"
        )
    if as_json:
        print(json.dumps(task_json(task_id, record, view), indent=2))
    else:
        print("\n".join(format_task(task_id, record, view, all_findings=True)))
    return 0


# -- formatting ------------------------------------------------------------------------------


def task_json(task_id: str, record: dict[str, str], view: TaskView | None) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "record": record or None,
        "summary": asdict(view.summary) if view else None,
        "findings": [f.model_dump(mode="json") for f in view.findings] if view else [],
    }


def run_json(progress: RunProgress, views: list[TaskView]) -> dict[str, Any]:
    return {
        **asdict(progress),
        "complete": progress.complete,
        "pending": _pending(progress),
        "tasks": tasks_json(views),
    }


def tasks_json(views: list[TaskView]) -> list[dict[str, Any]]:
    return [{**asdict(v.summary), "answer": _answer(v)} for v in views]


def format_task(
    task_id: str, record: dict[str, str], view: TaskView | None, *, all_findings: bool
) -> list[str]:
    """The record, the summary and (all of, or the winning) findings of one task."""
    lines = [f"task {task_id}"]
    if record:
        updated = _when(record.get("updated_at"))
        lines.append(
            f"  state        {record.get('state', '?')}" + (f" (at {updated})" if updated else "")
        )
        vendor, model = record.get("vendor"), record.get("model")
        if vendor:
            est = record.get("estimated_cost_usd")
            extra = ", ".join(
                x for x in (record.get("complexity", ""), _estimate(est) if est else "") if x
            )
            lines.append(f"  routed to    {vendor}/{model}" + (f" ({extra})" if extra else ""))
        if record.get("reason"):
            lines.append(f"  why          {record['reason']}")
        if record.get("worker"):
            lines.append(f"  worker       {record['worker']}")
    else:
        lines.append("  (no dispatcher record: expired, or posted straight to a vendor stream)")
    if view is None:
        lines.append("  no finding yet")
        return lines
    lines += format_summary(view.summary)
    if all_findings:
        lines += ["", f"findings ({len(view.findings)}, newest last):"]
        for f in view.findings:
            lines += ["", *format_finding(f)]
    else:
        lines += ["", "answer:", *_indent(_answer(view) or "(empty)")]
    return lines


def format_summary(s: TaskSummary) -> list[str]:
    lines = [
        f"  result       {s.status}  {s.vendor}/{s.model}"
        + (f"  by {s.worker}" if s.worker else ""),
        f"  tokens       {s.input_tokens:,} in, {s.output_tokens:,} out, "
        f"{s.cache_read_tokens:,} cache read, {s.cache_write_tokens:,} cache write",
        f"  cost         {cost_text(s.cost_usd)}",
        f"  latency      {s.latency_ms / 1000:.2f} s, {s.attempts or 1} attempt(s)",
    ]
    if s.run_id or s.task_type:
        lines.append(f"  run          {s.run_id or '-'} (type {s.task_type or 'general'})")
    if s.duplicate_findings:
        lines.append(
            f"  duplicates   {s.duplicate_findings} more finding(s), "
            f"{cost_text(s.duplicate_cost_usd)} of duplicate work"
        )
    return lines


def format_finding(f: Finding) -> list[str]:
    head = (
        f"  {f.timestamp.strftime('%Y-%m-%d %H:%M:%S')}  {f.status.value:<6}  "
        f"{f.vendor}/{f.model}  {f.tokens_used:,} tokens ({f.input_tokens:,} in, "
        f"{f.output_tokens:,} out, {f.cache_read_tokens:,} cached)  {cost_text(f.cost_usd)}  "
        f"{f.latency_ms / 1000:.2f} s  attempt {f.attempt}  {f.finding_id}"
    )
    lines = [head]
    if f.error:
        lines.append(f"    error: {f.error}")
    lines += _indent(f.summary or "(no summary)", "    ")
    if f.sources:
        lines.append(f"    sources: {'; '.join(f.sources)}")
    return lines


def format_run(progress: RunProgress, views: list[TaskView]) -> list[str]:
    return [progress_text(progress), *format_tasks(views)]


def format_tasks(views: list[TaskView]) -> list[str]:
    """One line per finished task, then the totals."""
    if not views:
        return []
    lines = []
    lines.append(
        f"{'TASK':<28} {'STATUS':<6} {'VENDOR/MODEL':<34} {'TOKENS':>9} {'COST':>11} "
        f"{'LATENCY':>8}  ANSWER"
    )
    for v in views:
        s = v.summary
        lines.append(
            f"{s.task_id:<28} {s.status:<6} {s.vendor + '/' + s.model:<34} "
            f"{s.input_tokens + s.output_tokens:>9,} {cost_text(s.cost_usd):>11} "
            f"{s.latency_ms / 1000:>6.2f} s  {_snippet(_answer(v))}"
        )
    lines.append(totals_text([v.summary for v in views]))
    return lines


def progress_text(p: RunProgress) -> str:
    of = "?" if p.expected is None else f"{p.expected:,}"
    text = f"run {p.run_id}: {p.finished:,} of {of} finished ({p.ok:,} ok, {p.failed:,} failed)"
    if p.expected is None:
        return text + "; expected count unknown (posted without swarm post --run)"
    pending = _pending(p)
    return text + (f", {pending:,} pending" if pending else ", complete")


def totals_text(summaries: list[TaskSummary]) -> str:
    ok = sum(1 for s in summaries if s.status == "ok")
    tokens_in = sum(s.input_tokens for s in summaries)
    tokens_out = sum(s.output_tokens for s in summaries)
    cost = sum(s.cost_usd or 0.0 for s in summaries)
    unpriced = sum(1 for s in summaries if s.cost_usd is None)
    text = (
        f"total: {len(summaries):,} tasks, {ok:,} ok, {len(summaries) - ok:,} failed; "
        f"{tokens_in:,} tokens in, {tokens_out:,} out; {cost_text(cost)}"
    )
    return text + (f" (+ {unpriced:,} unpriced)" if unpriced else "")


def cost_text(cost: float | None) -> str:
    return "unpriced" if cost is None else f"${cost:,.6f}"


def _answer(view: TaskView) -> str:
    """The winning finding's answer (its error if it failed)."""
    for f in reversed(view.findings):
        if f.finding_id == view.summary.finding_id:
            return f.summary or (f.error or "")
    return ""


def _pending(p: RunProgress) -> int:
    return 0 if p.expected is None else max(0, p.expected - p.finished)


def _state_note(record: dict[str, str]) -> str:
    if not record:
        return " (no record of it either: unknown id, expired, or not posted yet)"
    where = f" at {record['vendor']}/{record.get('model', '')}" if record.get("vendor") else ""
    return f" (state: {record.get('state', '?')}{where})"


def _snippet(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _indent(text: str, prefix: str = "  ") -> list[str]:
    return [prefix + line for line in text.strip("\n").splitlines()] or [prefix]


def _when(raw: str | None) -> str:
    try:
        return datetime.fromtimestamp(float(raw or ""), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return ""


def _estimate(text: str) -> str:
    """A task record's estimated cost: dollars, or unpriced (an operator model)."""
    try:
        return f"est. ${float(text):.6f}"
    except ValueError:
        return f"est. {text}"
