"""What tokens cost, and how large a request each model takes: the price table and its
arithmetic.

The figures are data, in `prices.toml` next to this file (every price with its source and
date); this module only reads, checks and applies them. Nothing is read at import time.

* `PriceTable.load()` reads the packaged table, `PriceTable.load(path)` a user file of the
  same shape; `base.merge(user)` lets the user's entries win. The caller decides where the
  user file is (the convention is the `SWARM_PRICES_FILE` environment variable).
* `cost_usd(price, usage)` prices one request; `price_usage(table, model, usage)` does the
  lookup too and answers None, never 0.0, for a model the table does not price.
* `cache_storage_usd` prices keeping an explicit cache (Gemini) for a while.
* `estimate_tokens` is a rough local count for vendors without a counting endpoint.

Errors: a malformed table raises `ValueError` naming the file, the model and the field.
Usage with tokens of a kind the model has no price for (cache reads on a model without a
cache-read price, say) raises `UnpricedUsageError` (a `ValueError`) from `cost_usd`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any, Protocol

from shared.llm.types import Usage
from shared.runtime.datafile import read_toml

__all__ = [
    "PRICES_FILE_ENV",
    "VENDORS",
    "LongContextTier",
    "ModelPrice",
    "PriceTable",
    "UnpricedUsageError",
    "cache_storage_usd",
    "cost_usd",
    "estimate_tokens",
    "price_usage",
]

PRICES_FILE_ENV = "SWARM_PRICES_FILE"  # read by the caller, never here
VENDORS = ("claude", "gemini", "openai", "deepseek", "codex", "openai-compatible")
PER_MTOK = 1_000_000

_RATE_FIELDS = (
    "input_per_mtok",
    "output_per_mtok",
    "cache_read_per_mtok",
    "cache_write_per_mtok",
    "cache_write_1h_per_mtok",
)
_CACHE_FIELDS = _RATE_FIELDS[2:]
_MODEL_FIELDS = frozenset(
    {
        *_RATE_FIELDS,
        "vendor",
        "cache_storage_per_mtok_hour",
        "context_window",
        "max_output_tokens",
        "source",
        "as_of",
        "also",
        "note",
        "retires",
        "aliases",
        "long_context",
    }
)
_TIER_FIELDS = frozenset({"threshold_tokens", *_RATE_FIELDS})
# A dated snapshot at the end of a model name: -20250929, -2025-08-07, @20250929.
_SNAPSHOT = re.compile(r"(?:-\d{8}|-\d{4}-\d{2}-\d{2}|@\d{8})$")


class UnpricedUsageError(ValueError):
    """The usage has tokens of a kind the model has no price for; any number would be a guess."""


@dataclass(frozen=True, slots=True)
class LongContextTier:
    """Rates for a whole request whose prompt is above `threshold_tokens`.

    The prompt is uncached input + cache reads + cache writes; above the threshold every
    token of the request, output included, is billed at these rates (Anthropic, Google and
    OpenAI bill long prompts this way).
    """

    threshold_tokens: int
    input_per_mtok: float
    output_per_mtok: float
    cache_read_per_mtok: float | None = None
    cache_write_per_mtok: float | None = None
    cache_write_1h_per_mtok: float | None = None


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """One model's prices (USD per million tokens) and limits.

    `cache_write_per_mtok` is the default (Anthropic: 5-minute) cache write;
    `cache_write_1h_per_mtok` the 1-hour one. `cache_storage_per_mtok_hour` is what keeping
    an explicit cache costs (Gemini). None means "the table has no price for it".
    `context_window` is the most prompt tokens one request may carry.
    """

    name: str
    vendor: str
    input_per_mtok: float
    output_per_mtok: float
    context_window: int
    max_output_tokens: int
    source: str
    as_of: date
    cache_read_per_mtok: float | None = None
    cache_write_per_mtok: float | None = None
    cache_write_1h_per_mtok: float | None = None
    cache_storage_per_mtok_hour: float | None = None
    long_context: LongContextTier | None = None
    retires: date | None = None
    aliases: tuple[str, ...] = ()
    also: tuple[str, ...] = ()
    note: str = ""

    def retired_on(self, day: date) -> bool:
        """True once the vendor has stopped (or said it will have stopped) serving it."""
        return self.retires is not None and self.retires <= day


class _Rates(Protocol):
    @property
    def input_per_mtok(self) -> float: ...
    @property
    def output_per_mtok(self) -> float: ...
    @property
    def cache_read_per_mtok(self) -> float | None: ...
    @property
    def cache_write_per_mtok(self) -> float | None: ...
    @property
    def cache_write_1h_per_mtok(self) -> float | None: ...


def cost_usd(price: ModelPrice, usage: Usage) -> float:
    """Dollars for one request.

    Each token is priced by its kind: uncached input, output, cache read, cache write
    (5-minute) and 1-hour cache write (`cache_write_1h_tokens` is part of
    `cache_write_tokens`). Cached tokens are never priced as input: if the model has no price
    for a kind the usage contains, `UnpricedUsageError` is raised. Above the model's
    long-context threshold the whole request is billed at the tier's rates.
    """
    _check_usage(usage)
    rates: _Rates = price
    tier = price.long_context
    if tier is not None and usage.prompt_tokens > tier.threshold_tokens:
        rates = tier
    writes_1h = usage.cache_write_1h_tokens
    writes_5m = usage.cache_write_tokens - writes_1h
    total = usage.input_tokens * rates.input_per_mtok + usage.output_tokens * rates.output_per_mtok
    total += _charge(price, "cache read", usage.cache_read_tokens, rates.cache_read_per_mtok)
    total += _charge(price, "cache write", writes_5m, rates.cache_write_per_mtok)
    total += _charge(price, "1-hour cache write", writes_1h, rates.cache_write_1h_per_mtok)
    return total / PER_MTOK


def price_usage(table: PriceTable, model: str, usage: Usage) -> float | None:
    """Dollars for `usage` on `model`, or None when the table cannot price it (never 0.0)."""
    price = table.get(model)
    if price is None:
        return None
    try:
        return cost_usd(price, usage)
    except UnpricedUsageError:
        return None


def cache_storage_usd(price: ModelPrice, tokens: int, seconds: float) -> float | None:
    """Dollars for keeping `tokens` in an explicit cache for `seconds`.

    None when the table has no storage price for the model (Gemini bills storage; the
    others do not, and for some Gemini models the price was not confirmed).
    """
    if tokens < 0 or seconds < 0:
        raise ValueError(f"tokens and seconds must be >= 0, got {tokens} and {seconds}")
    if price.cache_storage_per_mtok_hour is None:
        return None
    return tokens * price.cache_storage_per_mtok_hour / PER_MTOK * seconds / 3600


def estimate_tokens(text: str) -> int:
    """An ESTIMATE of the tokens in `text`: characters / 4, rounded up.

    For vendors without a counting endpoint. Real tokenizers differ by language, content
    and model (newer Claude models count about 30% more tokens for the same text), so use
    it for budgeting and routing, never for billing.
    """
    return math.ceil(len(text) / 4)


class PriceTable:
    """Models by name, their aliases, and each vendor's default model.

    `get` looks a name up predictably, in this order: the exact name; an alias; then the
    name without a leading `models/` and without a trailing date snapshot (`-20250929`,
    `-2025-08-07`, `@20250929`), exact then alias. Anything else is unknown (None).
    """

    def __init__(
        self, models: Iterable[ModelPrice], defaults: Mapping[str, str] | None = None
    ) -> None:
        self._models: dict[str, ModelPrice] = {}
        self._aliases: dict[str, str] = {}
        for model in models:
            if model.name in self._models:
                raise ValueError(f"model {model.name!r} is defined twice")
            self._models[model.name] = model
        for model in self._models.values():
            for alias in model.aliases:
                owner = self._aliases.get(alias, model.name)
                if alias in self._models or owner != model.name:
                    raise ValueError(f"model {model.name!r}: alias {alias!r} is already taken")
                self._aliases[alias] = model.name
        self._defaults = dict(defaults or {})
        for vendor, name in self._defaults.items():
            if vendor not in VENDORS:
                raise ValueError(f"defaults: unknown vendor {vendor!r} (known: {VENDORS})")
            known = self._models.get(name)
            if known is not None and known.vendor != vendor:
                raise ValueError(
                    f"defaults: {vendor} -> {name!r}, but that model's vendor is {known.vendor}"
                )

    @classmethod
    def load(cls, path: Path | None = None) -> PriceTable:
        """The packaged table, or the TOML file at `path`; checked, ValueError if malformed."""
        raw, origin = read_toml("shared.llm", "prices.toml", path)
        return cls.from_mapping(raw, origin=origin)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, origin: str = "<mapping>") -> PriceTable:
        """A table from parsed TOML: `[models."<name>"]` tables and a `[defaults]` table."""
        unknown = set(raw) - {"models", "defaults"}
        if unknown:
            raise ValueError(f"{origin}: unknown top-level key(s) {sorted(unknown)}")
        models = _table(raw.get("models", {}), f"{origin}: [models]")
        defaults = _table(raw.get("defaults", {}), f"{origin}: [defaults]")
        for vendor, name in defaults.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"{origin}: [defaults] {vendor}: expected a model name")
        parsed = [_parse_model(name, body, origin) for name, body in models.items()]
        try:
            return cls(parsed, defaults)
        except ValueError as exc:
            raise ValueError(f"{origin}: {exc}") from None

    def merge(self, other: PriceTable) -> PriceTable:
        """A new table with `other` layered on top: its models replace whole entries of the
        same name (and take over any alias they claim), its defaults replace per vendor."""
        taken = set(other._models) | set(other._aliases)
        kept = [
            replace(m, aliases=tuple(a for a in m.aliases if a not in taken))
            for name, m in self._models.items()
            if name not in other._models
        ]
        return PriceTable([*kept, *other._models.values()], {**self._defaults, **other._defaults})

    def get(self, model: str) -> ModelPrice | None:
        for candidate in _candidates(model):
            name = candidate if candidate in self._models else self._aliases.get(candidate)
            if name is not None:
                return self._models[name]
        return None

    def default_model(self, vendor: str) -> str:
        name = self._defaults.get(vendor)
        if name is None:
            raise KeyError(f"no default model for vendor {vendor!r}; have {sorted(self._defaults)}")
        if name not in self._models:
            raise KeyError(f"default model {name!r} for vendor {vendor!r} is not in the table")
        return name

    def models_for(self, vendor: str, *, on: date | None = None) -> list[ModelPrice]:
        """The vendor's models by name; with `on`, only those not retired by that day."""
        return [m for m in self if m.vendor == vendor and (on is None or not m.retired_on(on))]

    @property
    def defaults(self) -> Mapping[str, str]:
        return dict(self._defaults)

    def __iter__(self) -> Iterator[ModelPrice]:
        return iter(sorted(self._models.values(), key=lambda m: m.name))

    def __len__(self) -> int:
        return len(self._models)


