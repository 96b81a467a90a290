"""Which vendor and model a task goes to, and why: pure functions, no Redis, no I/O.

`route(task, policy, prices, fleet)` answers a `Decision`:

1. Tier: the task's explicit `complexity` if it has one, else `score(task, policy)`.
2. Pool: the tier's models from the policy. A `task.model` pin keeps only that model (in
   the price table, else an operator model: one a live worker announces in its membership
   `models`, or the policy declares under `[models]`); a `task.vendor` pin keeps only that
   vendor's models, and if the tier has none of them, that vendor's models from any tier of
   the policy (or its default model in the price table, else the table's models and the
   operator models of that vendor), so a pin is always honoured.
3. Drops, each with a human reason: excluded vendor, retired (only with `on=`), cooling
   down, no live workers, context window too small, max output too small, over budget.
4. Escalation when nothing is left: if a model was dropped for its window, the
   `ultra_context` tier's (larger-window) models are tried; if one was dropped for the
   budget and the policy says `over_budget = "cheaper"`, the tier's `budget.fallback`
   tiers are tried in order; with `"reject"` the task is refused with the numbers.
5. Choice: the cheapest candidate by estimated cost (ties: larger window, then name).

Unpriced models. An operator model has no price, so its cost is unknown (`cost_usd` None),
never $0. It is a candidate only when pinned (by model, or as its vendor's model) or
listed in a tier by the operator. One the operator listed in a tier comes before the
tier's priced models (no price can rank it; listing it says "use it"); any other comes
after every priced one. A task with `budget_usd` never goes to an unpriced model. A
vendor without a default model in the price table (`openai-compatible`) serves exactly
the models its live workers announce, when they announce any.

Estimated cost = `cost_usd(price, Usage(input_tokens=in, output_tokens=out))` with `in` =
estimated tokens of prompt + context, `out` = the tier's expected output tokens, capped
by the task's `max_output_tokens`. The window check is `in + out > context_window`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Literal

from services.dispatcher.policy import TIERS, OperatorModel, Policy
from shared.llm.prices import PriceTable, cost_usd, estimate_tokens
from shared.llm.types import Usage
from shared.protocol import KNOWN_VENDORS
from shared.protocol.messages import Complexity, Task

__all__ = ["Candidate", "Decision", "Dropped", "Fleet", "route", "score"]

# Kinds of drop; the kinds that a different (larger or cheaper) model could fix trigger
# escalation.
_SIZE_KINDS = frozenset({"window", "max_output"})
_PIN_KINDS = frozenset({"pin"})


@dataclass(frozen=True)
class Fleet:
    """What the router knows of the workers: live count per vendor, (vendor, model) pairs
    cooling down after rate limits or errors, and the models each vendor's live workers
    announce (their membership `models`)."""

    live: Mapping[str, int]
    cooling: frozenset[tuple[str, str]] = frozenset()
    models: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def everyone_live(cls) -> Fleet:
        """Every known vendor live, nothing cooling: for plans, explanations, a cold start."""
        return cls(live=dict.fromkeys(KNOWN_VENDORS, 1))


@dataclass(frozen=True)
class Candidate:
    vendor: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float | None  # an estimate, for routing and budgets; None: unpriced, never $0
    window: int | None  # None: an operator model whose window nobody gave

    @property
    def estimated_cost(self) -> str:
        """The estimate as the task record keeps it: USD, or `unpriced` (never 0)."""
        return "unpriced" if self.cost_usd is None else f"{self.cost_usd:.8f}"


@dataclass(frozen=True)
class Dropped:
    vendor: str
    model: str
    reason: str


@dataclass(frozen=True)
class Decision:
    complexity: str
    complexity_source: Literal["explicit", "scored"]
    features: dict[str, float]
    score: float
    chosen: Candidate | None
    candidates: tuple[Candidate, ...]  # every viable model, cheapest first
    dropped: tuple[Dropped, ...]
    reason: str  # one line: why this model, or why none
    tier_reason: str = ""  # one line: why this tier

    def explain(self) -> str:
        lines = [
            f"tier: {self.complexity} ({self.complexity_source}, score {self.score:.2f})"
            + (f": {self.tier_reason}" if self.tier_reason else ""),
            "features: " + ", ".join(f"{k}={_num(v)}" for k, v in self.features.items()),
        ]
        if self.candidates:
            c0 = self.candidates[0]
            lines.append(
                f"candidates (cheapest first; estimate {c0.input_tokens:,} input + "
                f"{c0.output_tokens:,} output tokens):"
            )
            for c in self.candidates:
                mark = "->" if c == self.chosen else "  "
                window = "unknown" if c.window is None else f"{c.window:,}"
                lines.append(
                    f"  {mark} {c.model} ({c.vendor}): {_usd(c.cost_usd)}, window {window}"
                )
        else:
            lines.append("candidates: none")
        if self.dropped:
            lines.append("dropped:")
            lines.extend(f"   x {d.model} ({d.vendor}): {d.reason}" for d in self.dropped)
        pick = self.chosen
        chosen = (
            "nothing"
            if pick is None
            else f"{pick.model} ({pick.vendor}), unpriced"
            if pick.cost_usd is None
            else f"{pick.model} ({pick.vendor}) at {_usd(pick.cost_usd)}"
        )
        lines.append(f"decision: {chosen}: {self.reason}")
        return "\n".join(lines)


# --- the scorer ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scored:
    tier: str
    score: float
    features: dict[str, float]
    why: str


def score(task: Task, policy: Policy) -> tuple[str, float, dict[str, float]]:
    """(tier, score, features) for the task by the policy's scorer; deterministic."""
    s = _score(task, policy)
    return s.tier, s.score, s.features


