"""The price table: the packaged data loads and holds together, and the arithmetic matches
costs worked out by hand from the vendors' published rates."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from shared.llm.prices import (
    VENDORS,
    ModelPrice,
    PriceTable,
    UnpricedUsageError,
    cache_storage_usd,
    cost_usd,
    estimate_tokens,
    price_usage,
)
from shared.llm.types import Usage
from shared.protocol import KNOWN_VENDORS

PRICED_VENDORS = ("claude", "gemini", "openai", "deepseek", "codex")
TABLE_DAY = date(2026, 11, 25)  # the day the packaged table was compiled


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.load()


def price(table: PriceTable, name: str) -> ModelPrice:
    found = table.get(name)
    assert found is not None, name
    return found


# --- the packaged table --------------------------------------------------------------------


def test_packaged_table_loads_and_every_entry_is_complete(table: PriceTable) -> None:
    assert len(table) >= 25
    for m in table:
        assert m.vendor in VENDORS
        assert m.input_per_mtok >= 0 and m.output_per_mtok >= 0
        assert m.context_window > 0 and m.max_output_tokens > 0
        assert m.source.strip(), m.name
        assert date(2025, 1, 1) <= m.as_of <= TABLE_DAY, m.name


def test_vendor_names_are_the_protocols() -> None:
    assert tuple(VENDORS) == tuple(KNOWN_VENDORS)


@pytest.mark.parametrize("vendor", PRICED_VENDORS)
def test_every_vendor_has_a_live_default_model_in_the_table(table: PriceTable, vendor: str) -> None:
    default = price(table, table.default_model(vendor))
    assert default.vendor == vendor
    assert not default.retired_on(TABLE_DAY)
    assert default in table.models_for(vendor, on=TABLE_DAY)


def test_the_models_the_router_expects_are_priced(table: PriceTable) -> None:
    for name in (
        "claude-haiku-4-5",
        "claude-sonnet-4-5",
        "claude-opus-4-5",
        "gemini-2.5-pro",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "gpt-4o-mini",
        "gpt-5-codex",
        "deepseek-chat",
        "deepseek-reasoner",
    ):
        assert table.get(name) is not None, name


def test_cached_tokens_cost_less_than_the_same_tokens_uncached(table: PriceTable) -> None:
    checked = 0
    for m in table:
        if m.cache_read_per_mtok is None:
            continue
        for prompt in (10_000, 900_000):  # below and (where there is one) above a tier
            if prompt > m.context_window:
                continue
            cached = cost_usd(m, Usage(cache_read_tokens=prompt))
            uncached = cost_usd(m, Usage(input_tokens=prompt))
            assert cached < uncached, (m.name, prompt)
            checked += 1
    assert checked >= 25


def test_long_context_tiers_cost_more_and_restate_every_cache_rate(table: PriceTable) -> None:
    tiered = [m for m in table if m.long_context is not None]
    assert {"claude-sonnet-4-5", "gemini-2.5-pro", "claude-haiku-5-5"} <= {m.name for m in tiered}
    for m in tiered:
        tier = m.long_context
        assert tier is not None
        assert tier.input_per_mtok > m.input_per_mtok and tier.output_per_mtok > m.output_per_mtok
        for base_rate, tier_rate in (
            (m.cache_read_per_mtok, tier.cache_read_per_mtok),
            (m.cache_write_per_mtok, tier.cache_write_per_mtok),
            (m.cache_write_1h_per_mtok, tier.cache_write_1h_per_mtok),
        ):
            assert (base_rate is None) == (tier_rate is None), m.name


# --- costs worked out by hand ---------------------------------------------------------------


def test_sonnet_4_5_mixed_request(table: PriceTable) -> None:
    # $3 in, $15 out, $0.30 cache read, $3.75 5-minute cache write (per million):
    # 1,000 x 3 + 500 x 15 + 2,000 x 0.30 + 1,000 x 3.75 = 14,850 per million = $0.01485
    usage = Usage(
        input_tokens=1_000, output_tokens=500, cache_read_tokens=2_000, cache_write_tokens=1_000
    )
    assert cost_usd(price(table, "claude-sonnet-4-5"), usage) == pytest.approx(0.01485, abs=1e-12)


def test_sonnet_4_5_above_200k_bills_the_whole_request_at_tier_rates(table: PriceTable) -> None:
    # Prompt 200,000 + 2,000 + 1,000 = 203,000 > 200K, so $6 / $22.50 / $0.60 / $7.50:
    # 200,000 x 6 + 500 x 22.5 + 2,000 x 0.6 + 1,000 x 7.5 = 1,219,950 per million
    usage = Usage(
        input_tokens=200_000, output_tokens=500, cache_read_tokens=2_000, cache_write_tokens=1_000
    )
    assert cost_usd(price(table, "claude-sonnet-4-5"), usage) == pytest.approx(1.21995, abs=1e-12)


def test_a_prompt_of_exactly_the_threshold_stays_at_base_rates(table: PriceTable) -> None:
    sonnet = price(table, "claude-sonnet-4-5")
    at = Usage(input_tokens=199_000, cache_read_tokens=1_000, output_tokens=1_000)
    # 199,000 x 3 + 1,000 x 0.30 + 1,000 x 15 = 612,300 per million
    assert cost_usd(sonnet, at) == pytest.approx(0.6123, abs=1e-12)
    over = Usage(input_tokens=199_001, cache_read_tokens=1_000, output_tokens=1_000)
    # 199,001 x 6 + 1,000 x 0.60 + 1,000 x 22.50 = 1,217,106 per million
    assert cost_usd(sonnet, over) == pytest.approx(1.217106, abs=1e-12)


def test_one_hour_cache_writes_are_priced_apart(table: PriceTable) -> None:
    # 600 5-minute writes x $3.75 + 400 1-hour writes x $6 = 4,650 per million
    usage = Usage(cache_write_tokens=1_000, cache_write_1h_tokens=400)
    assert cost_usd(price(table, "claude-sonnet-4-5"), usage) == pytest.approx(0.00465, abs=1e-12)


def test_haiku_5_5_tier_starts_above_100k(table: PriceTable) -> None:
    haiku = price(table, "claude-haiku-5-5")
    below = Usage(input_tokens=100_000, output_tokens=1_000)  # 100,000 x 0.10 + 1,000 x 0.50
    assert cost_usd(haiku, below) == pytest.approx(0.0105, abs=1e-12)
    above = Usage(input_tokens=100_001, output_tokens=1_000)  # 100,001 x 0.50 + 1,000 x 2.50
    assert cost_usd(haiku, above) == pytest.approx(0.0525005, abs=1e-12)


def test_gemini_2_5_pro_tiers_and_cached_content(table: PriceTable) -> None:
    pro = price(table, "gemini-2.5-pro")
    # 10,000 fresh + 100,000 cached, 2,000 out: 10,000 x 1.25 + 100,000 x 0.125 + 2,000 x 10
    small = Usage(input_tokens=10_000, cache_read_tokens=100_000, output_tokens=2_000)
    assert cost_usd(pro, small) == pytest.approx(0.045, abs=1e-12)
    # 1M cached context, 1,000 fresh, 1,000 out: 1,000 x 2.50 + 1,000,000 x 0.25 + 1,000 x 15
    mega = Usage(input_tokens=1_000, cache_read_tokens=1_000_000, output_tokens=1_000)
    assert cost_usd(pro, mega) == pytest.approx(0.2675, abs=1e-12)


def test_deepseek_cache_hit_versus_miss(table: PriceTable) -> None:
    flash = price(table, "deepseek-flash")  # peak: $0.30 miss, $0.006 hit
    assert cost_usd(flash, Usage(input_tokens=1_000_000)) == pytest.approx(0.30, abs=1e-12)
    assert cost_usd(flash, Usage(cache_read_tokens=1_000_000)) == pytest.approx(0.006, abs=1e-12)
    # 40,000 hit + 10,000 miss + 2,000 out: 40,000 x 0.006 + 10,000 x 0.30 + 2,000 x 1.20
    mixed = Usage(input_tokens=10_000, cache_read_tokens=40_000, output_tokens=2_000)
    assert cost_usd(flash, mixed) == pytest.approx(0.00564, abs=1e-12)


def test_openai_long_context_doubles_input_and_cache_and_raises_output_by_half(
    table: PriceTable,
) -> None:
    luna = price(table, "gpt-6-luna")
    # 300,000 > 272K: 250,000 x 0.20 + 50,000 x 0.02 + 10,000 x 0.75 = 58,500 per million
    usage = Usage(input_tokens=250_000, cache_read_tokens=50_000, output_tokens=10_000)
    assert cost_usd(luna, usage) == pytest.approx(0.0585, abs=1e-12)


def test_gemini_storage_for_a_million_tokens_for_an_hour(table: PriceTable) -> None:
    pro = price(table, "gemini-2.5-pro")
    assert cache_storage_usd(pro, 1_000_000, 3600) == pytest.approx(4.50, abs=1e-12)
    assert cache_storage_usd(pro, 200_000, 1800) == pytest.approx(0.45, abs=1e-12)
    assert cache_storage_usd(price(table, "claude-haiku-4-5"), 1_000_000, 3600) is None
    with pytest.raises(ValueError, match=">= 0"):
        cache_storage_usd(pro, -1, 60)


# --- unknown and unpriceable usage ------------------------------------------------------------


def test_unknown_model_is_none_never_zero(table: PriceTable) -> None:
    assert table.get("gpt-9-ultra") is None
    assert price_usage(table, "gpt-9-ultra", Usage()) is None
    assert price_usage(table, "gpt-9-ultra", Usage(input_tokens=1_000)) is None
    assert price_usage(table, "claude-haiku-4-5", Usage()) == 0.0  # known model, no tokens


def test_tokens_of_a_kind_without_a_price_are_not_priced_as_input(table: PriceTable) -> None:
    flash = price(table, "deepseek-flash")  # no cache-write price: DeepSeek does not bill writes
    usage = Usage(input_tokens=10, cache_write_tokens=100)
    with pytest.raises(UnpricedUsageError, match="cache write"):
        cost_usd(flash, usage)
    assert price_usage(table, "deepseek-flash", usage) is None


def test_inconsistent_usage_is_rejected(table: PriceTable) -> None:
    haiku = price(table, "claude-haiku-4-5")
    with pytest.raises(ValueError, match="part of cache_write_tokens"):
        cost_usd(haiku, Usage(cache_write_tokens=1, cache_write_1h_tokens=2))
    with pytest.raises(ValueError, match=">= 0"):
        cost_usd(haiku, Usage(input_tokens=-1))


@pytest.mark.parametrize(
    ("asked", "found"),
    [
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),  # alias
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),  # alias
        ("claude-opus-4-6-20260205", "claude-opus-4-6"),  # -YYYYMMDD snapshot
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),  # Vertex style
        ("gpt-5-mini-2025-08-07", "gpt-5-mini"),  # OpenAI style
        ("models/gemini-2.5-pro", "gemini-2.5-pro"),  # Gemini resource name
        ("deepseek-v4-flash", "deepseek-flash"),  # legacy name, billed as deepseek-flash
    ],
)
def test_lookup_by_alias_and_snapshot(table: PriceTable, asked: str, found: str) -> None:
    assert price(table, asked).name == found


def test_lookup_does_not_guess(table: PriceTable) -> None:
    for name in ("claude-haiku", "gpt-5-min", "GPT-5", "gpt-4o-2024-05-13", "gemini-2.5-pro-001"):
        assert table.get(name) is None, name


def test_retired_models_drop_out_of_models_for_that_day(table: PriceTable) -> None:
    names = {m.name for m in table.models_for("deepseek", on=TABLE_DAY)}
    assert "deepseek-flash" in names and "deepseek-chat" not in names
    assert "deepseek-chat" in {m.name for m in table.models_for("deepseek")}
    assert "gpt-5" in {m.name for m in table.models_for("openai", on=date(2026, 12, 10))}
    assert "gpt-5" not in {m.name for m in table.models_for("openai", on=date(2026, 12, 11))}


def test_estimate_tokens_is_chars_over_four_rounded_up() -> None:
    assert [estimate_tokens(t) for t in ("", "a", "abcd", "abcde", "x" * 4_000)] == [
        0,
        1,
        1,
        2,
        1_000,
    ]


# --- user overrides --------------------------------------------------------------------------

OVERRIDE = """
[defaults]
claude = "claude-opus-4-5"

