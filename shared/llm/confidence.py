"""A finding's confidence from the vendor's own token log-probabilities. Pure.

confidence = exp(mean token logprob): the geometric mean of the probabilities the model
gave the tokens it chose, in (0, 1]. From a list of token logprobs (OpenAI-compatible
`choices[0].logprobs.content[i].logprob`) or from their mean as the vendor sends it
(Gemini `candidates[0].avgLogprobs`). No logprobs, no confidence: None, never a guess.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import structlog

log = structlog.get_logger("swarm.llm")


def from_mean_logprob(mean: float | None) -> float | None:
    """exp(mean), within [0, 1]; None for no value or a value that is not a number."""
    if mean is None or math.isnan(mean):
        return None
    return min(max(math.exp(min(mean, 0.0)), 0.0), 1.0)


def from_token_logprobs(logprobs: Iterable[float | None]) -> float | None:
    """exp(mean of the tokens' logprobs); None when there are none."""
    values = [v for v in logprobs if v is not None]
    if not values:
        return None
    return from_mean_logprob(math.fsum(values) / len(values))


def refuses_logprobs(message: str, param: str | None = None) -> bool:
    """A 400 that says the model does not take the logprobs parameter (OpenAI reasoning
    models, deepseek-reasoner, Gemini models without logprobs): ask again without it."""
    return (param or "").lower() in ("logprobs", "top_logprobs") or "logprob" in message.lower()


class LogprobsAsk:
    """Whether one adapter asks a model for logprobs: yes when configured, until the model
    refuses them (then it is asked again at once without, and never again)."""

    def __init__(self, vendor: str, *, enabled: bool) -> None:
        self.vendor = vendor
        self.enabled = enabled
        self._refused: set[str] = set()

    def wanted(self, model: str) -> bool:
        return self.enabled and model not in self._refused

    def refused(self, model: str) -> None:
        self._refused.add(model)
        log.warning(
            "llm.logprobs_refused",
            vendor=self.vendor,
            model=model,
            note="asked again without logprobs; its answers carry no confidence",
        )