def _score(task: Task, policy: Policy) -> _Scored:
    sc = policy.scorer
    tokens = estimate_tokens(task.prompt) + estimate_tokens(task.context)
    text = task.prompt.lower()
    code = _count_markers(text, sc.code_markers)
    reasoning = _count_markers(text, sc.reasoning_markers)
    strategic = _count_markers(text, sc.strategic_markers)
    value = (
        tokens / sc.tokens_per_point
        + sc.code_weight * code
        + sc.reasoning_weight * reasoning
        + sc.strategic_weight * strategic
    )
    features: dict[str, float] = {
        "input_tokens": float(tokens),
        "code_markers": float(code),
        "reasoning_markers": float(reasoning),
        "strategic_markers": float(strategic),
    }
    if tokens > sc.ultra_context_tokens:
        why = f"input {tokens:,} tokens > {sc.ultra_context_tokens:,}"
        return _Scored(Complexity.ULTRA_CONTEXT.value, value, features, why)
    if value >= sc.complex_at:
        rules = [(Complexity.COMPLEX.value, f"score {value:.2f} >= {sc.complex_at:g}")]
    elif value >= sc.medium_at:
        rules = [(Complexity.MEDIUM.value, f"score {value:.2f} >= {sc.medium_at:g}")]
    else:
        rules = [(Complexity.SIMPLE.value, f"score {value:.2f} < {sc.medium_at:g}")]
    if code >= sc.code_min_markers:
        rules.append((Complexity.COMPLEX.value, f"code rule: {code} code markers"))
    if strategic >= sc.strategic_min_markers:
        rules.append((Complexity.STRATEGIC.value, f"strategic rule: {strategic} markers"))
    words = [task.task_type, *re.split(r"[_.\-]", task.task_type)]
    for word in dict.fromkeys(words):
        tier = sc.task_type_tiers.get(word)
        if tier is not None:
            rules.append((tier, f"task_type {task.task_type!r} -> at least {tier}"))
    tier, why = max(rules, key=lambda r: TIERS.index(r[0]))  # first of the highest wins
    return _Scored(tier, value, features, why)


def _count_markers(text: str, markers: Iterable[str]) -> int:
    # The substring test first: most markers are absent, and `in` costs a fraction of a
    # regex search (the pattern matches only where the marker itself occurs).
    return sum(1 for m in markers if m in text and _pattern(m).search(text))


@lru_cache(maxsize=512)
def _pattern(marker: str) -> re.Pattern[str]:
    """Whole-word where the marker begins or ends with a word character."""
    left = r"(?<!\w)" if re.match(r"\w", marker[0]) else ""
    right = r"(?!\w)" if re.match(r"\w", marker[-1]) else ""
    return re.compile(left + re.escape(marker) + right)


# --- the router ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Drop:
    vendor: str
    model: str
    kinds: tuple[str, ...]
    reasons: tuple[str, ...]
    cost: float | None  # the estimate, when the model is priced