[models."claude-haiku-4-5"]
vendor = "claude"
input_per_mtok = 0.5
output_per_mtok = 2.5
cache_read_per_mtok = 0.05
context_window = 200_000
max_output_tokens = 8_192
source = "our negotiated contract, schedule B"
as_of = 2026-11-01

[models."local-llama"]
vendor = "openai-compatible"
input_per_mtok = 0
output_per_mtok = 0
context_window = 32_768
max_output_tokens = 4_096
aliases = ["claude-haiku-4-5-20251001"]
source = "self-hosted on our own GPUs"
as_of = "2026-11-20"
"""


def test_a_user_file_wins(table: PriceTable, tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(OVERRIDE)
    merged = table.merge(PriceTable.load(path))

    haiku = price(merged, "claude-haiku-4-5")
    assert (haiku.input_per_mtok, haiku.cache_write_per_mtok) == (0.5, None)  # whole entry
    assert merged.default_model("claude") == "claude-opus-4-5"
    assert merged.default_model("gemini") == table.default_model("gemini")
    assert price(merged, "claude-haiku-4-5-20251001").name == "local-llama"  # alias taken over
    assert price_usage(merged, "local-llama", Usage(input_tokens=10**6)) == 0.0
    assert price(table, "claude-haiku-4-5").input_per_mtok == 1.00  # the base is untouched
    assert len(merged) == len(table) + 1


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (("input_per_mtok = 0.5", "input_per_mtok = -1"), "input_per_mtok"),
        (("output_per_mtok = 2.5", 'output_per_mtok = "cheap"'), "output_per_mtok"),
        (("context_window = 200_000", "context_window = 0"), "context_window"),
        (('source = "our negotiated contract, schedule B"', ""), "source"),
        (("as_of = 2026-11-01", "as_of = 2026"), "as_of"),
        (("as_of = 2026-11-01", "as_of = 2026-11-01\ncache_reed_per_mtok = 0.1"), "cache_reed"),
        (('vendor = "claude"', 'vendor = "anthropic"'), "vendor"),
    ],
)
def test_a_malformed_user_file_names_the_model_and_field(
    tmp_path: Path, change: tuple[str, str], named: str
) -> None:
    old, new = change
    assert old in OVERRIDE
    path = tmp_path / "prices.toml"
    path.write_text(OVERRIDE.replace(old, new, 1))
    with pytest.raises(ValueError, match=named) as raised:
        PriceTable.load(path)
    assert "claude-haiku-4-5" in str(raised.value)
    assert str(path) in str(raised.value)


def test_a_tier_must_restate_the_cache_rates(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        OVERRIDE
        + """
