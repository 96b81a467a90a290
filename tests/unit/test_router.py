"""The router: tiers, the scorer, pins, drops, escalation and budgets. Pure, no Redis.

Most tests use a small made-up price table so the numbers are obvious; the routing-table
and scorer tests use the packaged policy and prices.
"""

from __future__ import annotations

import tomllib
from datetime import date
from importlib import resources
from typing import Any

import pytest

from services.dispatcher.policy import TIERS, Policy
from services.dispatcher.router import Fleet, route, score
from shared.llm.prices import PriceTable, cost_usd
from shared.llm.types import Usage
from shared.protocol.messages import AttemptRecord, Task

ALL_LIVE = Fleet(live=dict.fromkeys(("claude", "gemini", "openai", "deepseek", "codex"), 2))

# --- a small world: made-up models with obvious prices (USD per million tokens) ---------

_MODELS = {
    #  name:     vendor,     in,    out,  window,    max_out
    "d-cheap": ("deepseek", 0.05, 0.20, 128_000, 64_000),
    "g-small": ("gemini", 0.10, 0.40, 100_000, 64_000),
    "c-small": ("claude", 1.00, 5.00, 200_000, 64_000),
    "o-mid": ("openai", 0.50, 2.00, 400_000, 32_000),
    "c-big": ("claude", 3.00, 15.00, 1_000_000, 128_000),
    "g-big": ("gemini", 2.00, 12.00, 1_000_000, 64_000),
    "x-code": ("codex", 1.75, 14.00, 272_000, 128_000),
    "d-old": ("deepseek", 0.01, 0.01, 1_000_000, 64_000),
}
SMALL_TIERS = {
    "simple": (500, ["d-cheap", "g-small", "c-small"]),
    "medium": (1_000, ["d-cheap", "o-mid", "c-small"]),
    "complex": (4_000, ["c-big", "x-code"]),
    "strategic": (8_000, ["c-big", "g-big"]),
    "ultra_context": (4_000, ["g-big", "c-big"]),
}


def _small_prices() -> PriceTable:
    models: dict[str, Any] = {}
    for name, (vendor, rin, rout, window, max_out) in _MODELS.items():
        models[name] = {
            "vendor": vendor,
            "input_per_mtok": rin,
            "output_per_mtok": rout,
            "context_window": window,
            "max_output_tokens": max_out,
            "source": "test",
            "as_of": date(2026, 1, 1),
        }
    models["d-old"]["retires"] = date(2026, 6, 1)
    return PriceTable.from_mapping({"models": models, "defaults": {"deepseek": "d-cheap"}})


def _small_policy(prices: PriceTable, over_budget: str = "cheaper") -> Policy:
    raw = tomllib.loads(resources.files("services.dispatcher").joinpath("policy.toml").read_text())
    raw["tiers"] = {
        tier: {"expected_output_tokens": out, "models": models}
        for tier, (out, models) in SMALL_TIERS.items()
    }
    raw["budget"]["over_budget"] = over_budget
    return Policy.from_mapping(raw, prices, origin="test")


SMALL = _small_prices()
POLICY = _small_policy(SMALL)
REJECT = _small_policy(SMALL, over_budget="reject")


def _task(prompt: str = "hello", **kw: Any) -> Task:
    return Task(prompt=prompt, **kw)


def _dropped(decision: Any) -> dict[str, str]:
    return {d.model: d.reason for d in decision.dropped}


# --- the routing table -----------------------------------------------------------------


@pytest.mark.parametrize("tier", TIERS)
def test_each_packaged_tier_picks_its_cheapest_live_model(tier: str) -> None:
    policy, prices = Policy.load(), PriceTable.load()
    task = _task("Summarise the attached notes.", complexity=tier)
    decision = route(task, policy, prices, ALL_LIVE)
    assert decision.chosen is not None
    out = policy.tiers[tier].expected_output_tokens
    usage = Usage(input_tokens=decision.chosen.input_tokens, output_tokens=out)
    costs = {m: cost_usd(p, usage) for _, m in policy.tiers[tier].models if (p := prices.get(m))}
    assert (decision.chosen.vendor, decision.chosen.model) in policy.tiers[tier].models
    assert decision.chosen.cost_usd == min(costs.values())
    assert [c.cost_usd for c in decision.candidates] == sorted(costs.values())
    assert decision.dropped == ()


