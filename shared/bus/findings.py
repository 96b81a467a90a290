"""The findings collector's records, read back: one task, a run's progress, totals per model.

The collector (`swarm run collector`) writes these keys, each finding once; this module is
the read side, shared by the collector and the `swarm` CLI, plus `expect_run`, which whoever
posts a run calls so that completion can be told.

* `task_summary(task_id)`: the task's winning finding (an ok one beats a failed one), its
  tokens and cost, and any duplicate work (a second finding of a finished task).
* `run_tasks(run_id)`: task id -> status; `run_info(run_id)`: `expected`, `finished`, `ok`,
  `failed`. A finding without a run id is grouped under `type:<task_type>`: its counts in
  `run_info("type:<task_type>")`, its task list in one hash per UTC day,
  `run_tasks("type:<task_type>@<YYYYMMDD>")`, so that a task type that never stops getting
  tasks keeps a bounded list (each day's hash expires with the retention, as a run does).
* `totals`: `<vendor>|<model>|<kind>` -> number, for each kind in `TOTAL_KINDS`. The
  token, cost and latency kinds add up the findings that count for their task (the first,
  and an ok one that supersedes a failed one); duplicate work is kept apart, so `cost_usd`
  plus `duplicate_cost_usd` is what was spent. A finding of an unpriced model adds its
  tokens and one to `unpriced`, never $0 to `cost_usd`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis

from shared.bus import streamids
from shared.protocol import Finding, Names

TYPE_RUN_PREFIX = "type:"
# How long the collector keeps a task's and a run's keys after their last finding
# (`SWARM_COLLECTOR_RETENTION_S`), as long as the workers' done-markers last.
DEFAULT_RETENTION_S = 7 * 86400.0
UNPRICED = "unpriced"
TOTAL_KINDS = (
    "tasks",
    "failed",
    "cancelled",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_usd",
    "unpriced",
    "latency_ms",
    "duplicate_findings",
    "duplicate_cost_usd",
)


def type_run_id(task_type: str) -> str:
    """The run id under which tasks of `task_type` that name no run are grouped."""
    return f"{TYPE_RUN_PREFIX}{task_type}"


def run_id_of(finding: Finding) -> str:
    """The run a finding counts towards: its own run id, else `type:<task_type>`."""
    return finding.run_id or type_run_id(finding.task_type)


def _day(unix_s: float) -> str:
    return time.strftime("%Y%m%d", time.gmtime(unix_s))


def task_list_id(finding: Finding, now: float) -> str:
    """Whose task list (`run_tasks`) a finding goes in: its run's, or for a task type its
    day's (`type:<task_type>@<YYYYMMDD>`, UTC)."""
    return finding.run_id or f"{type_run_id(finding.task_type)}@{_day(now)}"


