"""`swarm demo` (what `make demo` runs): the whole swarm, at a reduced size, end to end."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path

from redis.asyncio import Redis

from shared.bus.findings import run_task_statuses, totals_by_model
from shared.protocol import Names


async def test_the_whole_swarm_finishes_every_task_once_and_the_table_adds_up(
    redis_url: str, redis: Redis, tmp_path: Path
) -> None:
    names = Names(f"demo{uuid.uuid4().hex[:8]}")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli.main",
        "demo",
        "--tasks",
        "24",
        "--namespace",
        names.namespace,
        "--logs",
        str(tmp_path / "logs"),
        "--timeout",
        "120",
        "--json",
        env={**env, "REDIS_URL": redis_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out_b, err_b = await asyncio.wait_for(proc.communicate(), 240)
    out, err = out_b.decode(), err_b.decode()
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])

    assert summary["tasks"] == summary["finished"] == 24
    assert summary["exactly_one_finding"] is True
    assert summary["rejected"] == 1  # the malformed task, kept with its reason
    assert summary["dead_lettered"] == 0
    assert summary["shard_queries"] >= 1  # a fifth of the tasks ask the history shard
    vendors = summary["vendors"]
    assert sum(v["tasks"] for v in vendors.values()) == 24
    tasks_cost = sum(v["cost_usd"] for v in vendors.values())
    assert abs(tasks_cost + summary["shard_cost_usd"] - summary["total_cost_usd"]) < 1e-5
    assert summary["premium_cost_usd"] > summary["total_cost_usd"]
    assert "every task has exactly one finding" in out
    assert "stopped 8 processes" in out

    # The same, checked in Redis independently of the demo's own report.
    run_id = summary["demo"]
    statuses = await run_task_statuses(redis, names, run_id)
    assert len(statuses) == 24 and set(statuses.values()) == {"ok"}
    for task_id in statuses:
        assert await redis.hlen(names.task_findings(task_id)) == 1  # type: ignore[misc]
    totals = await totals_by_model(redis, names)
    for vendor, row in vendors.items():
        mine = [t for t in totals if t.vendor == vendor]
        assert sum(t.tasks for t in mine) == row["tasks"]
        assert abs(sum(t.cost_usd for t in mine) - row["cost_usd"]) < 1e-5
        assert sum(t.input_tokens for t in mine) == row["input_tokens"]
    exported = (tmp_path / "logs" / "findings.jsonl").read_text().splitlines()
    assert {json.loads(line)["task_id"] for line in exported} == set(statuses)
    assert await redis.scard(names.shards) == 1  # type: ignore[misc]