def test_the_small_table_routes_each_tier_to_its_cheapest() -> None:
    chosen = {tier: route(_task(complexity=tier), POLICY, SMALL, ALL_LIVE).chosen for tier in TIERS}
    assert {t: c.model for t, c in chosen.items() if c} == {
        "simple": "d-cheap",
        "medium": "d-cheap",
        "complex": "x-code",  # 4,000 output tokens: $0.056 against c-big's $0.06
        "strategic": "g-big",  # 8,000 output tokens: $0.096 against c-big's $0.12
        "ultra_context": "g-big",
    }


def test_estimated_cost_is_tokens_times_rates() -> None:
    decision = route(_task("x" * 4000, complexity="simple"), POLICY, SMALL, ALL_LIVE)
    assert decision.chosen is not None
    # 1,000 input tokens at $0.05/M + 500 output at $0.20/M
    assert decision.chosen.input_tokens == 1000 and decision.chosen.output_tokens == 500
    assert decision.chosen.cost_usd == pytest.approx(1000 * 0.05e-6 + 500 * 0.20e-6)


def test_max_output_tokens_caps_the_estimate_and_drops_small_outputs() -> None:
    capped = route(_task(complexity="complex", max_output_tokens=100), POLICY, SMALL, ALL_LIVE)
    assert capped.chosen is not None and capped.chosen.output_tokens == 100
    big = route(_task(complexity="medium", max_output_tokens=50_000), POLICY, SMALL, ALL_LIVE)
    assert _dropped(big)["o-mid"] == "max output 32,000 < 50,000 requested"


def test_ties_go_to_the_larger_window() -> None:
    prices = PriceTable.from_mapping(
        {
            "models": {
                name: {
                    "vendor": vendor,
                    "input_per_mtok": 1.0,
                    "output_per_mtok": 1.0,
                    "context_window": window,
                    "max_output_tokens": 1000,
                    "source": "test",
                    "as_of": date(2026, 1, 1),
                }
                for name, vendor, window in (
                    ("a-small", "claude", 100_000),
                    ("b-big", "gemini", 900_000),
                    ("c-big", "openai", 900_000),
                )
            }
        }
    )
    raw = tomllib.loads(resources.files("services.dispatcher").joinpath("policy.toml").read_text())
    models = ["a-small", "c-big", "b-big"]
    raw["tiers"] = {t: {"expected_output_tokens": 100, "models": models} for t in TIERS}
    decision = route(_task(), Policy.from_mapping(raw, prices), prices, ALL_LIVE)
    assert [c.model for c in decision.candidates] == ["b-big", "c-big", "a-small"]


# --- the scorer ------------------------------------------------------------------------

PACKAGED = Policy.load()


@pytest.mark.parametrize(
    ("prompt", "context", "task_type", "tier"),
    [
        ("What is the capital of France?", "", "general", "simple"),
        ("Compare these two options and tell me why one is better.", "", "general", "medium"),
        ("Fix this bug:\n```python\ndef f(x):\n    return x + 1\n```", "", "general", "complex"),
        ("Why does main.py raise this stack trace?", "", "general", "complex"),
        ("Summarise this.", "word " * 160_000, "general", "ultra_context"),
        ("Draft a long-term strategy for the board.", "", "general", "strategic"),
        ("Look at this.", "", "code_review", "complex"),
        ("Look at this.", "", "strategy", "strategic"),
    ],
)
def test_the_scorer(prompt: str, context: str, task_type: str, tier: str) -> None:
    task = _task(prompt, context=context, task_type=task_type)
    first = score(task, PACKAGED)
    assert first[0] == tier, first
    assert score(task, PACKAGED) == first  # deterministic


def test_scorer_features_and_score_are_explainable() -> None:
    tier, value, features = score(
        _task("Analyse the plan step by step; why this refactor of app.ts?"), PACKAGED
    )
    assert features == {
        "input_tokens": 15.0,  # 60 characters / 4
        "code_markers": 2.0,  # refactor, .ts
        "reasoning_markers": 4.0,  # analyse, plan, step by step, why
        "strategic_markers": 0.0,
    }
    assert value == pytest.approx(15 / 20_000 + 2 * 1.0 + 4 * 0.75)
    assert tier == "complex"


def test_markers_match_whole_words_only() -> None:
    _, _, features = score(_task("The planet's keyboard: explain anywhere"), PACKAGED)
    assert features["reasoning_markers"] == 0 and features["strategic_markers"] == 0


