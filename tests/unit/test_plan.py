"""`swarm plan`: a workload routed offline, per-vendor counts, cost, replicas, compose line."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from services.cli.plan import format_plan, make_plan, parse_workload, replicas
from services.dispatcher.policy import Policy
from services.dispatcher.router import Fleet, route
from shared.llm.prices import PriceTable
from shared.protocol import KNOWN_VENDORS

ROOT = Path(__file__).resolve().parents[2]
WORKLOAD = [
    {"prompt": "What is the capital of France?"},
    {
        "prompt": "Fix this:\n```python\ndef mean(xs):\n    return sum(xs) / len(xs)\n```\n"
        "and add a test for the empty list",
        "task_type": "code",
    },
    {"prompt": "Plan our market-entry strategy with risks", "complexity": "strategic"},
    {"prompt": "Summarize the attached notes", "context": "notes " * 200, "complexity": "complex"},
    {"prompt": "hi", "vendor": "claude"},
    {"prompt": "Compare two sorting algorithms", "complexity": "medium"},
]


@pytest.fixture(scope="module")
def prices() -> PriceTable:
    return PriceTable.load()


@pytest.fixture(scope="module")
def policy(prices: PriceTable) -> Policy:
    return Policy.load(prices=prices)


def _text() -> str:
    lines = [json.dumps(t) for t in WORKLOAD]
    lines.insert(3, "{not json")  # line 4
    return "\n".join(lines) + "\n"


def test_plan_matches_the_router(policy: Policy, prices: PriceTable) -> None:
    tasks, problems = parse_workload(_text())
    assert [p.where for p in problems] == ["line 4"]
    assert "not valid JSON" in problems[0].reason
    plan = make_plan(tasks, policy, prices, problems=problems, latency_s=2.0, within_s=600.0)

    fleet = Fleet(live={v: 1 for v in KNOWN_VENDORS})
    chosen = [route(task, policy, prices, fleet).chosen for _where, task in tasks]
    assert all(c is not None for c in chosen)
    expected: dict[str, int] = {}
    for c in chosen:
        assert c is not None
        expected[c.vendor] = expected.get(c.vendor, 0) + 1
    assert {v.vendor: v.tasks for v in plan.vendors} == expected
    assert plan.tasks == len(WORKLOAD)
    assert plan.cost_usd == pytest.approx(sum(c.cost_usd for c in chosen if c))
    assert all(v.replicas == 1 for v in plan.vendors)  # 6 tasks fit one replica easily

    compose = plan.compose_command()
    scaled = {part.split("=")[0].removeprefix("worker-") for part in compose.split()[4::2]}
    assert compose.startswith("docker compose up --scale ")
    assert scaled == set(expected)

    text = format_plan(plan)
    assert text.splitlines()[0].startswith("skipped line 4: ")
    assert text.splitlines()[-1] == compose


def test_replicas_formula() -> None:
    assert replicas(0, 2.0, 600, 256) == 0
    assert replicas(1, 2.0, 600, 256) == 1
    assert replicas(200_000, 2.0, 600, 256) == math.ceil(200_000 * 2.0 / (600 * 256)) == 3
    assert replicas(76_800, 2.0, 600, 256) == 1  # exactly one replica's capacity
    assert replicas(76_801, 2.0, 600, 256) == 2


def test_json_array_is_accepted(policy: Policy, prices: PriceTable) -> None:
    tasks, problems = parse_workload(json.dumps([*WORKLOAD, {"prompt": ""}]))
    assert len(tasks) == len(WORKLOAD)
    assert [p.where for p in problems] == [f"item {len(WORKLOAD) + 1}"]
    assert make_plan(tasks, policy, prices).tasks == len(WORKLOAD)


def test_swarm_plan_command(tmp_path: Path) -> None:
    path = tmp_path / "workload.jsonl"
    path.write_text(_text())
    res = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "plan", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr
    assert "skipped line 4:" in res.stdout
    assert "docker compose up --scale worker-" in res.stdout


def test_nothing_planned_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("nope\n")
    res = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "plan", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert res.returncode == 1
    assert "line 1:" in res.stdout
