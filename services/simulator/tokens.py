"""The simulator's tokenizer: ceil(chars / 4) per text part, summed over the prompt.

A prompt is a list of `Part`s in wire order. Non-text content (tool definitions, tool calls,
images) is counted as its canonical JSON, so it still costs tokens and still changes
cache keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Part:
    tag: str  # role or section ("tools", "system", "user", ...): part of cache keys only
    text: str
    tokens: int


def count(text: str) -> int:
    return (len(text) + 3) // 4


def part(tag: str, text: str) -> Part:
    return Part(tag, text, count(text))


def canonical(obj: Any) -> str:
    """Stable JSON for non-text content, without cache markers (they are not content)."""
    if isinstance(obj, dict):
        obj = {k: v for k, v in obj.items() if k != "cache_control"}
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def total(parts: list[Part]) -> int:
    return sum(p.tokens for p in parts)
