"""The routing policy: scorer weights, tier model lists and the budget rule, read from TOML.

`Policy.load()` reads the packaged `policy.toml` next to this file; `Policy.load(path)` a
user file of the same shape. Every key is checked: an unknown or malformed one, or a model
neither the price table nor the policy's own `[models]` knows, raises `ValueError` naming
the file and the key. Nothing is read at import time.

`[models."<name>"]` declares an operator model: one in no price table (an OpenAI-compatible
server's own), served by the workers of `vendor`, with the `context_window` and
`max_output_tokens` the router checks when given. A tier may then list it like any other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from shared.llm.prices import VENDORS, PriceTable
from shared.protocol.messages import Complexity
from shared.runtime.datafile import read_toml

__all__ = ["TIERS", "OperatorModel", "Policy", "ScorerPolicy", "TierPolicy"]

# Every tier, lowest first; the order is how "at least this tier" rules are compared.
TIERS: tuple[str, ...] = (
    Complexity.SIMPLE.value,
    Complexity.MEDIUM.value,
    Complexity.COMPLEX.value,
    Complexity.STRATEGIC.value,
    Complexity.ULTRA_CONTEXT.value,
)
OverBudget = Literal["cheaper", "reject"]


@dataclass(frozen=True)
class TierPolicy:
    """One tier: its allowed (vendor, model) pairs and the output an answer typically takes."""

    name: str
    models: tuple[tuple[str, str], ...]
    expected_output_tokens: int


@dataclass(frozen=True)
class OperatorModel:
    """A model the price table does not know, served by `vendor`'s workers; its limits,
    when the operator gave them (None: unknown, not checked)."""

    name: str
    vendor: str
    context_window: int | None = None
    max_output_tokens: int | None = None


@dataclass(frozen=True)
class ScorerPolicy:
    """Weights and thresholds of the complexity scorer (see policy.toml for the formula)."""

    tokens_per_point: int
    ultra_context_tokens: int
    medium_at: float
    complex_at: float
    code_weight: float
    reasoning_weight: float
    strategic_weight: float
    code_min_markers: int
    strategic_min_markers: int
    code_markers: tuple[str, ...]
    reasoning_markers: tuple[str, ...]
    strategic_markers: tuple[str, ...]
    task_type_tiers: Mapping[str, str]


@dataclass(frozen=True)
class Policy:
    scorer: ScorerPolicy
    tiers: Mapping[str, TierPolicy]
    over_budget: OverBudget
    budget_fallback: Mapping[str, tuple[str, ...]]
    origin: str = "<policy>"
    operator_models: Mapping[str, OperatorModel] = field(
        default_factory=lambda: MappingProxyType({})
    )

    @classmethod
    def load(cls, path: Path | None = None, prices: PriceTable | None = None) -> Policy:
        """The packaged policy, or the TOML file at `path`, checked against `prices`
        (default: the packaged price table). ValueError names the file and the bad key."""
        raw, origin = read_toml("services.dispatcher", "policy.toml", path)
        return cls.from_mapping(raw, prices or PriceTable.load(), origin=origin)

    @classmethod
    def from_mapping(
        cls, raw: Mapping[str, Any], prices: PriceTable, *, origin: str = "<policy>"
    ) -> Policy:
        _keys(raw, {"scorer", "tiers", "budget", "models"}, "", origin)
        scorer = _scorer(_table(raw, "scorer", origin), origin)
        operators = _operator_models(_table(raw, "models", origin), prices, origin)
        tiers_raw = _table(raw, "tiers", origin)
        _keys(tiers_raw, set(TIERS), "tiers", origin, required=True)
        tiers = {name: _tier(name, tiers_raw[name], prices, operators, origin) for name in TIERS}
        budget = _table(raw, "budget", origin)
        _keys(budget, {"over_budget", "fallback"}, "budget", origin)
        over = budget.get("over_budget", "cheaper")
        if over not in ("cheaper", "reject"):
            raise ValueError(
                f"{origin}: budget.over_budget must be 'cheaper' or 'reject', got {over!r}"
            )
        fallback_raw = _table(budget, "fallback", origin, prefix="budget")
        _keys(fallback_raw, set(TIERS), "budget.fallback", origin)
        fallback: dict[str, tuple[str, ...]] = {}
        for tier in TIERS:
            key = f"budget.fallback.{tier}"
            names = _strings(fallback_raw.get(tier, []), key, origin)
            for name in names:
                if name not in TIERS or name == tier:
                    raise ValueError(f"{origin}: {key}: {name!r} is not another tier {TIERS}")
            fallback[tier] = names
        return cls(
            scorer=scorer,
            tiers=MappingProxyType(tiers),
            over_budget="reject" if over == "reject" else "cheaper",
            budget_fallback=MappingProxyType(fallback),
            origin=origin,
            operator_models=MappingProxyType(operators),
        )


# --- reading and checking -----------------------------------------------------------------


def _keys(
    raw: Mapping[str, Any], allowed: set[str], where: str, origin: str, *, required: bool = False
) -> None:
    prefix = f"{where}." if where else ""
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ValueError(f"{origin}: unknown key {prefix}{unknown[0]} (allowed: {sorted(allowed)})")
    if required:
        missing = [k for k in sorted(allowed) if k not in raw]
        if missing:
            raise ValueError(f"{origin}: missing key {prefix}{missing[0]}")


def _table(raw: Mapping[str, Any], key: str, origin: str, *, prefix: str = "") -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        name = f"{prefix}.{key}" if prefix else key
        raise ValueError(f"{origin}: {name} must be a table, got {value!r}")
    return value


def _number(raw: Mapping[str, Any], key: str, where: str, origin: str) -> float:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{origin}: {where}.{key} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{origin}: {where}.{key} must be a finite number >= 0, got {value!r}")
    return float(value)


def _count(raw: Mapping[str, Any], key: str, where: str, origin: str) -> int:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{origin}: {where}.{key} must be a whole number > 0, got {value!r}")
    return value


def _strings(value: object, where: str, origin: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{origin}: {where} must be a list of non-empty strings, got {value!r}")
    return tuple(value)


def _scorer(raw: Mapping[str, Any], origin: str) -> ScorerPolicy:
    top = {"tokens_per_point", "ultra_context_tokens", "medium_at", "complex_at"}
    _keys(raw, {*top, "weights", "rules", "markers", "task_type"}, "scorer", origin)
    for key in sorted(top):
        if key not in raw:
            raise ValueError(f"{origin}: missing key scorer.{key}")
    weights = _table(raw, "weights", origin, prefix="scorer")
    _keys(weights, {"code", "reasoning", "strategic"}, "scorer.weights", origin, required=True)
    rules = _table(raw, "rules", origin, prefix="scorer")
    _keys(
        rules, {"code_min_markers", "strategic_min_markers"}, "scorer.rules", origin, required=True
    )
    markers = _table(raw, "markers", origin, prefix="scorer")
    _keys(markers, {"code", "reasoning", "strategic"}, "scorer.markers", origin, required=True)
    task_types = _table(raw, "task_type", origin, prefix="scorer")
    for word, tier in task_types.items():
        if tier not in TIERS:
            raise ValueError(
                f"{origin}: scorer.task_type.{word} must be one of {TIERS}, got {tier!r}"
            )
    medium_at = _number(raw, "medium_at", "scorer", origin)
    complex_at = _number(raw, "complex_at", "scorer", origin)
    if complex_at < medium_at:
        raise ValueError(
            f"{origin}: scorer.complex_at ({complex_at}) must be >= scorer.medium_at ({medium_at})"
        )
    return ScorerPolicy(
        tokens_per_point=_count(raw, "tokens_per_point", "scorer", origin),
        ultra_context_tokens=_count(raw, "ultra_context_tokens", "scorer", origin),
        medium_at=medium_at,
        complex_at=complex_at,
        code_weight=_number(weights, "code", "scorer.weights", origin),
        reasoning_weight=_number(weights, "reasoning", "scorer.weights", origin),
        strategic_weight=_number(weights, "strategic", "scorer.weights", origin),
        code_min_markers=_count(rules, "code_min_markers", "scorer.rules", origin),
        strategic_min_markers=_count(rules, "strategic_min_markers", "scorer.rules", origin),
        code_markers=_markers(markers, "code", origin),
        reasoning_markers=_markers(markers, "reasoning", origin),
        strategic_markers=_markers(markers, "strategic", origin),
        task_type_tiers=MappingProxyType({str(k).lower(): v for k, v in task_types.items()}),
    )


def _markers(raw: Mapping[str, Any], key: str, origin: str) -> tuple[str, ...]:
    return tuple(m.lower() for m in _strings(raw[key], f"scorer.markers.{key}", origin))


def _operator_models(
    raw: Mapping[str, Any], prices: PriceTable, origin: str
) -> dict[str, OperatorModel]:
    out: dict[str, OperatorModel] = {}
    for model, body in raw.items():
        where = f"models.{model}"
        if not isinstance(body, dict):
            raise ValueError(f"{origin}: {where} must be a table, got {body!r}")
        _keys(body, {"vendor", "context_window", "max_output_tokens"}, where, origin)
        vendor = body.get("vendor")
        if vendor not in VENDORS:
            raise ValueError(f"{origin}: {where}.vendor must be one of {VENDORS}, got {vendor!r}")
        priced = prices.get(model)
        if priced is not None and priced.vendor != vendor:
            raise ValueError(
                f"{origin}: {where}.vendor is {vendor!r}, but the price table gives the model "
                f"to {priced.vendor!r}"
            )
        limits = {
            k: _count(body, k, where, origin)
            for k in ("context_window", "max_output_tokens")
            if k in body
        }
        out[model] = OperatorModel(model, vendor, **limits)
    return out


def _tier(
    name: str,
    body: object,
    prices: PriceTable,
    operators: Mapping[str, OperatorModel],
    origin: str,
) -> TierPolicy:
    where = f"tiers.{name}"
    if not isinstance(body, dict):
        raise ValueError(f"{origin}: {where} must be a table, got {body!r}")
    _keys(body, {"models", "expected_output_tokens"}, where, origin, required=True)
    names = _strings(body["models"], f"{where}.models", origin)
    if not names:
        raise ValueError(f"{origin}: {where}.models must name at least one model")
    models: list[tuple[str, str]] = []
    for model in names:
        price = prices.get(model)
        if price is not None:
            pair = (price.vendor, price.name)
        elif model in operators:
            pair = (operators[model].vendor, model)
        else:
            raise ValueError(
                f"{origin}: {where}.models: unknown model {model!r} (not in prices, nor "
                "declared under [models])"
            )
        if pair in models:
            raise ValueError(f"{origin}: {where}.models: {model!r} is listed twice")
        models.append(pair)
    return TierPolicy(
        name=name,
        models=tuple(models),
        expected_output_tokens=_count(body, "expected_output_tokens", where, origin),
    )
