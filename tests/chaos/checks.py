"""What the fault tests post and check: tasks, the simulator config, the collector's records.

What "exactly one finding" means here. Delivery is at-least-once, so a worker SIGKILLed
after its vendor call and before its finding landed makes a peer call the vendor again
(that is the extra vendor calls each test prints). The finding must still *count* once:
every task is finished once in its run, counted once in the totals per vendor, and filed
under its task (`<ns>:findings:<task_id>`) as one finding; a second finding of the same task
(two workers raced, or an effect was written twice) is tolerated only when the collector
recorded it as a duplicate (`duplicate_findings` on the task), never added to the run or
the totals. `audit` checks exactly that.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from shared.bus.findings import run_progress, run_task_statuses, totals_by_model
from shared.protocol import Finding, Names, Status, Task, encode


def sim_config(latency_s: float, *, defaults: str = "", faults: str = "") -> str:
    """Simulator TOML: a fixed latency for every vendor, more `[defaults]` lines (e.g.
    `retry_after_s = 0.2`) and `[defaults.faults]` lines (e.g. `rate_429 = 0.3`)."""
    text = f"seed = 11\n[defaults]\nlatency = {{ kind = 'fixed', mean_s = {latency_s} }}\n"
    text += f"{defaults}\n"
    if faults:
        text += f"[defaults.faults]\n{faults}\n"
    return text


POLICY = Path(__file__).resolve().parents[2] / "services" / "dispatcher" / "policy.toml"


def simple_tier_policy(path: Path, *models: str) -> dict[str, str]:
    """Write the default routing policy with only `models` in the simple tier; the env
    that points the dispatcher at it.

    The dispatcher trusts its snapshot of live workers: when every worker's heartbeat has
    lapsed for a moment it routes to the cheapest model of the tier whether or not that
    vendor has any worker (the cold-start rule), and with some worker live it refuses what
    none can take (test_transient_refusals.py). A test about crashes keeps those bugs out of
    its way by letting the simple tier hold only the vendors it runs workers for.
    """
    text = POLICY.read_text()
    listed = ", ".join(f'"{m}"' for m in models)
    text, n = re.subn(r"(\[tiers\.simple\][^\[]*?models = )\[[^\]]*\]", rf"\g<1>[{listed}]", text)
    assert n == 1, "the policy's [tiers.simple] models list was not found"
    path.write_text(text)
    return {"SWARM_DISPATCHER_POLICY_FILE": str(path)}


def tasks(
    run_id: str,
    n: int,
    *,
    start: int = 0,
    prompt: str = "Summarise supplier note {i}.",
    **fields: Any,
) -> list[Task]:
    """`n` small tasks of one run, routed to the cheapest live model (the simple tier)."""
    return [
        Task(
            task_id=f"{run_id}-{i:05d}",
            run_id=run_id,
            prompt=prompt.format(i=i),
            complexity="simple",
            **fields,
        )
        for i in range(start, start + n)
    ]


async def post(redis: Redis, names: Names, batch: Iterable[Task]) -> list[str]:
    """XADD each task to the intake; the entry ids Redis acknowledged."""
    async with redis.pipeline(transaction=False) as pipe:
        for task in batch:
            pipe.xadd(names.intake, encode(task))  # type: ignore[arg-type]
        ids: list[bytes] = await pipe.execute()
    return [i.decode() for i in ids]


@dataclass
class Audit:
    """The collector's records of one run, checked task by task."""

    posted: int
    finished: int
    ok: int
    failed: int
    run_tasks: set[str]
    counted_in_totals: int  # tasks the per-vendor totals count (ok + failed)
    totals_by_vendor: dict[str, int]
    findings_stored: int  # distinct findings filed under the run's tasks
    duplicates: int  # findings recorded as duplicate work
    summary_vendors: dict[str, int] = field(default_factory=dict)  # by each task's summary
    missing: list[str] = field(default_factory=list)  # posted, never finished
    unexplained: list[str] = field(default_factory=list)  # extra findings not marked
    failed_without_reason: list[str] = field(default_factory=list)

    def assert_each_task_counted_once(self) -> None:
        assert self.missing == [], f"{len(self.missing)} tasks never finished: {self.missing[:10]}"
        assert self.finished == self.posted, f"finished {self.finished} != posted {self.posted}"
        assert self.ok + self.failed == self.finished
        assert len(self.run_tasks) == self.posted
        assert self.counted_in_totals == self.posted, (
            f"totals per vendor count {self.counted_in_totals} tasks, posted {self.posted}: "
            f"{self.totals_by_vendor}"
        )
        assert self.unexplained == [], (
            f"tasks with a second finding not recorded as duplicate: {self.unexplained[:10]}"
        )
        assert self.failed_without_reason == [], self.failed_without_reason[:10]


async def audit(redis: Redis, names: Names, run_id: str, task_ids: list[str]) -> Audit:
    progress = await run_progress(redis, names, run_id)
    statuses = await run_task_statuses(redis, names, run_id)
    totals = await totals_by_model(redis, names)
    by_vendor: dict[str, int] = {}
    for row in totals:
        by_vendor[row.vendor] = by_vendor.get(row.vendor, 0) + row.tasks
    result = Audit(
        posted=len(task_ids),
        finished=progress.finished,
        ok=progress.ok,
        failed=progress.failed,
        run_tasks=set(statuses),
        counted_in_totals=sum(by_vendor.values()),
        totals_by_vendor=by_vendor,
        findings_stored=0,
        duplicates=0,
    )
    for chunk in range(0, len(task_ids), 500):
        ids = task_ids[chunk : chunk + 500]
        async with redis.pipeline(transaction=False) as pipe:
            for task_id in ids:
                pipe.hvals(names.task_findings(task_id))
                pipe.hmget(names.task_summary(task_id), ["duplicate_findings", "vendor"])
            raw = await pipe.execute()
        for i, task_id in enumerate(ids):
            docs, (dup, vendor) = raw[2 * i], raw[2 * i + 1]
            if vendor is not None:
                name = vendor.decode()
                result.summary_vendors[name] = result.summary_vendors.get(name, 0) + 1
            found = [Finding.model_validate_json(d) for d in docs]
            duplicates = int(dup or 0)
            result.findings_stored += len(found)
            result.duplicates += duplicates
            if task_id not in statuses:
                result.missing.append(task_id)
                continue
            # One finding counts; the others are duplicates, or a failed finding that a
            # later ok finding superseded.
            superseded = (
                1
                if statuses[task_id] == "ok" and any(f.status is Status.FAILED for f in found)
                else 0
            )
            if len(found) != 1 + duplicates + superseded:
                result.unexplained.append(f"{task_id}: {len(found)} findings, {duplicates} dup")
            result.failed_without_reason.extend(
                f"{task_id}: {f.finding_id}"
                for f in found
                if f.status is Status.FAILED and not (f.error or "").strip()
            )
    return result


async def cleanup(redis: Redis, names: Names) -> None:
    """Delete the test's keys (only after it passed: a failure leaves them to inspect)."""
    keys = [k async for k in redis.scan_iter(match=f"{names.namespace}:*", count=1000)]
    for i in range(0, len(keys), 500):
        await redis.unlink(*keys[i : i + 500])


class Clock:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    @property
    def s(self) -> float:
        return time.monotonic() - self.t0
