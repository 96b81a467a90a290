"""The one interface every vendor adapter implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from shared.llm.types import LLMRequest, LLMResponse, TokenCount


@runtime_checkable
class LLMClient(Protocol):
    """One async client per vendor per process, made inside the loop that uses it.

    `complete` raises only `shared.llm.errors.LLMError` subclasses; it never retries (the
    caller owns retry and fallback); every call has a timeout.
    """

    vendor: str
    default_model: str

    async def complete(self, request: LLMRequest) -> LLMResponse: ...

    async def count_tokens(self, request: LLMRequest) -> TokenCount: ...

    async def aclose(self) -> None: ...
