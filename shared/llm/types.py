"""What goes into and comes out of an LLM call, vendor-neutral. Pure data."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage as the vendor reported it, split the way vendors bill it.

    `input_tokens` counts only uncached input; cached input is in `cache_read_tokens`
    (read from a cache) and `cache_write_tokens` (written to one), so the three add up to
    the whole prompt and each is priced at its own rate.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0  # the part of cache_write_tokens with a 1-hour TTL

    @property
    def prompt_tokens(self) -> int:
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class LLMRequest:
    """One completion.

    `context` is a large, stable prefix (documents, history) placed before the prompt and
    marked for the vendor's prompt cache where the vendor has one; `cached_content` names
    an explicit cache (Gemini `cachedContents/...`) that already holds it.
    """

    prompt: str
    model: str | None = None  # None: the adapter's default model
    system: str | None = None
    context: str | None = None
    max_output_tokens: int = 1024
    temperature: float | None = None
    cache_context: bool = True
    cache_ttl: str | None = None  # "5m" or "1h" for Anthropic; Gemini caches carry their own
    cached_content: str | None = None
    timeout_s: float | None = None  # None: the adapter's default


@dataclass(frozen=True, slots=True)
class LLMResponse:
    """One answer. `confidence` is exp(mean token logprob) from the vendor's own logprobs
    (see `shared.llm.confidence`), or None where the vendor gave none (Claude never does)."""

    text: str
    vendor: str
    model: str
    usage: Usage
    latency_s: float
    finish_reason: str | None = None
    request_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    confidence: float | None = None


@dataclass(frozen=True, slots=True)
class TokenCount:
    tokens: int
    estimated: bool  # True when counted locally, not by the vendor's tokenizer
    method: str  # e.g. "anthropic.count_tokens", "gemini.countTokens", "estimate:chars/4"