def route(
    task: Task, policy: Policy, prices: PriceTable, fleet: Fleet, *, on: date | None = None
) -> Decision:
    """The cheapest allowed, live, fitting model for `task`, with every reason.

    `on`: when given, models the price table says are retired by that day are dropped.
    """
    scored = _score(task, policy)
    if task.complexity is not None:
        tier = task.complexity.value
        source: Literal["explicit", "scored"] = "explicit"
        tier_why = f"set by the task (the scorer would say {scored.tier}: {scored.why})"
    else:
        tier, source, tier_why = scored.tier, "scored", scored.why
    est_out = policy.tiers[tier].expected_output_tokens
    if task.max_output_tokens is not None:
        est_out = min(est_out, task.max_output_tokens)
    est_in = int(scored.features["input_tokens"])
    router = _Router(
        task, policy, prices=prices, fleet=fleet, on=on, est_in=est_in, est_out=est_out
    )
    chosen, reason, candidates = router.run(tier)
    return Decision(
        complexity=tier,
        complexity_source=source,
        features=scored.features,
        score=scored.score,
        chosen=chosen,
        candidates=tuple(candidates),
        dropped=tuple(Dropped(d.vendor, d.model, "; ".join(d.reasons)) for d in router.drops),
        reason=reason,
        tier_reason=tier_why,
    )


_Outcome = tuple[Candidate | None, str, list[Candidate]]


