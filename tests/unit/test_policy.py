"""The routing policy file: the packaged one loads, a bad one is refused by name."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from services.dispatcher.policy import TIERS, Policy
from shared.llm.prices import PriceTable

PRICES = PriceTable.load()


def _packaged_text() -> str:
    return resources.files("services.dispatcher").joinpath("policy.toml").read_text()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def test_the_packaged_policy_loads_and_names_only_priced_models() -> None:
    policy = Policy.load()
    assert set(policy.tiers) == set(TIERS)
    for tier in policy.tiers.values():
        assert tier.models, tier.name
        assert tier.expected_output_tokens > 0
        for vendor, model in tier.models:
            price = PRICES.get(model)
            assert price is not None and price.vendor == vendor and price.name == model
    assert policy.over_budget in ("cheaper", "reject")
    assert ("codex", "gpt-5.3-codex") in policy.tiers["complex"].models
    assert policy.scorer.ultra_context_tokens == 150_000


def test_a_user_file_of_the_same_shape_loads(tmp_path: Path) -> None:
    text = _packaged_text().replace('over_budget = "cheaper"', 'over_budget = "reject"')
    assert Policy.load(_write(tmp_path, text)).over_budget == "reject"


def test_an_unknown_model_is_refused_by_name(tmp_path: Path) -> None:
    text = _packaged_text().replace('"gpt-5.3-codex"', '"gpt-99-imaginary"', 1)
    with pytest.raises(ValueError, match=r"tiers\.complex\.models.*'gpt-99-imaginary'"):
        Policy.load(_write(tmp_path, text))


def test_models_are_checked_against_the_table_given() -> None:
    tiny = PriceTable([m for m in PRICES if m.vendor != "codex"], {})
    with pytest.raises(ValueError, match=r"gpt-5\.3-codex"):
        Policy.load(prices=tiny)


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ("[scorer.weights]", "[scorer.wieghts]", "scorer.wieghts"),
        ("code_min_markers = 2", "code_min_markers = 0", "scorer.rules.code_min_markers"),
        ('[budget]\nover_budget = "cheaper"', '[budget]\nover_budget = "maybe"', "over_budget"),
        ('strategy = "strategic"', 'strategy = "galactic"', "scorer.task_type.strategy"),
        ('complex = ["medium", "simple"]', 'complex = ["cheap"]', "budget.fallback.complex"),
        ("expected_output_tokens = 500", "expected_output_tokens = -1", "tiers.simple"),
        ("[tiers.strategic]", "[tiers.strategik]", "tiers.strategik"),
        ("complex_at = 3.0", "complex_at = 0.5", "scorer.complex_at"),
    ],
)
def test_a_bad_key_is_named(tmp_path: Path, old: str, new: str, named: str) -> None:
    text = _packaged_text()
    assert old in text
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        Policy.load(_write(tmp_path, text.replace(old, new, 1)))


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "[scorer\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        Policy.load(path)