def test_explicit_complexity_wins_over_the_scorer() -> None:
    task = _task("Draft a long-term strategy and roadmap for the board.", complexity="simple")
    decision = route(task, PACKAGED, PriceTable.load(), ALL_LIVE)
    assert decision.complexity == "simple" and decision.complexity_source == "explicit"
    assert "strategic" in decision.tier_reason
    scored = route(
        task.model_copy(update={"complexity": None}), PACKAGED, PriceTable.load(), ALL_LIVE
    )
    assert scored.complexity == "strategic" and scored.complexity_source == "scored"


# --- windows ---------------------------------------------------------------------------


def test_a_model_too_small_for_the_input_is_dropped() -> None:
    task = _task("x" * 600_000, complexity="simple")  # 150,000 tokens + 500 out
    decision = route(task, POLICY, SMALL, ALL_LIVE)
    assert decision.chosen is not None and decision.chosen.model == "c-small"
    assert _dropped(decision) == {
        "d-cheap": "context window 128,000 < 150,500 needed",
        "g-small": "context window 100,000 < 150,500 needed",
    }


def test_window_overflow_escalates_to_a_larger_window_model() -> None:
    task = _task("x" * 1_000_000, complexity="simple")  # 250,000 tokens: no simple model fits
    decision = route(task, POLICY, SMALL, ALL_LIVE)
    assert decision.chosen is not None and decision.chosen.model == "g-big"
    assert decision.complexity == "simple"
    assert "escalated" in decision.reason and "250,500 tokens" in decision.reason
    assert set(_dropped(decision)) == {"d-cheap", "g-small", "c-small"}
    assert {c.model for c in decision.candidates} == {"g-big", "c-big"}


def test_nothing_fits_at_all() -> None:
    task = _task(context="x" * 4_100_000, complexity="simple")  # 1,025,002 tokens
    decision = route(task, POLICY, SMALL, ALL_LIVE)
    assert decision.chosen is None
    assert "context window too small" in decision.reason
    assert "context window 1,000,000 < 1,025,502 needed" in _dropped(decision)["g-big"]


# --- pins --------------------------------------------------------------------------------


def test_a_vendor_pin_keeps_only_that_vendor() -> None:
    decision = route(_task(complexity="simple", vendor="claude"), POLICY, SMALL, ALL_LIVE)
    assert decision.chosen is not None and decision.chosen.model == "c-small"
    assert _dropped(decision) == {
        "d-cheap": "not the pinned vendor (claude)",
        "g-small": "not the pinned vendor (claude)",
    }


def test_a_vendor_pin_outside_the_tier_is_honoured() -> None:
    decision = route(_task(complexity="simple", vendor="codex"), POLICY, SMALL, ALL_LIVE)
    assert decision.chosen is not None
    assert (decision.chosen.vendor, decision.chosen.model) == ("codex", "x-code")


def test_a_model_pin_is_honoured_even_outside_the_tier() -> None:
    decision = route(_task(complexity="simple", model="o-mid"), POLICY, SMALL, ALL_LIVE)
    assert decision.chosen is not None and decision.chosen.model == "o-mid"
    assert _dropped(decision)["d-cheap"] == "not the pinned model (o-mid)"


def test_an_unknown_pinned_model_routes_nowhere_and_says_so() -> None:
    decision = route(_task(model="gpt-99-imaginary"), POLICY, SMALL, ALL_LIVE)
    assert decision.chosen is None and decision.candidates == ()
    assert "gpt-99-imaginary" in decision.reason and "price table" in decision.reason


def test_a_model_pin_of_another_vendor_than_the_vendor_pin() -> None:
    decision = route(_task(model="o-mid", vendor="claude"), POLICY, SMALL, ALL_LIVE)
    assert decision.chosen is None and "o-mid" in decision.reason and "claude" in decision.reason


def test_a_pinned_model_without_workers_is_not_swapped_for_another() -> None:
    fleet = Fleet(live={"deepseek": 1})
    decision = route(_task(model="o-mid"), POLICY, SMALL, fleet)
    assert decision.chosen is None and _dropped(decision)["o-mid"] == "no live workers"


# --- the fleet, exclusions, retirement ----------------------------------------------------


def test_a_cooling_model_is_dropped() -> None:
    fleet = Fleet(live=ALL_LIVE.live, cooling=frozenset({("deepseek", "d-cheap")}))
    decision = route(_task(complexity="simple"), POLICY, SMALL, fleet)
    assert decision.chosen is not None and decision.chosen.model == "g-small"
    assert _dropped(decision) == {"d-cheap": "cooling down"}