class _Router:
    """One routing: the stages tried in order, every model evaluated once."""

    def __init__(
        self,
        task: Task,
        policy: Policy,
        *,
        prices: PriceTable,
        fleet: Fleet,
        on: date | None,
        est_in: int,
        est_out: int,
    ) -> None:
        self.task, self.policy, self.prices, self.fleet, self.on = task, policy, prices, fleet, on
        self.est_in, self.est_out = est_in, est_out
        self.evaluated: set[tuple[str, str]] = set()
        self.drops: list[_Drop] = []
        self.pinned: list[tuple[str, str]] | None = None  # what a model pin keeps
        self.tiered = {p for t in TIERS for p in policy.tiers[t].models}

    def run(self, tier: str) -> _Outcome:
        task = self.task
        refused = self.pin_model(task.model) if task.model is not None else None
        if refused:
            return None, refused, []
        candidates = self.stage(tier, report_pins=True)
        if candidates:
            return self.chose(candidates, f"{tier}-tier")
        if any(_SIZE_KINDS & set(d.kinds) for d in self.drops):
            candidates = self.stage(Complexity.ULTRA_CONTEXT.value, report_pins=False)
            if candidates:
                fits = f"no {tier}-tier model fits {self.est_in + self.est_out:,} tokens"
                return self.chose(candidates, "larger-window", prefix=f"{fits}; escalated to the ")
        over = [d for d in self.drops if d.kinds == ("budget",) and d.cost is not None]
        if over and task.budget_usd is not None:
            return self.over_budget(tier, over, task.budget_usd)
        return None, self.no_vendor_model() or _none_reason(tier, self.drops), []

    def pin_model(self, model: str) -> str | None:
        """Keep what a model pin allows in `self.pinned`; or why nothing can serve it."""
        vendor = self.task.vendor
        price = self.prices.get(model)
        self.pinned = [(price.vendor, price.name)] if price is not None else self.serving(model)
        if not self.pinned:
            return (
                f"pinned model {model!r} is not in the price table and no live worker "
                "announces it (a worker lists the models it serves in its membership `models`)"
            )
        if vendor is not None and vendor not in {v for v, _ in self.pinned}:
            owners = " or ".join(repr(v) for v, _ in self.pinned)
            return (
                f"pinned model {self.pinned[0][1]!r} belongs to vendor {owners}, not the "
                f"pinned vendor {vendor!r}"
            )
        if vendor is not None:
            self.pinned = [p for p in self.pinned if p[0] == vendor]
        return None

    def no_vendor_model(self) -> str | None:
        """Why a vendor pin has nothing to route to: no model of it was even considered."""
        vendor = self.task.vendor
        if vendor is None or any(v == vendor for v, _ in self.evaluated):
            return None
        return (
            f"pinned vendor {vendor!r} has no model to route to: none in the price table or "
            "the policy, and no live worker of it announces one"
        )

    def over_budget(self, tier: str, over: list[_Drop], budget: float) -> _Outcome:
        cheapest = min(over, key=lambda d: (d.cost or 0.0, d.model))
        numbers = f"{cheapest.model} est. {_usd(cheapest.cost or 0.0)} > {_usd(budget)}"
        if self.policy.over_budget == "reject":
            return None, f"over budget: cheapest viable model {numbers} (over_budget = reject)", []
        for lower in self.policy.budget_fallback[tier]:
            candidates = self.stage(lower, report_pins=False)
            if candidates:
                prefix = (
                    f"every {tier}-tier model is over the {_usd(budget)} budget "
                    f"(cheapest {numbers}); took the "
                )
                return self.chose(candidates, f"{lower}-tier", prefix=prefix)
        return None, f"over budget: cheapest viable model {numbers}; no cheaper tier fits", []

    def chose(self, candidates: list[Candidate], what: str, *, prefix: str = "") -> _Outcome:
        first, n = candidates[0], len(candidates)
        if first.cost_usd is None and (first.vendor, first.model) in self.tiered:
            why = (
                f"{prefix}unpriced operator model, listed in the policy's tiers, taken before "
                f"the priced ones of {n} viable {what} candidate(s)"
            )
        elif first.cost_usd is None:
            why = f"{prefix}no priced model of {n} viable {what} candidate(s); this one is unpriced"
        else:
            why = f"{prefix}cheapest of {n} viable {what} candidate(s)"
        return first, why, candidates

    def stage(self, tier: str, *, report_pins: bool) -> list[Candidate]:
        """The viable models of `tier` after the pins, cheapest first."""
        survivors: list[Candidate] = []
        for vendor, model in self.pool(tier, report_pins=report_pins):
            if (vendor, model) in self.evaluated:
                continue
            self.evaluated.add((vendor, model))
            result = self.evaluate(vendor, model)
            if isinstance(result, Candidate):
                survivors.append(result)
            else:
                self.drops.append(result)
        return sorted(survivors, key=self.rank)

    def rank(self, c: Candidate) -> tuple[int, float, int, str, str]:
        """Unpriced models the operator listed in a tier first, then priced ones by cost,
        then any other unpriced one; ties: the larger window, then the name."""
        if c.cost_usd is not None:
            order, cost = 1, c.cost_usd
        else:
            order, cost = (0 if (c.vendor, c.model) in self.tiered else 2), 0.0
        return order, cost, -(c.window or 0), c.model, c.vendor

    def pool(self, tier: str, *, report_pins: bool) -> list[tuple[str, str]]:
        """The tier's models after the pins; models a pin removes are reported once."""
        models = list(self.policy.tiers[tier].models)
        vendor_pin = self.task.vendor
        if self.pinned is not None:
            keep = self.pinned
            why = f"not the pinned model ({self.pinned[0][1]})"
        elif vendor_pin is not None:
            keep = [p for p in models if p[0] == vendor_pin] or self.vendor_models(vendor_pin)
            why = f"not the pinned vendor ({vendor_pin})"
        else:
            return models
        if report_pins:
            for pair in models:
                if pair not in keep and pair not in self.evaluated:
                    self.evaluated.add(pair)
                    self.drops.append(_Drop(*pair, ("pin",), (why,), None))
        return keep

    def vendor_models(self, vendor: str) -> list[tuple[str, str]]:
        """A pinned vendor's models when the tier has none: from any policy tier, else its
        default model in the price table, else every model the table has for it and the
        operator models of that vendor (announced by its live workers, declared in the
        policy)."""
        tiers = self.policy.tiers
        found = [p for t in TIERS for p in tiers[t].models if p[0] == vendor]
        if found:
            return list(dict.fromkeys(found))
        default = self.prices.defaults.get(vendor)
        if default is not None and self.prices.get(default) is not None:
            return [(vendor, default)]
        table = [(vendor, m.name) for m in self.prices.models_for(vendor, on=self.on)]
        announced = [(vendor, m) for m in sorted(self.fleet.models.get(vendor, ()))]
        declared = [(m.vendor, m.name) for m in self.policy.operator_models.values()]
        return list(dict.fromkeys([*table, *announced, *(p for p in declared if p[0] == vendor)]))

    def serving(self, model: str) -> list[tuple[str, str]]:
        """The vendors that serve a model the price table does not know: those whose live
        workers announce it, and the one the policy declares it for."""
        pairs = [(v, model) for v, served in sorted(self.fleet.models.items()) if model in served]
        declared = self.policy.operator_models.get(model)
        if declared is not None:
            pairs.append((declared.vendor, model))
        return list(dict.fromkeys(pairs))

    def operator(self, vendor: str, model: str) -> OperatorModel | None:
        """The (vendor, model) as an operator model, if it is one: announced by the vendor's
        live workers or declared in the policy (whose limits it then carries)."""
        declared = self.policy.operator_models.get(model)
        if declared is not None and declared.vendor == vendor:
            return declared
        if model in self.fleet.models.get(vendor, ()):
            return OperatorModel(model, vendor)
        return None

    def evaluate(self, vendor: str, model: str) -> Candidate | _Drop:
        price = self.prices.get(model)
        operator = self.operator(vendor, model) if price is None else None
        if price is not None:
            window: int | None = price.context_window
            max_out: int | None = price.max_output_tokens
        elif operator is not None:
            window, max_out = operator.context_window, operator.max_output_tokens
        else:
            return _Drop(vendor, model, ("unpriced",), ("not in the price table",), None)
        found = self.fleet_drops(vendor, model)
        if price is not None and self.on is not None and price.retired_on(self.on):
            found.append(("retired", f"retired on {price.retires}"))
        needed = self.est_in + self.est_out
        if window is not None and needed > window:
            found.append(("window", f"context window {window:,} < {needed:,} needed"))
        wanted = self.task.max_output_tokens
        if wanted is not None and max_out is not None and wanted > max_out:
            found.append(("max_output", f"max output {max_out:,} < {wanted:,} requested"))
        budget = self.task.budget_usd
        cost = None
        if price is not None:
            cost = cost_usd(price, Usage(input_tokens=self.est_in, output_tokens=self.est_out))
            if budget is not None and cost > budget:
                found.append(("budget", f"over budget: {_usd(cost)} > {_usd(budget)}"))
        elif budget is not None:
            why = f"unpriced: its cost is unknown, so the {_usd(budget)} budget cannot hold"
            found.append(("unpriced", why))
        if found:
            kinds, reasons = zip(*found, strict=True)
            return _Drop(vendor, model, kinds, reasons, cost)
        name = price.name if price is not None else model
        return Candidate(vendor, name, self.est_in, self.est_out, cost, window)

    def fleet_drops(self, vendor: str, model: str) -> list[tuple[str, str]]:
        """Why the fleet cannot take (vendor, model) now: (kind, reason) pairs."""
        fleet, found = self.fleet, []
        if vendor in self.task.excluded_vendors:
            found.append(("excluded", "excluded after a failure"))
        if (vendor, model) in fleet.cooling:
            found.append(("cooling", "cooling down"))
        if fleet.live.get(vendor, 0) <= 0:
            found.append(("workers", "no live workers"))
        served = fleet.models.get(vendor)
        if served and vendor not in self.prices.defaults and model not in served:
            found.append(("served", f"its live workers serve {', '.join(sorted(served))}"))
        return found


