"""Token log-probabilities of an answer, for requests that ask for them.

The answer's tokens are the simulator's own (see `tokens`): 4-character pieces of its text,
so there are exactly as many as the completion tokens reported. Each token's logprob comes
from a digest of (the config seed, the model, the answer text, the token's place): the same
seed, model and answer always give the same numbers, another seed other ones. They lie in
(-2.5, 0], most near 0, like a fairly sure model's. Alternatives (`top_logprobs`, Gemini
`topCandidates`) are not simulated: their lists are empty.

Wire forms: OpenAI-compatible `choices[0].logprobs.content[i]` = {token, logprob, bytes,
top_logprobs} when the request sets `logprobs: true`; Gemini `candidates[0].avgLogprobs`
(their mean) and `logprobsResult.chosenCandidates[i]` = {token, logProbability} when
`generationConfig.responseLogprobs` is true. Never sent unasked.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

_CHARS_PER_TOKEN = 4  # as services.simulator.tokens.count


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: str
    logprob: float


def token_logprobs(seed: int, model: str, text: str) -> list[TokenLogprob]:
    tokens = [text[i : i + _CHARS_PER_TOKEN] for i in range(0, len(text), _CHARS_PER_TOKEN)]
    raw = hashlib.shake_256(f"{seed}\x1f{model}\x1f{text}".encode()).digest(2 * len(tokens))
    out = []
    for i, token in enumerate(tokens):
        u = int.from_bytes(raw[2 * i : 2 * i + 2], "big") / 65536
        out.append(TokenLogprob(token, -round(2.5 * u**3, 6)))
    return out


def mean(logprobs: list[TokenLogprob]) -> float:
    return math.fsum(t.logprob for t in logprobs) / len(logprobs) if logprobs else 0.0


def groups(logprobs: list[TokenLogprob], n: int) -> list[list[TokenLogprob]]:
    """At most `n` consecutive non-empty runs of tokens: a stream's content chunks."""
    size = max(1, -(-len(logprobs) // n))
    return [logprobs[i : i + size] for i in range(0, len(logprobs), size)]


def openai_content(logprobs: list[TokenLogprob]) -> dict[str, Any]:
    content = [
        {
            "token": t.token,
            "logprob": t.logprob,
            "bytes": list(t.token.encode()),
            "top_logprobs": [],
        }
        for t in logprobs
    ]
    return {"content": content, "refusal": None}


def gemini_candidate_fields(logprobs: list[TokenLogprob]) -> dict[str, Any]:
    chosen = [{"token": t.token, "logProbability": t.logprob} for t in logprobs]
    out: dict[str, Any] = {"logprobsResult": {"topCandidates": [], "chosenCandidates": chosen}}
    if logprobs:
        out["avgLogprobs"] = mean(logprobs)
    return out
