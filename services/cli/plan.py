"""`swarm plan WORKLOAD`: where a batch of tasks would go, what it would cost, and how many
worker replicas per vendor finish it in time. Pure: no Redis, no I/O; the caller reads the
file and prints `format_plan(...)`.

Replicas per vendor = ceil(tasks x latency_s / (within_s x in_flight)), at least 1 for a
vendor with tasks: each replica holds `in_flight` calls of `latency_s` each at once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass

from services.dispatcher.policy import Policy
from services.dispatcher.router import Fleet, route
from shared.llm.prices import PriceTable
from shared.protocol import DecodeError, Task, decode_json

__all__ = [
    "Plan",
    "Problem",
    "VendorPlan",
    "format_plan",
    "make_plan",
    "parse_workload",
    "replicas",
]


@dataclass(frozen=True)
class Problem:
    """A workload entry that was skipped: `where` is "line N" or "item N" (1-based)."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass(frozen=True)
class VendorPlan:
    vendor: str
    tasks: int
    input_tokens: int
    output_tokens: int
    cost_usd: float  # of the priced tasks only
    replicas: int
    unpriced: int = 0  # tasks routed to an unpriced (operator) model: cost unknown


@dataclass(frozen=True)
class Plan:
    vendors: tuple[VendorPlan, ...]  # only vendors with tasks, most tasks first
    problems: tuple[Problem, ...]  # malformed entries and tasks with no route
    latency_s: float
    within_s: float
    in_flight: int

    @property
    def tasks(self) -> int:
        return sum(v.tasks for v in self.vendors)

    @property
    def cost_usd(self) -> float:
        return sum(v.cost_usd for v in self.vendors)

    def compose_command(self) -> str:
        scales = " ".join(f"--scale worker-{v.vendor}={v.replicas}" for v in self.vendors)
        return f"docker compose up {scales}" if scales else ""


def parse_workload(text: str) -> tuple[list[tuple[str, Task]], list[Problem]]:
    """JSON lines (one task object per line, as the intake's `data` JSON) or one JSON
    array of task objects. Blank lines are skipped; a bad entry becomes a Problem."""
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            return [], [Problem(f"line {exc.lineno}", f"not a valid JSON array ({exc.msg})")]
        if not isinstance(items, list):
            return [], [Problem("line 1", "not a JSON array")]
        entries = [(f"item {i}", json.dumps(item)) for i, item in enumerate(items, 1)]
    else:
        entries = [
            (f"line {i}", line) for i, line in enumerate(text.splitlines(), 1) if line.strip()
        ]
    tasks: list[tuple[str, Task]] = []
    problems: list[Problem] = []
    for where, document in entries:
        try:
            tasks.append((where, decode_json(Task, document)))
        except DecodeError as exc:
            problems.append(Problem(where, str(exc).removeprefix("data: ")))
    return tasks, problems


def replicas(tasks: int, latency_s: float, within_s: float, in_flight: int) -> int:
    if tasks <= 0:
        return 0
    return max(1, math.ceil(tasks * latency_s / (within_s * in_flight)))


def make_plan(
    tasks: Iterable[tuple[str, Task]],
    policy: Policy,
    prices: PriceTable,
    *,
    latency_s: float = 2.0,
    within_s: float = 600.0,
    in_flight: int = 256,
    problems: Iterable[Problem] = (),
) -> Plan:
    """Route every task as if every vendor had live workers and nothing was cooling down."""
    if latency_s <= 0 or within_s <= 0 or in_flight <= 0:
        raise ValueError("latency_s, within_s and in_flight must be > 0")
    fleet = Fleet.everyone_live()
    skipped = list(problems)
    totals: dict[str, list[float]] = {}  # vendor -> [tasks, in, out, cost, unpriced]
    for where, task in tasks:
        decision = route(task, policy, prices, fleet)
        chosen = decision.chosen
        if chosen is None:
            skipped.append(Problem(where, f"no route: {decision.reason}"))
            continue
        row = totals.setdefault(chosen.vendor, [0, 0, 0, 0.0, 0])
        row[0] += 1
        row[1] += chosen.input_tokens
        row[2] += chosen.output_tokens
        if chosen.cost_usd is None:
            row[4] += 1
        else:
            row[3] += chosen.cost_usd
    vendors = tuple(
        sorted(
            (
                VendorPlan(
                    vendor=vendor,
                    tasks=int(n),
                    input_tokens=int(tin),
                    output_tokens=int(tout),
                    cost_usd=cost,
                    replicas=replicas(int(n), latency_s, within_s, in_flight),
                    unpriced=int(unpriced),
                )
                for vendor, (n, tin, tout, cost, unpriced) in totals.items()
            ),
            key=lambda v: (-v.tasks, v.vendor),
        )
    )
    return Plan(vendors, tuple(skipped), latency_s, within_s, in_flight)


def format_plan(plan: Plan) -> str:
    lines = [f"skipped {p}" for p in plan.problems]
    if not plan.vendors:
        lines.append("nothing to plan: no task could be routed")
        return "\n".join(lines)
    header = f"{'vendor':<20}{'tasks':>8}{'est. in tok':>14}{'est. out tok':>14}"
    lines.append(f"{header}{'est. cost':>14}{'replicas':>10}")
    for v in plan.vendors:
        lines.append(
            f"{v.vendor:<20}{v.tasks:>8,}{v.input_tokens:>14,}{v.output_tokens:>14,}"
            f"{_usd(v.cost_usd) + ('+' if v.unpriced else ''):>14}{v.replicas:>10}"
        )
    lines.append(
        f"{'total':<20}{plan.tasks:>8,}{sum(v.input_tokens for v in plan.vendors):>14,}"
        f"{sum(v.output_tokens for v in plan.vendors):>14,}{_usd(plan.cost_usd):>14}"
        f"{sum(v.replicas for v in plan.vendors):>10}"
    )
    unpriced = sum(v.unpriced for v in plan.vendors)
    if unpriced:
        lines.append(f"+ {unpriced:,} tasks on unpriced models: their cost is unknown, not in it")
    lines.append(
        f"replicas: ceil(tasks x {plan.latency_s:g} s / ({plan.within_s:g} s x "
        f"{plan.in_flight} in flight)); estimated cost is for planning, not billing"
    )
    lines.append(plan.compose_command())
    return "\n".join(lines)


def _usd(value: float) -> str:
    return f"${value:,.4f}" if value < 100 else f"${value:,.2f}"