def _candidates(model: str) -> Iterator[str]:
    yield model
    bare = _SNAPSHOT.sub("", model.removeprefix("models/"))
    if bare != model:
        yield bare


def _check_usage(usage: Usage) -> None:
    counts = (
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_tokens,
        usage.cache_write_tokens,
        usage.cache_write_1h_tokens,
    )
    if min(counts) < 0:
        raise ValueError(f"token counts must be >= 0: {usage}")
    if usage.cache_write_1h_tokens > usage.cache_write_tokens:
        raise ValueError(f"cache_write_1h_tokens is part of cache_write_tokens: {usage}")


def _charge(price: ModelPrice, kind: str, tokens: int, rate: float | None) -> float:
    if tokens == 0:
        return 0.0
    if rate is None:
        raise UnpricedUsageError(f"{price.name}: {tokens} {kind} tokens, but no {kind} price")
    return tokens * rate


# --- reading and checking the TOML ------------------------------------------------------


def _table(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a table")
    return value


def _parse_model(name: str, body: object, origin: str) -> ModelPrice:
    where = f"{origin}: model {name!r}"
    raw = _table(body, where)
    unknown = set(raw) - _MODEL_FIELDS
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}")
    vendor = _text(raw, "vendor", where)
    if vendor not in VENDORS:
        raise ValueError(f"{where}: field 'vendor' must be one of {VENDORS}, got {vendor!r}")
    tier = None
    if "long_context" in raw:
        tier = _parse_tier(raw["long_context"], raw, f"{where}: long_context")
    return ModelPrice(
        name=name,
        vendor=vendor,
        input_per_mtok=_must_rate(raw, "input_per_mtok", where),
        output_per_mtok=_must_rate(raw, "output_per_mtok", where),
        cache_read_per_mtok=_rate(raw, "cache_read_per_mtok", where),
        cache_write_per_mtok=_rate(raw, "cache_write_per_mtok", where),
        cache_write_1h_per_mtok=_rate(raw, "cache_write_1h_per_mtok", where),
        cache_storage_per_mtok_hour=_rate(raw, "cache_storage_per_mtok_hour", where),
        context_window=_count(raw, "context_window", where),
        max_output_tokens=_count(raw, "max_output_tokens", where),
        long_context=tier,
        source=_text(raw, "source", where),
        as_of=_must_day(raw, "as_of", where),
        retires=_day(raw, "retires", where),
        aliases=_texts(raw, "aliases", where),
        also=_texts(raw, "also", where),
        note=_text(raw, "note", where, required=False),
    )


