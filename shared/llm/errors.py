"""The one error tree every adapter raises; vendor SDK exceptions are translated into it.

    LLMError                    vendor, model, status, message
    ├── RetryableLLMError       try again later: 429, 5xx/overloaded, timeouts, connection
    │   │                       errors; `retry_after` (seconds) when the vendor said
    │   ├── RateLimitedError    429
    │   ├── OverloadedError     5xx, 529
    │   ├── LLMTimeoutError     no answer within the timeout
    │   └── LLMConnectionError  could not reach the vendor
    └── FatalLLMError           retrying cannot help
        ├── ContextTooLongError prompt + context exceed the model's window (fall back to a
        │                       larger window, not retry)
        ├── AuthError           401/403: key missing, wrong or not allowed
        ├── QuotaExceededError  429 insufficient_quota / spend limit: money, not time
        └── BadRequestError     400/404/422 and anything else the vendor refuses

Messages never contain API keys (adapters scrub them).
"""

from __future__ import annotations


class LLMError(Exception):
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        vendor: str,
        model: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.vendor = vendor
        self.model = model
        self.status = status
        self.retry_after = retry_after
        self.code = code

    def __str__(self) -> str:
        where = f"{self.vendor}/{self.model}" if self.model else self.vendor
        status = f" {self.status}" if self.status is not None else ""
        after = f" (retry after {self.retry_after:g}s)" if self.retry_after is not None else ""
        return f"{where}{status}: {self.message}{after}"

    @property
    def kind(self) -> str:
        """A short, bounded label for metrics and attempt records."""
        return _KINDS.get(type(self), "error")


class RetryableLLMError(LLMError):
    retryable = True


class RateLimitedError(RetryableLLMError):
    pass


class OverloadedError(RetryableLLMError):
    pass


class LLMTimeoutError(RetryableLLMError):
    pass


class LLMConnectionError(RetryableLLMError):
    pass


class FatalLLMError(LLMError):
    pass


class ContextTooLongError(FatalLLMError):
    pass


class AuthError(FatalLLMError):
    pass


class QuotaExceededError(FatalLLMError):
    pass


class BadRequestError(FatalLLMError):
    pass


_KINDS: dict[type[LLMError], str] = {
    RateLimitedError: "rate_limited",
    OverloadedError: "overloaded",
    LLMTimeoutError: "timeout",
    LLMConnectionError: "connection",
    ContextTooLongError: "context_too_long",
    AuthError: "auth",
    QuotaExceededError: "quota",
    BadRequestError: "bad_request",
}


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (seconds form; HTTP dates are rare for LLM APIs)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(seconds, 0.0)
