"""What the MCP tools do, over one Redis client built once: post a task, wait for or fetch
its finding, list recent findings, ask a mega-shard, the fleet's status and the spend.

The rules live where the rest of the swarm keeps them: a task is checked by the protocol's
own model (`shared.protocol`), findings and totals are read as the collector stored them
(`shared.bus.findings`), a shard is asked through `shared.bus.context_client`. `swarm
status` lives in the CLI, which services do not import: it runs as `swarm status --json`
in a child process, as the console runs `swarm cancel`. Every failure the caller can act on
is a `SwarmToolError` with one line saying what to change; every output is plain JSON data
and never holds REDIS_URL or its password.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from redis.asyncio import Redis

from services.mcp.settings import McpSettings
from shared.bus.bus import Bus
from shared.bus.context_client import ContextClient, ContextUnavailable
from shared.bus.findings import ModelTotals, TaskView, task_view, totals_by_model
from shared.bus.streamids import text
from shared.protocol import (
    Complexity,
    DecodeError,
    Finding,
    Names,
    Task,
    Urgency,
    decode,
    decode_json,
    encode_data,
)
from shared.runtime.logging import scrub_text
from shared.runtime.metrics import Metrics
from shared.runtime.settings import BusSettings, SwarmSettings

URGENCIES = tuple(u.value for u in Urgency)
COMPLEXITIES = tuple(c.value for c in Complexity)
_ANSWER_CHARS = 2000  # a recent finding's answer, cut: the task's own tool gives it whole


class SwarmToolError(Exception):
    """One line for the agent: what was wrong and what to do instead."""


@dataclass(frozen=True, slots=True)
class SwarmTools:
    redis: Redis
    swarm: SwarmSettings
    bus: BusSettings
    settings: McpSettings

    @property
    def names(self) -> Names:
        return self.swarm.names

    # -- tasks -----------------------------------------------------------------------------
    async def post_task(self, prompt: str, **fields: Any) -> dict[str, Any]:
        """Check the task with the protocol's model, then put it on the intake stream."""
        values = {"prompt": prompt, **{k: v for k, v in fields.items() if v is not None}}
        try:
            task = decode_json(Task, json.dumps(values))
        except (DecodeError, ValueError) as exc:
            raise SwarmToolError(f"invalid task, nothing posted: {exc}") from None
        entry = await self.redis.xadd(self.names.intake, encode_data(task))  # type: ignore[arg-type]
        return {
            "task_id": task.task_id,
            "entry_id": text(entry),
            "stream": self.names.intake,
            "urgency": task.urgency.value,
            "next": "call wait_for_finding with this task_id",
        }

    async def wait_for_finding(self, task_id: str, timeout_s: float) -> dict[str, Any]:
        """The task's result once the collector has stored it, or where it stands now."""
        _check_id(task_id)
        if not 0 <= timeout_s <= self.settings.max_wait_s:
            raise SwarmToolError(
                f"timeout_s must be between 0 and {self.settings.max_wait_s:g} seconds"
            )
        deadline = time.monotonic() + timeout_s
        while True:
            view = await task_view(self.redis, self.names, task_id)
            if view is not None or time.monotonic() >= deadline:
                break
            await asyncio.sleep(min(self.settings.poll_s, max(0.0, deadline - time.monotonic())))
        record = await self.task_record(task_id)
        if view is None:
            return {
                "task_id": task_id,
                "done": False,
                "state": record.get("state") or "queued",
                "message": f"still running after {timeout_s:g} s{_where(record)}; "
                "call wait_for_finding again",
            }
        return task_result(task_id, record, view, all_findings=False)

    async def task_status(self, task_id: str) -> dict[str, Any]:
        """The dispatcher's record, the collector's summary and every finding."""
        _check_id(task_id)
        record = await self.task_record(task_id)
        view = await task_view(self.redis, self.names, task_id)
        if not record and view is None:
            raise SwarmToolError(
                f"no record of task {task_id!r} in namespace {self.names.namespace!r} "
                "(unknown, expired, or posted straight to a vendor stream)"
            )
        if view is None:
            return {
                "task_id": task_id,
                "done": False,
                "state": record.get("state", "queued"),
                "record": record,
            }
        return task_result(task_id, record, view, all_findings=True)

    async def task_record(self, task_id: str) -> dict[str, str]:
        """The dispatcher's record of the task (state, routing), {} if there is none."""
        raw = await self.redis.hgetall(self.names.task(task_id))
        return {text(k): text(v) for k, v in raw.items() if not text(k).startswith("entry:")}

    async def recent_findings(self, limit: int) -> dict[str, Any]:
        """The newest findings on the findings stream, newest first."""
        if not 1 <= limit <= self.settings.max_recent:
            raise SwarmToolError(f"limit must be between 1 and {self.settings.max_recent}")
        entries: Any = await self.redis.xrevrange(self.names.findings, count=limit)
        found = []
        for _entry_id, fields in entries:
            try:
                found.append(_brief(decode(Finding, fields)))
            except DecodeError:
                continue  # the collector dead-letters it; nothing to show here
        return {"stream": self.names.findings, "findings": found}

    # -- shards ----------------------------------------------------------------------------
    async def ask_shard(
        self, shard: str, question: str, *, timeout_s: float, max_tokens: int
    ) -> dict[str, Any]:
        """Ask a mega-shard (by id or specialty) as `swarm shard ask` does."""
        if not 0 < timeout_s <= self.settings.max_shard_wait_s:
            raise SwarmToolError(
                f"timeout_s must be above 0 and at most {self.settings.max_shard_wait_s:g}"
            )
        if max_tokens <= 0:
            raise SwarmToolError("max_tokens must be above 0")
        requester = f"mcp-{socket.gethostname()}-{os.getpid()}"
        bus = Bus(self.redis, self.names, self.bus, Metrics.create())
        try:
            async with ContextClient(bus, requester_id=requester) as ctx:
                reply = await ctx.ask(
                    shard, question, max_response_tokens=max_tokens, timeout_s=timeout_s
                )
        except ContextUnavailable as exc:
            raise SwarmToolError(str(exc)) from None
        except ValueError as exc:  # a malformed shard name or question
            raise SwarmToolError(f"invalid query: {exc}") from None
        return reply.model_dump(mode="json", exclude={"schema_version"})

    # -- the fleet and its cost ------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        """`swarm status --json`: live services, streams and backlog, cost, shards."""
        env = dict(os.environ)
        env.update(
            REDIS_URL=self.swarm.redis_url.get_secret_value(),
            SWARM_NAMESPACE=self.swarm.namespace,
            LOG_JSON="false",
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli.main",
            "status",
            "--json",
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.settings.status_timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise SwarmToolError(
                f"swarm status gave no answer within {self.settings.status_timeout_s:g} s"
            ) from None
        if proc.returncode != 0:
            lines = err.decode(errors="replace").strip().splitlines() or ["no output"]
            raise SwarmToolError(scrub_text(lines[-1]))
        data: dict[str, Any] = json.loads(out)
        return data

    async def spend(self) -> dict[str, Any]:
        """What the collector has totalled: cost, tasks and tokens per vendor and model."""
        rows = await totals_by_model(self.redis, self.names)
        vendors: dict[str, dict[str, Any]] = {}
        for row in rows:
            v = vendors.setdefault(row.vendor, _zero(row.vendor))
            for key in ("tasks", "failed", "input_tokens", "output_tokens", "unpriced"):
                v[key] += getattr(row, key)
            v["cost_usd"] += row.cost_usd
            v["duplicate_cost_usd"] += row.duplicate_cost_usd
            v["models"].append(_model_row(row))
        unpriced = sum(r.unpriced for r in rows)
        return {
            "namespace": self.names.namespace,
            "vendors": [vendors[k] for k in sorted(vendors)],
            "cost_usd": sum(r.cost_usd for r in rows),
            "duplicate_cost_usd": sum(r.duplicate_cost_usd for r in rows),
            "unpriced_findings": unpriced,
            "note": (
                f"{unpriced} finding(s) of unpriced models are not in cost_usd"
                if unpriced
                else "every finding is priced"
            ),
        }


# -- shaping ---------------------------------------------------------------------------------


def task_result(
    task_id: str, record: dict[str, str], view: TaskView, *, all_findings: bool
) -> dict[str, Any]:
    """A finished task as the user sees it: status, vendor/model, the answer, its cost."""
    s = view.summary
    winner = next((f for f in view.findings if f.finding_id == s.finding_id), None)
    out: dict[str, Any] = {
        "task_id": task_id,
        "done": True,
        "status": s.status,
        "vendor": s.vendor,
        "model": s.model,
        "answer": winner.summary if winner else "",
        "error": winner.error if winner else None,
        "cost_usd": s.cost_usd,
        "unpriced": s.cost_usd is None,
        "summary": asdict(s),
        "record": record or None,
    }
    if all_findings:
        out["findings"] = [f.model_dump(mode="json") for f in view.findings]
    elif winner is not None:
        out["sources"] = list(winner.sources)
        if winner.code:
            out["code"] = winner.code
    return out


def _brief(f: Finding) -> dict[str, Any]:
    answer = f.summary if len(f.summary) <= _ANSWER_CHARS else f.summary[:_ANSWER_CHARS] + "…"
    return {
        "task_id": f.task_id,
        "finding_id": f.finding_id,
        "status": f.status.value,
        "vendor": f.vendor,
        "model": f.model,
        "answer": answer,
        "error": f.error,
        "cost_usd": f.cost_usd,
        "input_tokens": f.input_tokens,
        "output_tokens": f.output_tokens,
        "latency_ms": f.latency_ms,
        "timestamp": f.timestamp.isoformat(),
    }


def _zero(vendor: str) -> dict[str, Any]:
    return {
        "vendor": vendor,
        "tasks": 0,
        "failed": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": 0.0,
        "unpriced": 0,
        "duplicate_cost_usd": 0.0,
        "models": [],
    }


def _model_row(row: ModelTotals) -> dict[str, Any]:
    keys = ("model", "tasks", "failed", "input_tokens", "output_tokens", "cost_usd", "unpriced")
    return {k: getattr(row, k) for k in keys}


def _check_id(task_id: str) -> None:
    if not task_id or len(task_id) > 200 or any(c.isspace() for c in task_id):
        raise SwarmToolError("task_id must be 1-200 characters without whitespace")


def _where(record: dict[str, str]) -> str:
    if not record:
        return " (not routed yet: is the dispatcher running?)"
    vendor = record.get("vendor")
    at = f" at {vendor}/{record.get('model', '')}" if vendor else ""
    return f" (state {record.get('state', '?')}{at})"
