"""The only place that lists every vendor: build the right adapter for a vendor name."""

from __future__ import annotations

from shared.llm.base import LLMClient
from shared.llm.prices import PriceTable
from shared.llm.settings import VENDORS, VendorSettings

LOCAL_MODEL = "local-model"  # an OpenAI-compatible server without OPENAI_COMPATIBLE_MODEL(S)


def price_table(settings: VendorSettings) -> PriceTable:
    """The packaged price table with the user's SWARM_PRICES_FILE (if any) on top."""
    table = PriceTable.load()
    if settings.prices_file is not None:
        table = table.merge(PriceTable.load(settings.prices_file))
    return table


def default_model(vendor: str, settings: VendorSettings, table: PriceTable) -> str:
    """The model a vendor's worker uses unless a task pins one: settings, then the table."""
    chosen = settings.model_for(vendor)
    if chosen:
        return chosen
    if vendor == "openai-compatible":
        extra = settings.extra_models(vendor)
        return extra[0] if extra else LOCAL_MODEL
    return table.default_model(vendor)


def served_models(vendor: str, settings: VendorSettings, default: str) -> tuple[str, ...]:
    """The models a vendor's worker announces in its membership: its default first, then
    the others it was told its server serves (OPENAI_COMPATIBLE_MODELS)."""
    return tuple(dict.fromkeys((default, *settings.extra_models(vendor))))


def build_client(vendor: str, settings: VendorSettings, default_model: str) -> LLMClient:
    """One client per vendor per process; create it inside the event loop that uses it.

    SDKs are imported here, lazily, so a worker image carries only its own vendor's SDK.
    """
    from shared.llm.pool import AdapterOptions  # noqa: PLC0415 - needs httpx2, an SDK's dependency

    endpoint = settings.endpoint(vendor)
    options = AdapterOptions(
        default_model=settings.model_for(vendor) or default_model,
        timeout_s=settings.timeout_s,
        connect_timeout_s=settings.connect_timeout_s,
        max_connections=settings.max_connections,
        logprobs=settings.wants_logprobs(vendor),
    )
    if vendor == "claude":
        from shared.llm.anthropic_client import AnthropicClient  # noqa: PLC0415

        return AnthropicClient(endpoint, options)
    if vendor == "gemini":
        from shared.llm.gemini_client import GeminiClient  # noqa: PLC0415

        return GeminiClient(endpoint, options)
    if vendor in ("openai", "deepseek", "codex", "openai-compatible"):
        from shared.llm.openai_client import OpenAIChatClient  # noqa: PLC0415

        return OpenAIChatClient(endpoint, options, vendor=vendor)
    raise ValueError(f"unknown vendor {vendor!r}; choose one of: {', '.join(VENDORS)}")
