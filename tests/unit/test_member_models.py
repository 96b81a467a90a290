"""The `models` a worker announces in its member hash: what its settings say it serves,
written and read back the same way (issue 20, item 4)."""

from __future__ import annotations

from shared.bus.membership import member_models, models_field
from shared.llm.registry import LOCAL_MODEL, default_model, price_table, served_models
from shared.llm.settings import VendorSettings

COMPAT = "openai-compatible"


def test_models_are_written_comma_separated_and_read_back() -> None:
    assert models_field(["my-llama", " qwen2.5:7b ", "my-llama", ""]) == "my-llama,qwen2.5:7b"
    assert member_models({"models": "my-llama,qwen2.5:7b"}) == ("my-llama", "qwen2.5:7b")


def test_a_member_with_only_the_older_model_field_serves_that_model() -> None:
    assert member_models({"model": "deepseek-flash"}) == ("deepseek-flash",)
    assert member_models({"service": "collector"}) == ()


def test_an_openai_compatible_worker_announces_every_model_it_was_given() -> None:
    settings = VendorSettings(
        OPENAI_COMPATIBLE_MODEL="my-llama", OPENAI_COMPATIBLE_MODELS="my-qwen, my-llama"
    )
    default = default_model(COMPAT, settings, price_table(settings))
    assert default == "my-llama"
    assert served_models(COMPAT, settings, default) == ("my-llama", "my-qwen")


def test_the_first_of_the_models_is_the_default_when_no_model_is_set() -> None:
    settings = VendorSettings(OPENAI_COMPATIBLE_MODELS="my-qwen,my-llama")
    assert default_model(COMPAT, settings, price_table(settings)) == "my-qwen"
    bare = VendorSettings()
    assert default_model(COMPAT, bare, price_table(bare)) == LOCAL_MODEL


def test_a_table_vendor_announces_its_default() -> None:
    settings = VendorSettings()
    default = default_model("deepseek", settings, price_table(settings))
    assert served_models("deepseek", settings, default) == (default,)
