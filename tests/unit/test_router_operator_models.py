"""Operator models (issue 20, item 4): a model in no price table, announced by a live
worker's membership or declared in the policy, is routed when pinned or listed in a tier,
with its cost unknown (None), never $0. Pure, no Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from services.cli.plan import format_plan, make_plan
from services.dispatcher.policy import Policy
from services.dispatcher.router import Fleet, route
from shared.llm.prices import PriceTable
from shared.protocol.messages import Task

PRICES = PriceTable.load()
COMPAT = "openai-compatible"
# A live openai-compatible worker serving my-llama, beside priced vendors.
FLEET = Fleet(
    live={"deepseek": 1, "claude": 1, COMPAT: 1},
    models={"deepseek": frozenset({"deepseek-flash"}), COMPAT: frozenset({"my-llama"})},
)


def _raw() -> dict[str, Any]:
    text = resources.files("services.dispatcher").joinpath("policy.toml").read_text()
    return tomllib.loads(text)


def _policy_with_llama_in(*tiers: str, **limits: int) -> Policy:
    raw = _raw()
    raw["models"] = {"my-llama": {"vendor": COMPAT, **limits}}
    for tier in tiers:
        raw["tiers"][tier]["models"].append("my-llama")
    return Policy.from_mapping(raw, PRICES, origin="test")


def _pairs(decision: Any) -> list[tuple[str, str]]:
    return [(c.vendor, c.model) for c in decision.candidates]


def test_a_task_pinned_to_the_vendor_goes_to_the_model_its_workers_announce() -> None:
    decision = route(Task(prompt="hello", vendor=COMPAT), Policy.load(), PRICES, FLEET)
    assert decision.chosen is not None, decision.reason
    assert (decision.chosen.vendor, decision.chosen.model) == (COMPAT, "my-llama")
    assert decision.chosen.cost_usd is None  # unpriced: unknown, not $0
    assert decision.chosen.estimated_cost == "unpriced"
    assert "unpriced" in decision.explain()


def test_a_task_pinned_to_the_model_goes_to_the_vendor_that_announces_it() -> None:
    decision = route(Task(prompt="hello", model="my-llama"), Policy.load(), PRICES, FLEET)
    assert decision.chosen is not None, decision.reason
    assert (decision.chosen.vendor, decision.chosen.model) == (COMPAT, "my-llama")
    assert decision.chosen.cost_usd is None


def test_a_model_nobody_announces_is_refused_with_the_reason() -> None:
    gone = Fleet(live={"deepseek": 1})  # the openai-compatible worker has left
    decision = route(Task(prompt="hello", model="my-llama"), Policy.load(), PRICES, gone)
    assert decision.chosen is None
    assert "my-llama" in decision.reason and "no live worker announces it" in decision.reason
    by_vendor = route(Task(prompt="hello", vendor=COMPAT), Policy.load(), PRICES, gone)
    assert by_vendor.chosen is None
    assert "no live worker of it announces one" in by_vendor.reason


def test_a_model_pin_and_a_vendor_pin_that_disagree_are_refused() -> None:
    task = Task(prompt="hello", model="my-llama", vendor="deepseek")
    decision = route(task, Policy.load(), PRICES, FLEET)
    assert decision.chosen is None and "belongs to vendor" in decision.reason


def test_an_announced_model_never_takes_unpinned_work_it_was_not_given() -> None:
    for tier in ("simple", "medium", "complex"):
        decision = route(Task(prompt="hello", complexity=tier), Policy.load(), PRICES, FLEET)
        assert decision.chosen is not None and decision.chosen.cost_usd is not None


def test_a_tier_the_operator_put_it_in_routes_unpinned_work_to_it_first() -> None:
    policy = _policy_with_llama_in("simple")
    decision = route(Task(prompt="hello", complexity="simple"), policy, PRICES, FLEET)
    assert decision.chosen is not None
    assert (decision.chosen.vendor, decision.chosen.model) == (COMPAT, "my-llama")
    assert "unpriced operator model" in decision.reason
    # The priced ones follow, cheapest first; another tier is untouched.
    priced = [c.cost_usd for c in decision.candidates[1:]]
    assert priced and None not in priced and priced == sorted(priced)  # type: ignore[type-var]
    medium = route(Task(prompt="hello", complexity="medium"), policy, PRICES, FLEET)
    assert medium.chosen is not None and medium.chosen.model != "my-llama"


def test_when_its_worker_is_gone_the_tier_falls_back_to_the_priced_models() -> None:
    policy = _policy_with_llama_in("simple")
    gone = Fleet(live={"deepseek": 1})
    decision = route(Task(prompt="hello", complexity="simple"), policy, PRICES, gone)
    assert decision.chosen is not None and decision.chosen.model == "deepseek-flash"
    assert any(d.model == "my-llama" and "no live workers" in d.reason for d in decision.dropped)


def test_a_declared_model_is_routable_by_pin_before_any_worker_announces_it() -> None:
    policy = _policy_with_llama_in()
    cold = Fleet(live={COMPAT: 1})  # e.g. the dispatcher holding a pinned task for workers
    decision = route(Task(prompt="hello", model="my-llama"), policy, PRICES, cold)
    assert decision.chosen is not None and decision.chosen.model == "my-llama"


def test_declared_limits_are_checked() -> None:
    policy = _policy_with_llama_in("simple", context_window=1_000, max_output_tokens=256)
    big = Task(prompt="x" * 8_000, model="my-llama")
    decision = route(big, policy, PRICES, FLEET)
    assert decision.chosen is None
    assert any("context window 1,000" in d.reason for d in decision.dropped)
    long_answer = Task(prompt="hello", model="my-llama", max_output_tokens=1_000)
    assert route(long_answer, policy, PRICES, FLEET).chosen is None


def test_a_task_with_a_budget_never_goes_to_an_unpriced_model() -> None:
    task = Task(prompt="hello", model="my-llama", budget_usd=1.0)
    decision = route(task, Policy.load(), PRICES, FLEET)
    assert decision.chosen is None
    assert any("cost is unknown" in d.reason for d in decision.dropped)


def test_a_vendor_pin_prefers_its_priced_model_over_an_unpriced_one() -> None:
    priced = PRICES.merge(_llama_price())
    fleet = Fleet(live={COMPAT: 1}, models={COMPAT: frozenset({"my-llama", "my-qwen"})})
    decision = route(Task(prompt="hello", vendor=COMPAT), Policy.load(), priced, fleet)
    assert _pairs(decision) == [(COMPAT, "my-llama"), (COMPAT, "my-qwen")]
    assert decision.chosen is not None and decision.chosen.cost_usd is not None
    assert decision.chosen.cost_usd > 0


def test_with_a_price_the_model_is_priced_and_competes_on_cost() -> None:
    priced = PRICES.merge(_llama_price())
    decision = route(Task(prompt="hello", model="my-llama"), Policy.load(), priced, FLEET)
    assert decision.chosen is not None and decision.chosen.cost_usd is not None
    assert decision.chosen.estimated_cost != "unpriced"


def test_an_openai_compatible_worker_serves_only_what_it_announces() -> None:
    priced = PRICES.merge(_llama_price())  # a price for my-llama, but the server has my-qwen
    fleet = Fleet(live={COMPAT: 1}, models={COMPAT: frozenset({"my-qwen"})})
    decision = route(Task(prompt="hello", vendor=COMPAT), Policy.load(), priced, fleet)
    assert decision.chosen is not None and decision.chosen.model == "my-qwen"
    assert any(d.model == "my-llama" and "serve my-qwen" in d.reason for d in decision.dropped)


def test_the_plan_says_its_unpriced_tasks_are_not_in_the_cost() -> None:
    policy = _policy_with_llama_in("simple")
    tasks = [("line 1", Task(prompt="hello", complexity="simple"))]
    text = format_plan(make_plan(tasks, policy, PRICES))
    assert "unpriced" in text and COMPAT in text


def test_the_policy_names_an_undeclared_unknown_model(tmp_path: Path) -> None:
    raw = _raw()
    raw["tiers"]["simple"]["models"].append("my-llama")
    with pytest.raises(ValueError, match=r"tiers\.simple\.models.*'my-llama'.*\[models\]"):
        Policy.from_mapping(raw, PRICES, origin="test")


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"vendor": "acme"}, r"models\.my-llama\.vendor"),
        ({"vendor": COMPAT, "context_window": 0}, r"models\.my-llama\.context_window"),
        ({"vendor": COMPAT, "price": 1}, r"models\.my-llama\.price"),
    ],
)
def test_a_bad_operator_model_is_named(body: dict[str, Any], named: str) -> None:
    raw = _raw()
    raw["models"] = {"my-llama": body}
    with pytest.raises(ValueError, match=named):
        Policy.from_mapping(raw, PRICES, origin="test")


def test_a_declared_vendor_must_agree_with_the_price_table() -> None:
    raw = _raw()
    raw["models"] = {"deepseek-flash": {"vendor": COMPAT}}
    with pytest.raises(ValueError, match="price table gives the model"):
        Policy.from_mapping(raw, PRICES, origin="test")


def _llama_price() -> PriceTable:
    return PriceTable.from_mapping(
        {
            "models": {
                "my-llama": {
                    "vendor": COMPAT,
                    "input_per_mtok": 0.02,
                    "output_per_mtok": 0.04,
                    "context_window": 32_768,
                    "max_output_tokens": 4_096,
                    "source": "our GPU bill",
                    "as_of": "2026-12-01",
                }
            }
        }
    )


def test_swarm_route_reads_the_policy_file_the_dispatcher_reads(tmp_path: Path) -> None:
    text = (
        resources.files("services.dispatcher").joinpath("policy.toml").read_text()
        + '\n[models."my-llama"]\nvendor = "openai-compatible"\n'
    ).replace("models = [\n", 'models = [\n    "my-llama",\n', 1)  # the simple tier
    (tmp_path / "policy.toml").write_text(text)
    env = {**os.environ, "SWARM_DISPATCHER_POLICY_FILE": str(tmp_path / "policy.toml")}
    res = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "route", "hello", "--complexity", "simple"],
        capture_output=True, text=True, timeout=60, check=False, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"{COMPAT}/my-llama  (simple, est. unpriced)"), res.stdout
