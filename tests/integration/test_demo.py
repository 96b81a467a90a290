"""`swarm demo` (what `make demo` runs): the whole swarm, at a reduced size, end to end."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import uuid
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from services.simulator.config import SimulatorConfig
from services.simulator.server import Simulator
from shared.bus.findings import run_task_statuses, totals_by_model
from shared.protocol import Names

# The cost lines: the measured ratio, then the design's claim beside it, whichever way it goes.
BASELINE_LINE = re.compile(
    r"^  (claude-haiku-\S+), the original design's all-Haiku baseline \(its cheapest Haiku\): "
    r"\$[\d.]+, so this run was [\d.]+x (cheaper|dearer); the tasks alone \$[\d.]+ against the "
    r"run's \$[\d.]+: [\d.]+x (cheaper|dearer) "
    r'\(the design claimed "3-5\N{MULTIPLICATION SIGN} cheaper"\)$',
    re.M,
)
PREMIUM_LINE = re.compile(
    r"^  claude-opus-5-5, one premium model: \$[\d.]+, so this run was [\d.]+x cheaper$", re.M
)


async def _demo(
    redis_url: str, names: Names, logs: Path, tasks: int, **env: str
) -> tuple[str, dict[str, Any]]:
    """`swarm demo --json` run as a user runs it; what it printed, and its JSON summary."""
    base = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli.main",
        "demo",
        "--tasks",
        str(tasks),
        "--namespace",
        names.namespace,
        "--logs",
        str(logs),
        "--timeout",
        "120",
        "--json",
        env={**base, "REDIS_URL": redis_url, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out_b, err_b = await asyncio.wait_for(proc.communicate(), 240)
    out, err = out_b.decode(), err_b.decode()
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    return out, json.loads(out.strip().splitlines()[-1])


async def test_the_whole_swarm_finishes_every_task_once_and_the_table_adds_up(
    redis_url: str, redis: Redis, tmp_path: Path
) -> None:
    names = Names(f"demo{uuid.uuid4().hex[:8]}")
    out, summary = await _demo(redis_url, names, tmp_path / "logs", 24)

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
    # Every vendor with workers has a row, even one the router gave nothing.
    assert set(vendors) == {"claude", "gemini", "openai", "deepseek"}
    # Priced on the original design's all-Haiku baseline too, its claim beside the ratio.
    assert summary["baseline_model"].startswith("claude-haiku-")
    assert summary["baseline_cost_usd"] > 0
    ratio = summary["baseline_cost_usd"] / summary["total_cost_usd"]
    assert abs(summary["baseline_ratio"] - ratio) < 1e-3
    assert summary["design_claim"] == "3-5\N{MULTIPLICATION SIGN} cheaper than all-Haiku"
    assert BASELINE_LINE.search(out) and PREMIUM_LINE.search(out), out[-3000:]
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


async def test_a_vendor_whose_calls_fail_is_named_with_its_error_and_the_tasks_it_lost(
    redis_url: str, redis: Redis, tmp_path: Path
) -> None:
    """OpenAI answers every call with its out-of-quota error (429 insufficient_quota: fatal,
    so each task fails over at once, as on a wrong key's 401). The summary names openai,
    its error, every failed call and where its tasks went; the simulator's own count of
    the refusals it sent is the check."""
    config = tmp_path / "sim.toml"
    config.write_text("seed = 5\n[vendors.openai.faults]\nrate_quota = 1.0\n")
    sim = Simulator(SimulatorConfig.from_toml(config))
    await sim.start()
    try:
        names = Names(f"demo{uuid.uuid4().hex[:8]}")
        out, summary = await _demo(
            redis_url,
            names,
            tmp_path / "logs",
            24,
            OPENAI_API_KEY="sk-out-of-quota",  # a key set: openai is called "for real"...
            OPENAI_BASE_URL=f"{sim.base_url}/openai/v1",  # ... here
        )
        refused = sim.stats()["by_vendor_status"].get("openai", {})
    finally:
        await sim.stop()

    openai = summary["vendors"]["openai"]
    # What openai was asked, and answered.
    assert set(refused) == {"429"} and refused["429"] > 0, (refused, openai, out[-3000:])
    assert openai["tasks"] == 0
    assert openai["failed_calls"] == refused["429"] and openai["failed_calls_exact"] is True
    assert openai["failed_over"] == refused["429"]  # fatal: one call, then elsewhere
    assert "openai" not in openai["failed_over_to"]
    assert sum(openai["failed_over_to"].values()) == openai["failed_over"]
    assert list(openai["errors"]) == [
        e for e in openai["errors"] if "429: You exceeded your current quota" in e
    ]
    assert summary["finished"] == 24 and summary["exactly_one_finding"] is True

    lines = out.splitlines()
    row = next(line for line in lines if line.startswith("openai "))
    assert row.split()[1:4] == ["-", "0", "0"], row  # no model, no task, none failed there
    failures = lines[lines.index("failed calls:") :]
    named = next(line for line in failures if line.startswith("  openai"))
    assert f"{refused['429']} failed; {refused['429']} tasks failed over elsewhere (" in named
    assert re.search(
        r"^    \d+x openai/gpt-[\w.-]+ 429: You exceeded your current quota", out, re.M
    )
    assert BASELINE_LINE.search(out) and PREMIUM_LINE.search(out), out[-3000:]

    # The tasks it lost finished elsewhere, once each, as Redis says.
    statuses = await run_task_statuses(redis, names, summary["demo"])
    assert set(statuses.values()) == {"ok"}
    totals = await totals_by_model(redis, names)
    assert not [t for t in totals if t.vendor == "openai" and t.tasks]