def _none_reason(tier: str, drops: Sequence[_Drop]) -> str:
    counts: dict[str, int] = {}
    for d in drops:
        if set(d.kinds) <= _PIN_KINDS:
            continue
        for r in d.reasons:
            key = r.split(":")[0] if r.startswith("over budget") else r
            key = "context window too small" if key.startswith("context window") else key
            key = "max output too small" if key.startswith("max output") else key
            key = "retired" if key.startswith("retired") else key
            counts[key] = counts.get(key, 0) + 1
    if not counts:
        return f"no model to route a {tier} task to"
    summary = ", ".join(f"{n} {k}" for k, n in counts.items())
    return f"no viable model for the {tier} tier ({summary})"


def _usd(value: float | None) -> str:
    """Dollars with about three significant digits, never in scientific notation; an
    unknown amount (an unpriced model) says so."""
    if value is None:
        return "unpriced"
    if value <= 0:
        return "$0.00"
    decimals = max(2, 2 - math.floor(math.log10(value)))
    text = f"{value:,.{decimals}f}"
    whole, _, frac = text.partition(".")
    frac = frac.rstrip("0").ljust(2, "0")
    return f"${whole}.{frac}"


def _num(value: float) -> str:
    return f"{int(value):,}" if value == int(value) else f"{value:.2f}"