def _parse_tier(body: object, base: Mapping[str, Any], where: str) -> LongContextTier:
    raw = _table(body, where)
    unknown = set(raw) - _TIER_FIELDS
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}")
    for key in _CACHE_FIELDS:  # no silent fallback to the base rate above the threshold
        if key in base and key not in raw:
            raise ValueError(f"{where}: field {key!r} is missing (the model has one)")
    return LongContextTier(
        threshold_tokens=_count(raw, "threshold_tokens", where),
        input_per_mtok=_must_rate(raw, "input_per_mtok", where),
        output_per_mtok=_must_rate(raw, "output_per_mtok", where),
        cache_read_per_mtok=_rate(raw, "cache_read_per_mtok", where),
        cache_write_per_mtok=_rate(raw, "cache_write_per_mtok", where),
        cache_write_1h_per_mtok=_rate(raw, "cache_write_1h_per_mtok", where),
    )


def _rate(raw: Mapping[str, Any], key: str, where: str) -> float | None:
    return None if raw.get(key) is None else _must_rate(raw, key, where)


def _must_rate(raw: Mapping[str, Any], key: str, where: str) -> float:
    value = raw.get(key)
    if value is None:
        raise ValueError(f"{where}: field {key!r} is missing")
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{where}: field {key!r} must be a number >= 0, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{where}: field {key!r} must be finite, got {value!r}")
    return float(value)


def _count(raw: Mapping[str, Any], key: str, where: str) -> int:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{where}: field {key!r} must be a whole number > 0, got {value!r}")
    return value


def _text(raw: Mapping[str, Any], key: str, where: str, *, required: bool = True) -> str:
    value = raw.get(key, None if required else "")
    if value is None:
        raise ValueError(f"{where}: field {key!r} is missing")
    if not isinstance(value, str) or (required and not value.strip()):
        raise ValueError(f"{where}: field {key!r} must be a non-empty string, got {value!r}")
    return value


def _texts(raw: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{where}: field {key!r} must be a list of strings, got {value!r}")
    return tuple(value)


def _day(raw: Mapping[str, Any], key: str, where: str) -> date | None:
    return None if raw.get(key) is None else _must_day(raw, key, where)


def _must_day(raw: Mapping[str, Any], key: str, where: str) -> date:
    value = raw.get(key)
    if value is None:
        raise ValueError(f"{where}: field {key!r} is missing")
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"{where}: field {key!r} must be a date (YYYY-MM-DD), got {value!r}")
