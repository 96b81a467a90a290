"""Deterministic answers: the same model and prompt always give the same text.

"[sim MODEL] Re: "first words of the last user message": " and a sentence drawn from a fixed
vocabulary by a digest of the whole prompt. Models whose name contains "code" (codex,
coder, codestral) also answer with a fenced code block. If the prompt holds
`<document source="NAME">` blocks, the answer ends with a line
`Sources: NAME1#L3-L9; NAME2#L1` naming up to 3 of them, those that share the most keywords
with the question, with the lines that hold them (see `citations`); no line if none shares
any. The text, that line included, is cut to the requested output-token budget, which is
reported as a max-tokens stop.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from services.simulator.citations import Document, cited
from services.simulator.tokens import Part, count

_MARKER = re.compile(r"\[\[sim:[^\]]*\]\]")
_ECHO_WORDS = 6

_VOCAB = tuple(
    dict.fromkeys(
        " ".join(
            [
                "the swarm reviewed every ledger entry and found that supplier terms agree with",
                "the contract while three invoices need a second look because their dates fall",
                "outside the agreed window so the summary lists totals per quarter notes open",
                "questions and suggests a follow up with finance before the report goes out",
            ]
        ).split()
    )
)


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    tokens: int
    truncated: bool  # cut at max tokens: stop_reason max_tokens / length / MAX_TOKENS


def answer(
    model: str,
    parts: list[Part],
    last_user: str,
    max_tokens: int | None,
    cached: Sequence[Document] = (),
) -> Answer:
    """`cached`: documents of a cache the request names, which come before `parts`."""
    digest = hashlib.sha256(model.encode())
    for p in parts:
        digest.update(p.tag.encode() + b"\x1f" + p.text.encode() + b"\x1e")
    seed = hashlib.shake_256(digest.digest()).digest(64)
    n_words = 12 + seed[0] % 20
    words = [_VOCAB[b % len(_VOCAB)] for b in seed[1 : 1 + n_words]]
    question = _MARKER.sub(" ", last_user)
    echo = " ".join(question.split()[:_ECHO_WORDS])
    text = f'[sim {model}] Re: "{echo}": {" ".join(words).capitalize()}.'
    if "code" in model.lower():
        name = "answer_" + seed[40:44].hex()
        text += f'\n\n```python\ndef {name}() -> str:\n    return "{words[0]} {words[1]}"\n```'
    if sources := cited(parts, question, cached):
        text += "\nSources: " + "; ".join(map(str, sources))
    truncated = False
    if max_tokens is not None and count(text) > max_tokens:
        text = text[: max(max_tokens, 0) * 4]
        truncated = True
    return Answer(text, count(text), truncated)


def pieces(text: str, n: int) -> list[str]:
    """Split `text` into at most `n` non-empty consecutive pieces, on word boundaries."""
    words = re.findall(r"\S+\s*|\s+", text)
    if not words:
        return [text] if text else []
    size = max(1, -(-len(words) // n))
    return ["".join(words[i : i + size]) for i in range(0, len(words), size)]
