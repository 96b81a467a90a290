"""Simulator settings: a global default profile, per-vendor and per-model overrides, a seed.

A profile is what one (vendor, model) pair behaves like: latency distribution, fault rates,
`retry-after`, context window, minimum cacheable prompt, how long a `timeout` fault hangs, and
`prefill_s_per_mtok`: extra seconds per million uncached prompt tokens, waited before the
first byte of a successful answer (on top of the latency) and by a Gemini cachedContents
create. Tokens read from a cache (Anthropic cache reads, OpenAI `cached_tokens`, Gemini
`cachedContentTokenCount`) are free; cache writes count, as real prefill happens. Default 0.
`logprobs` (default true): whether the model takes a request for token logprobs (OpenAI
`logprobs`, Gemini `responseLogprobs`); false answers such a request with the vendor's 400,
as reasoning models and some Gemini models do (see `logprobs`).
Lookup for each field, most specific first: the exact model name, then model-name prefixes
(longest first, e.g. `claude-opus` before `claude`), then the vendor, then `defaults`. The
first layer that sets a field wins; `latency` and `faults` are taken whole, not merged.

Vendors are the URL prefixes: anthropic, openai, deepseek, compat, gemini.

`with_overrides(latency_s=S, error_rate=R)` is what the CLI flags do: every request waits a
fixed S seconds, and R is spread as 60% 429, 20% 500, 20% 503 (other fault rates 0). Both
replace whatever the file set at any layer; other fields (`prefill_s_per_mtok` too) stay.

TOML, e.g.:

    seed = 7
    [defaults]
    retry_after_s = 2
    latency = { kind = "lognormal", mean_s = 0.8, sigma = 0.5 }
    [vendors.anthropic.faults]
    rate_529 = 0.02
    [vendors.gemini]
    prefill_s_per_mtok = 2.0
    [models."gemini-2.5-pro"]
    min_cache_tokens = 4096
    prefill_s_per_mtok = 4.0
"""

from __future__ import annotations

import math
import random
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

VENDORS = ("anthropic", "openai", "deepseek", "compat", "gemini")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Latency(_Frozen):
    """`fixed` waits mean_s; `uniform` low_s..high_s; `exponential` and `lognormal` have
    mean mean_s (lognormal's spread is `sigma`, the std-dev of the underlying normal)."""

    kind: Literal["fixed", "uniform", "exponential", "lognormal"] = "fixed"
    mean_s: float = Field(default=0.0, ge=0)
    low_s: float = Field(default=0.0, ge=0)
    high_s: float = Field(default=0.0, ge=0)
    sigma: float = Field(default=0.5, ge=0)

    def sample(self, rng: random.Random) -> float:
        # One draw per call whatever the kind, so a seed replays the same sequence.
        u = rng.random()
        if self.kind == "uniform":
            return self.low_s + (self.high_s - self.low_s) * u
        if self.mean_s <= 0:
            return 0.0
        if self.kind == "exponential":
            return -self.mean_s * math.log(1.0 - u)
        if self.kind == "lognormal":
            mu = math.log(self.mean_s) - self.sigma**2 / 2
            return math.exp(mu + self.sigma * _normal_inv(u))
        return self.mean_s


def _normal_inv(u: float) -> float:
    from statistics import NormalDist  # noqa: PLC0415 - only lognormal needs it

    return NormalDist().inv_cdf(min(max(u, 1e-12), 1 - 1e-12))


class FaultRates(_Frozen):
    """Probability per generation request of each injected fault (sum <= 1).
    529 is Anthropic's overloaded status; other vendors answer 503 instead. `timeout`
    accepts the request and never answers; `context` is the vendor's context-too-long
    error; `quota` is a 429 for exhausted quota (OpenAI code `insufficient_quota`)."""

    rate_429: float = Field(default=0.0, ge=0, le=1)
    rate_500: float = Field(default=0.0, ge=0, le=1)
    rate_503: float = Field(default=0.0, ge=0, le=1)
    rate_529: float = Field(default=0.0, ge=0, le=1)
    rate_timeout: float = Field(default=0.0, ge=0, le=1)
    rate_context: float = Field(default=0.0, ge=0, le=1)
    rate_quota: float = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _at_most_one(self) -> FaultRates:
        if sum(rate for _, rate in self.table()) > 1.0 + 1e-9:
            raise ValueError("fault rates add up to more than 1")
        return self

    def table(self) -> list[tuple[str, float]]:
        return [
            ("429", self.rate_429),
            ("500", self.rate_500),
            ("503", self.rate_503),
            ("529", self.rate_529),
            ("timeout", self.rate_timeout),
            ("context", self.rate_context),
            ("quota", self.rate_quota),
        ]