def test_a_vendor_without_live_workers_is_dropped() -> None:
    fleet = Fleet(live={"gemini": 1, "claude": 3, "deepseek": 0})
    decision = route(_task(complexity="simple"), POLICY, SMALL, fleet)
    assert decision.chosen is not None and decision.chosen.model == "g-small"
    assert _dropped(decision) == {"d-cheap": "no live workers"}


def test_an_excluded_vendor_is_dropped() -> None:
    task = _task(
        complexity="simple",
        excluded_vendors=("deepseek",),
        history=(AttemptRecord(vendor="deepseek", error="500"),),
        attempt=2,
    )
    decision = route(task, POLICY, SMALL, ALL_LIVE)
    assert decision.chosen is not None and decision.chosen.model == "g-small"
    assert _dropped(decision) == {"d-cheap": "excluded after a failure"}


def test_every_reason_is_given_and_no_workers_anywhere_routes_nowhere() -> None:
    fleet = Fleet(live={}, cooling=frozenset({("gemini", "g-small")}))
    decision = route(_task(complexity="simple"), POLICY, SMALL, fleet)
    assert decision.chosen is None
    assert _dropped(decision)["g-small"] == "cooling down; no live workers"
    assert (
        decision.reason == "no viable model for the simple tier (3 no live workers, 1 cooling down)"
    )


def test_retired_models_are_dropped_when_a_day_is_given() -> None:
    raw_prices = _small_prices()
    task = _task(model="d-old")
    assert route(task, POLICY, raw_prices, ALL_LIVE).chosen is not None
    late = route(task, POLICY, raw_prices, ALL_LIVE, on=date(2026, 7, 1))
    assert late.chosen is None and _dropped(late)["d-old"] == "retired on 2026-06-01"


# --- budgets -----------------------------------------------------------------------------


def test_a_budget_drops_the_models_above_it() -> None:
    # complex: 1 input + 4,000 output tokens; c-big $0.06, x-code $0.056
    decision = route(_task("hi", complexity="complex", budget_usd=0.058), POLICY, SMALL, ALL_LIVE)
    assert decision.chosen is not None and decision.chosen.model == "x-code"


def test_over_budget_cheaper_falls_back_to_a_cheaper_tier() -> None:
    task = _task("hi", complexity="complex", budget_usd=0.01)
    decision = route(task, POLICY, SMALL, ALL_LIVE)
    assert decision.chosen is not None and decision.chosen.model == "d-cheap"
    assert decision.chosen.output_tokens == 4_000  # the task's own tier's estimate
    assert decision.complexity == "complex"
    assert _dropped(decision) == {
        "c-big": "over budget: $0.06 > $0.01",
        "x-code": "over budget: $0.056 > $0.01",
        "c-small": "over budget: $0.02 > $0.01",  # tried in the medium tier
    }
    assert "medium-tier" in decision.reason and "x-code est. $0.056 > $0.01" in decision.reason


def test_over_budget_reject_routes_nowhere_with_the_numbers() -> None:
    task = _task("hi", complexity="complex", budget_usd=0.01)
    decision = route(task, REJECT, SMALL, ALL_LIVE)
    assert decision.chosen is None and decision.candidates == ()
    assert decision.reason == (
        "over budget: cheapest viable model x-code est. $0.056 > $0.01 (over_budget = reject)"
    )


def test_over_budget_with_no_cheaper_tier_left() -> None:
    task = _task("hi", complexity="simple", budget_usd=0.00001)
    decision = route(task, POLICY, SMALL, ALL_LIVE)
    assert decision.chosen is None and "no cheaper tier fits" in decision.reason


# --- explain -----------------------------------------------------------------------------


def test_explain_names_the_tier_the_drops_and_the_choice() -> None:
    fleet = Fleet(live={"gemini": 1, "claude": 1}, cooling=frozenset({("claude", "c-small")}))
    decision = route(_task("What is 2 + 2?"), POLICY, SMALL, fleet)
    text = decision.explain()
    assert decision.chosen is not None and decision.chosen.model == "g-small"
    assert "tier: simple (scored" in text
    assert "input_tokens=4" in text
    assert "d-cheap (deepseek): no live workers" in text
    assert "c-small (claude): cooling down" in text
    assert "-> g-small (gemini): $0.0002" in text
    assert "decision: g-small (gemini) at $0.0002" in text


def test_explain_when_nothing_is_chosen() -> None:
    text = route(_task(model="nope"), POLICY, SMALL, ALL_LIVE).explain()
    assert "candidates: none" in text and "decision: nothing: pinned model 'nope'" in text