[models."claude-haiku-4-5".long_context]
threshold_tokens = 100_000
input_per_mtok = 1.0
output_per_mtok = 5.0
"""
    )
    with pytest.raises(ValueError, match=r"claude-haiku-4-5.*cache_read_per_mtok"):
        PriceTable.load(path)


def test_a_user_file_that_is_not_toml_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text("[models.\nnope")
    with pytest.raises(ValueError, match="not valid TOML"):
        PriceTable.load(path)


def test_defaults_must_name_a_model_of_that_vendor(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(OVERRIDE.replace('claude = "claude-opus-4-5"', 'claude = "local-llama"'))
    with pytest.raises(ValueError, match="local-llama"):
        PriceTable.load(path)
    with pytest.raises(KeyError, match="no default model"):
        PriceTable([]).default_model("claude")


def test_swarm_prices_file_is_layered_on_the_packaged_table(tmp_path: Path) -> None:
    from shared.llm.registry import price_table  # noqa: PLC0415
    from shared.llm.settings import VendorSettings  # noqa: PLC0415

    own = tmp_path / "my-prices.toml"
    own.write_text(
        '[models."my-llama-70b"]\nvendor = "openai-compatible"\ninput_per_mtok = 0.5\n'
        "output_per_mtok = 0.5\ncontext_window = 131072\nmax_output_tokens = 8192\n"
        'source = "our GPU bill"\nas_of = 2026-11-01\n'
    )
    table = price_table(VendorSettings(SWARM_PRICES_FILE=str(own)))
    assert table.get("my-llama-70b") is not None
    assert table.get(table.default_model("claude")) is not None  # the packaged rest stays
