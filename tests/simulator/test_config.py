"""Configuration: TOML, the lookup order, CLI overrides, latency distributions; cache TTLs."""

from __future__ import annotations

import argparse
import random
import statistics
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.simulator.caching import AnthropicCache, Breakpoint
from services.simulator.config import FaultRates, Latency, Overrides, SimulatorConfig
from services.simulator.main import load_config
from services.simulator.tokens import part

TOML = """
seed = 7
[defaults]
retry_after_s = 2
latency = { kind = "exponential", mean_s = 0.25 }

[vendors.anthropic]
context_window = 150000
faults = { rate_529 = 0.1 }

[models."claude-"]
min_cache_tokens = 2048

[models."claude-opus"]
min_cache_tokens = 4096
timeout_hang_s = 30

[models."claude-opus-4-7"]
retry_after_s = 5

[models."gemini-2.5-pro"]
min_cache_tokens = 4096
"""


@pytest.fixture
def config(tmp_path: Path) -> SimulatorConfig:
    path = tmp_path / "sim.toml"
    path.write_text(TOML)
    return SimulatorConfig.from_toml(path)


def test_the_most_specific_layer_wins_field_by_field(config: SimulatorConfig) -> None:
    opus = config.profile("anthropic", "claude-opus-4-7")
    assert opus.retry_after_s == 5  # exact model
    assert opus.timeout_hang_s == 30  # longest prefix
    assert opus.min_cache_tokens == 4096  # longest prefix beats a shorter one
    assert opus.context_window == 200_000  # built-in "claude" prefix beats the vendor
    assert opus.faults.rate_529 == 0.1  # vendor
    assert opus.latency == Latency(kind="exponential", mean_s=0.25)  # defaults

    sonnet = config.profile("anthropic", "claude-sonnet-4-6")
    assert (sonnet.min_cache_tokens, sonnet.retry_after_s, sonnet.timeout_hang_s) == (2048, 2, 600)
    assert config.profile("anthropic", "my-finetune").context_window == 150_000  # vendor
    assert config.profile("gemini", "gemini-2.5-pro").min_cache_tokens == 4096
    assert config.profile("gemini", "gemini-2.5-flash").min_cache_tokens == 1024
    assert config.seed == 7


def test_default_context_windows() -> None:
    config = SimulatorConfig()
    windows = {
        model: config.profile(vendor, model).context_window
        for vendor, model in [
            ("anthropic", "claude-haiku-4-5"),
            ("gemini", "gemini-2.5-flash"),
            ("openai", "gpt-4o-mini"),
            ("openai", "gpt-5-mini"),
            ("deepseek", "deepseek-chat"),
            ("compat", "llama3.1:8b"),
        ]
    }
    assert windows == {
        "claude-haiku-4-5": 200_000,
        "gemini-2.5-flash": 1_048_576,
        "gpt-4o-mini": 128_000,
        "gpt-5-mini": 400_000,
        "deepseek-chat": 128_000,
        "llama3.1:8b": 128_000,
    }


def test_with_overrides_beat_every_layer(config: SimulatorConfig) -> None:
    flagged = config.with_overrides(latency_s=0.5, error_rate=0.1)
    opus = flagged.profile("anthropic", "claude-opus-4-7")
    assert opus.latency == Latency(kind="fixed", mean_s=0.5)
    rates = dict(opus.faults.table())
    assert rates == pytest.approx(
        dict(FaultRates(rate_429=0.06, rate_500=0.02, rate_503=0.02).table())
    )
    assert opus.retry_after_s == 5  # untouched by the flags
    assert config.with_overrides() is config


def test_load_config_applies_cli_flags(tmp_path: Path) -> None:
    path = tmp_path / "sim.toml"
    path.write_text(TOML)
    args = argparse.Namespace(port=None, latency=0.2, error_rate=None, config=str(path))
    loaded = load_config(args)
    assert loaded.seed == 7
    assert loaded.profile("openai", "gpt-4o").latency.mean_s == 0.2
    assert load_config(argparse.Namespace()) == SimulatorConfig()


@pytest.mark.parametrize(
    "text",
    [
        "[vendors.nosuchvendor]\nretry_after_s = 1\n",
        "[defaults.faults]\nrate_429 = 0.7\nrate_500 = 0.7\n",
        "[defaults]\nlatency = { kind = 'gaussian' }\n",
        "[models.x]\nunknown_field = 1\n",
    ],
)
def test_bad_files_are_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValidationError):
        SimulatorConfig.from_toml(path)


@pytest.mark.parametrize(
    "latency",
    [
        Latency(kind="fixed", mean_s=0.4),
        Latency(kind="uniform", low_s=0.2, high_s=0.6),
        Latency(kind="exponential", mean_s=0.4),
        Latency(kind="lognormal", mean_s=0.4, sigma=0.5),
    ],
)
def test_latency_distributions_have_the_configured_mean(latency: Latency) -> None:
    rng = random.Random(3)
    samples = [latency.sample(rng) for _ in range(20_000)]
    assert min(samples) >= 0
    assert statistics.fmean(samples) == pytest.approx(0.4, rel=0.05)
    if latency.kind == "uniform":
        assert min(samples) >= 0.2 and max(samples) <= 0.6


def test_anthropic_cache_entries_expire_after_their_ttl() -> None:
    cache = AnthropicCache()
    parts = [part("system", "a" * 8000), part("user", "question")]
    five_min = [Breakpoint(0, "5m")]

    def account(bps: list[Breakpoint], now: float) -> tuple[int, int]:
        usage = cache.account("claude-x", parts, bps, 1024, now)
        return usage.cache_creation, usage.cache_read

    assert account(five_min, 0) == (2000, 0)
    assert account(five_min, 299) == (0, 2000)  # a hit refreshes the TTL...
    assert account(five_min, 598) == (0, 2000)
    assert account(five_min, 899) == (2000, 0)  # ...but not forever
    assert account([Breakpoint(0, "1h")], 1000) == (0, 2000)  # still live: written at 899
    assert account([Breakpoint(0, "1h")], 1000 + 3599) == (0, 2000)
    assert account(five_min, 1000 + 3599 + 3601) == (2000, 0)


def test_overrides_merge_over_builtin_prefixes() -> None:
    config = SimulatorConfig(models={"claude": Overrides(min_cache_tokens=2048)})
    profile = config.profile("anthropic", "claude-haiku-4-5")
    assert (profile.context_window, profile.min_cache_tokens) == (200_000, 2048)