class Profile(_Frozen):
    """How one (vendor, model) behaves; every field resolved."""

    latency: Latency = Latency()
    faults: FaultRates = FaultRates()
    retry_after_s: float = Field(default=1.0, ge=0)
    context_window: int = Field(default=128_000, gt=0)
    min_cache_tokens: int = Field(default=1024, ge=0)
    timeout_hang_s: float = Field(default=600.0, ge=0)
    prefill_s_per_mtok: float = Field(default=0.0, ge=0)
    logprobs: bool = True

    def prefill_s(self, uncached_tokens: int) -> float:
        """Seconds of prefill for a prompt with this many tokens not read from a cache."""
        return self.prefill_s_per_mtok * max(uncached_tokens, 0) / 1_000_000


class Overrides(_Frozen):
    """A partial profile: unset fields (None) fall through to the next layer."""

    latency: Latency | None = None
    faults: FaultRates | None = None
    retry_after_s: float | None = Field(default=None, ge=0)
    context_window: int | None = Field(default=None, gt=0)
    min_cache_tokens: int | None = Field(default=None, ge=0)
    timeout_hang_s: float | None = Field(default=None, ge=0)
    prefill_s_per_mtok: float | None = Field(default=None, ge=0)
    logprobs: bool | None = None

    def merged_over(self, base: Overrides) -> Overrides:
        return base.model_copy(update=self.model_dump(exclude_none=True))


# Context windows by model-name prefix; a config file's `models` are laid over these.
BUILTIN_MODELS: dict[str, Overrides] = {
    "claude": Overrides(context_window=200_000),
    "gemini": Overrides(context_window=1_048_576),
    "gpt-": Overrides(context_window=128_000),
    "gpt-4.1": Overrides(context_window=1_047_576),
    "gpt-5": Overrides(context_window=400_000),
    "deepseek": Overrides(context_window=128_000),
}

_FIELDS = tuple(Profile.model_fields)


class SimulatorConfig(_Frozen):
    seed: int = 0
    defaults: Profile = Profile()
    vendors: dict[str, Overrides] = Field(default_factory=dict)
    models: dict[str, Overrides] = Field(default_factory=lambda: dict(BUILTIN_MODELS))
    # Streaming: this share of the latency passes before the first byte, the rest is spread
    # between the content chunks (a time-to-first-token, then a token rate).
    stream_first_byte_share: float = Field(default=0.5, ge=0, le=1)
    max_body_bytes: int = Field(default=64 * 1024 * 1024, gt=0)

    _profiles: dict[tuple[str, str], Profile] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _known_vendors(self) -> SimulatorConfig:
        unknown = sorted(set(self.vendors) - set(VENDORS))
        if unknown:
            raise ValueError(f"unknown vendors {unknown}; choose from {', '.join(VENDORS)}")
        return self

    @field_validator("models", mode="after")
    @classmethod
    def _over_builtins(cls, given: dict[str, Overrides]) -> dict[str, Overrides]:
        models = dict(BUILTIN_MODELS)
        for name, override in given.items():
            models[name] = override.merged_over(models[name]) if name in models else override
        return models

    @classmethod
    def from_toml(cls, path: str | Path) -> SimulatorConfig:
        with Path(path).open("rb") as fh:
            return cls.model_validate(tomllib.load(fh))

    def with_overrides(
        self, *, latency_s: float | None = None, error_rate: float | None = None
    ) -> SimulatorConfig:
        if latency_s is None and error_rate is None:
            return self
        if error_rate is not None and not 0 <= error_rate <= 1:
            raise ValueError("error_rate must be between 0 and 1")
        defaults = self.defaults
        cleared: dict[str, None] = {}
        if latency_s is not None:
            defaults = defaults.model_copy(
                update={"latency": Latency(kind="fixed", mean_s=latency_s)}
            )
            cleared["latency"] = None
        if error_rate is not None:
            rates = FaultRates(
                rate_429=error_rate * 0.6, rate_500=error_rate * 0.2, rate_503=error_rate * 0.2
            )
            defaults = defaults.model_copy(update={"faults": rates})
            cleared["faults"] = None
        return self.model_copy(
            update={
                "defaults": defaults,
                "vendors": {k: v.model_copy(update=cleared) for k, v in self.vendors.items()},
                "models": {k: v.model_copy(update=cleared) for k, v in self.models.items()},
            }
        )

    def profile(self, vendor: str, model: str) -> Profile:
        key = (vendor, model)
        found = self._profiles.get(key)
        if found is None:
            found = self._resolve(vendor, model)
            if len(self._profiles) < 10_000:  # model names come from clients: stay bounded
                self._profiles[key] = found
        return found

    def _resolve(self, vendor: str, model: str) -> Profile:
        layers: list[Overrides] = []
        if model in self.models:
            layers.append(self.models[model])
        prefixes = sorted(
            (name for name in self.models if name != model and model.startswith(name)),
            key=len,
            reverse=True,
        )
        layers.extend(self.models[name] for name in prefixes)
        if vendor in self.vendors:
            layers.append(self.vendors[vendor])
        values = {}
        for name in _FIELDS:
            for layer in layers:
                value = getattr(layer, name)
                if value is not None:
                    values[name] = value
                    break
        return self.defaults.model_copy(update=values)
