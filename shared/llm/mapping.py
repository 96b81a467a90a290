"""Vendor HTTP outcomes -> our error tree, decided once for every vendor."""

from __future__ import annotations

from collections.abc import Mapping

from shared.llm.errors import (
    AuthError,
    BadRequestError,
    ContextTooLongError,
    LLMError,
    LLMTimeoutError,
    OverloadedError,
    QuotaExceededError,
    RateLimitedError,
)

# How each vendor says "the prompt does not fit": OpenAI/DeepSeek give a code, Anthropic
# and Gemini only a message (their wording can change, so several phrasings are accepted).
_CONTEXT_CODES = {"context_length_exceeded", "string_above_max_length"}
_CONTEXT_PHRASES = (
    "prompt is too long",
    "context length",
    "context_length",
    "exceeds the maximum number of tokens",
    "maximum context length",
    "too many tokens",
)
_QUOTA_CODES = {"insufficient_quota", "billing_hard_limit_reached", "enforced_spend_limit_reached"}


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait, from `retry-after-ms` or `retry-after` (seconds form)."""
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw:
            try:
                return max(float(raw) * scale, 0.0)
            except ValueError:
                continue
    return None


def from_status(
    *,
    vendor: str,
    model: str | None,
    status: int,
    message: str,
    headers: Mapping[str, str] | None = None,
    code: str | None = None,
) -> LLMError:
    lowered = message.lower()
    cls: type[LLMError]
    wait: float | None = None
    if status == 429:
        quota = code in _QUOTA_CODES or "quota" in lowered or "spend limit" in lowered
        cls = QuotaExceededError if quota else RateLimitedError
        wait = None if quota else retry_after(headers)
    elif status in (401, 403):
        cls = AuthError
    elif status == 408:
        cls = LLMTimeoutError
    elif status == 409 or status >= 500:  # conflict, 5xx, 529 overloaded: transient
        cls, wait = OverloadedError, retry_after(headers)
    elif status == 413 or code in _CONTEXT_CODES or any(p in lowered for p in _CONTEXT_PHRASES):
        cls = ContextTooLongError
    else:
        cls = BadRequestError
    return cls(message, vendor=vendor, model=model, status=status, retry_after=wait, code=code)


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """Remove API keys from text that may end up in an exception or a finding."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