def _task_lists(run_id: str, now: float, retention_s: float) -> list[str]:
    """The task lists that hold a run's tasks: one, or a task type's days within retention
    (a day's list lasts `retention_s` after its last finding, so one day more)."""
    if not run_id.startswith(TYPE_RUN_PREFIX) or "@" in run_id:
        return [run_id]
    days = int(retention_s // 86400) + 2
    return [f"{run_id}@{_day(now - d * 86400)}" for d in range(days)]


def totals_field(vendor: str, model: str, kind: str) -> str:
    return f"{vendor}|{model}|{kind}"


@dataclass(frozen=True, slots=True)
class RunProgress:
    run_id: str
    expected: int | None  # None until someone calls `expect_run`
    finished: int
    ok: int
    failed: int
    cancelled: int = 0

    @property
    def complete(self) -> bool:
        return self.expected is not None and self.finished >= self.expected


@dataclass(frozen=True, slots=True)
class TaskSummary:
    """The collector's view of one task: its winning finding and any duplicate work."""

    task_id: str
    status: str
    vendor: str
    model: str
    finding_id: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float | None  # None: the model is unpriced (never $0)
    latency_ms: float
    attempts: int
    worker: str
    run_id: str
    task_type: str
    updated_at: float
    duplicate_findings: int
    duplicate_cost_usd: float


@dataclass(frozen=True, slots=True)
class TaskView:
    summary: TaskSummary
    findings: list[Finding]  # every distinct finding of the task, oldest first


@dataclass(frozen=True, slots=True)
class ModelTotals:
    vendor: str
    model: str
    tasks: int
    failed: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float  # a lower bound when `unpriced` > 0
    unpriced: int
    latency_ms: float
    duplicate_findings: int
    duplicate_cost_usd: float
    cancelled: int = 0


async def expect_run(
    redis: Redis, names: Names, run_id: str, expected: int, *, ttl_s: float = DEFAULT_RETENTION_S
) -> None:
    """Record how many tasks a run has, so `run_progress` can tell when it is complete.
    It expires after `ttl_s` unless it has a TTL already (the collector's, once findings
    of the run arrive), so a run that never gets one does not stay forever."""
    if expected < 0:
        raise ValueError(f"expected must be >= 0, not {expected}")
    key = names.run_info(run_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(key, "expected", str(expected))
        pipe.pexpire(key, int(ttl_s * 1000), nx=True)
        await pipe.execute()


async def run_progress(redis: Redis, names: Names, run_id: str) -> RunProgress:
    fields = ["expected", "finished", "ok", "failed", "cancelled"]
    raw = await redis.hmget(names.run_info(run_id), fields)
    expected, finished, ok, failed, cancelled = (_int(v) for v in raw)
    expected_or_none = None if raw[0] is None else expected
    return RunProgress(run_id, expected_or_none, finished, ok, failed, cancelled)


async def run_task_statuses(
    redis: Redis,
    names: Names,
    run_id: str,
    *,
    retention_s: float = DEFAULT_RETENTION_S,
    now: float | None = None,
) -> dict[str, str]:
    """Task id -> status (`ok` or `failed`) for every finished task of the run (of a task
    type: of its days within `retention_s`)."""
    lists = _task_lists(run_id, time.time() if now is None else now, retention_s)
    async with redis.pipeline(transaction=False) as pipe:
        for list_id in lists:
            pipe.hgetall(names.run_tasks(list_id))
        days: list[dict[bytes, bytes]] = await pipe.execute()
    return {streamids.text(k): streamids.text(v) for raw in reversed(days) for k, v in raw.items()}


async def wait_for_run(
    redis: Redis,
    names: Names,
    run_id: str,
    *,
    timeout_s: float,
    poll_s: float = 0.5,
    on_progress: Callable[[RunProgress], None] | None = None,
) -> RunProgress:
    """Poll until the run is complete or `timeout_s` passes; return the last progress
    (check `.complete`). `on_progress` is called first and then on every change."""
    deadline = time.monotonic() + timeout_s
    last: RunProgress | None = None
    while True:
        progress = await run_progress(redis, names, run_id)
        if on_progress is not None and progress != last:
            on_progress(progress)
        last = progress
        if progress.complete or time.monotonic() >= deadline:
            return progress
        await asyncio.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


async def task_view(redis: Redis, names: Names, task_id: str) -> TaskView | None:
    """The task's summary and all its findings, or None if the collector has none."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(names.task_summary(task_id))
        pipe.hvals(names.task_findings(task_id))
        raw_summary, raw_findings = await pipe.execute()
    if not raw_summary:
        return None
    s = {streamids.text(k): streamids.text(v) for k, v in raw_summary.items()}
    findings = sorted(
        (Finding.model_validate_json(doc) for doc in raw_findings),
        key=lambda f: (f.timestamp, f.finding_id),
    )
    cost = s.get("cost_usd", UNPRICED)
    summary = TaskSummary(
        task_id=task_id,
        status=s.get("status", ""),
        vendor=s.get("vendor", ""),
        model=s.get("model", ""),
        finding_id=s.get("finding_id", ""),
        input_tokens=_int(s.get("input_tokens")),
        output_tokens=_int(s.get("output_tokens")),
        cache_read_tokens=_int(s.get("cache_read_tokens")),
        cache_write_tokens=_int(s.get("cache_write_tokens")),
        cost_usd=None if cost == UNPRICED else float(cost),
        latency_ms=_float(s.get("latency_ms")),
        attempts=_int(s.get("attempts")),
        worker=s.get("worker", ""),
        run_id=s.get("run_id", ""),
        task_type=s.get("task_type", ""),
        updated_at=_float(s.get("updated_at")),
        duplicate_findings=_int(s.get("duplicate_findings")),
        duplicate_cost_usd=_float(s.get("duplicate_cost_usd")),
    )
    return TaskView(summary, findings)


async def totals_by_model(redis: Redis, names: Names) -> list[ModelTotals]:
    """One row per vendor and model the collector has seen, sorted by vendor and model."""
    raw = await redis.hgetall(names.totals)
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for key, value in raw.items():
        head, _, kind = streamids.text(key).rpartition("|")
        vendor, _, model = head.partition("|")  # vendor names never hold '|'; models may
        if kind in TOTAL_KINDS:
            rows.setdefault((vendor, model), {})[kind] = float(value)
    return [_row(vendor, model, v) for (vendor, model), v in sorted(rows.items())]


def _row(vendor: str, model: str, v: dict[str, float]) -> ModelTotals:
    def n(kind: str) -> int:
        return int(v.get(kind, 0))

    return ModelTotals(
        vendor=vendor,
        model=model,
        tasks=n("tasks"),
        failed=n("failed"),
        input_tokens=n("input_tokens"),
        output_tokens=n("output_tokens"),
        cache_read_tokens=n("cache_read_tokens"),
        cache_write_tokens=n("cache_write_tokens"),
        cost_usd=v.get("cost_usd", 0.0),
        unpriced=n("unpriced"),
        latency_ms=v.get("latency_ms", 0.0),
        duplicate_findings=n("duplicate_findings"),
        duplicate_cost_usd=v.get("duplicate_cost_usd", 0.0),
        cancelled=n("cancelled"),
    )


def _int(raw: bytes | str | None) -> int:
    return 0 if raw is None else int(float(raw))


def _float(raw: bytes | str | None) -> float:
    return 0.0 if raw is None else float(raw)
