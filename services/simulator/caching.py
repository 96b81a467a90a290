"""Prompt-cache emulation for the three vendors' models of caching.

* Anthropic: explicit breakpoints (`cache_control`). Each breakpoint prefix of at least the
  model's minimum is a cache entry with a 5-minute or 1-hour TTL, refreshed on every hit.
  A request reads the longest live breakpoint prefix and writes the rest up to its last one.
* OpenAI / DeepSeek / compatible: automatic. Every prompt's prefixes at 128-token
  boundaries are remembered; `cached_tokens` is the longest remembered boundary, counted
  only from the model's minimum (1024) up.
* Gemini: explicit `cachedContents` resources with a name, a TTL and a token count, plus the
  keyword sets and text of the document blocks they hold (computed once, at creation) so
  answers can cite them and their lines.

All keys are digests scoped by model, so a 1 MB prompt costs one hashing pass, and each
store is bounded (least recently used goes first) so a long benchmark cannot grow it forever.
The Gemini store holds at most 1000 caches and 4 million document keywords in all (about
15 caches of 900K tokens of documents, some 400 MB, plus about 55 MB of their text); a cache
pushed out is gone, as if expired (404).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from services.simulator.citations import Document
from services.simulator.tokens import Part

PREFIX_BLOCK_TOKENS = 128
PREFIX_TTL_S = 600.0  # OpenAI keeps prefixes 5-10 minutes after last use
_MAX_ENTRIES = 200_000
_MAX_GEMINI_CACHES = 1_000
_MAX_GEMINI_KEYWORDS = 4_000_000
TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}


class _Expiring:
    """digest -> expiry (monotonic seconds), LRU-bounded."""

    def __init__(self, max_entries: int = _MAX_ENTRIES) -> None:
        self._items: OrderedDict[bytes, float] = OrderedDict()
        self._max = max_entries

    def alive(self, key: bytes, now: float) -> bool:
        expiry = self._items.get(key)
        if expiry is None:
            return False
        if expiry <= now:
            del self._items[key]
            return False
        return True

    def touch(self, key: bytes, until: float) -> None:
        self._items[key] = max(until, self._items.get(key, 0.0))
        self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()


@dataclass(frozen=True, slots=True)
class Breakpoint:
    index: int  # the block (Part) that carries the cache_control marker
    ttl: str  # "5m" | "1h"


@dataclass(frozen=True, slots=True)
class AnthropicUsage:
    input_tokens: int  # uncached only
    cache_creation_5m: int
    cache_creation_1h: int
    cache_read: int

    @property
    def cache_creation(self) -> int:
        return self.cache_creation_5m + self.cache_creation_1h


class AnthropicCache:
    def __init__(self) -> None:
        self._entries = _Expiring()

    def account(
        self,
        model: str,
        parts: list[Part],
        breakpoints: list[Breakpoint],
        min_tokens: int,
        now: float,
    ) -> AnthropicUsage:
        total = sum(p.tokens for p in parts)
        marks = {bp.index: bp.ttl for bp in breakpoints}
        # (prefix tokens, digest, ttl) for each breakpoint big enough to be cached at all.
        points: list[tuple[int, bytes, str]] = []
        digest = hashlib.sha256(model.encode() + b"\x00")
        tokens = 0
        for i, p in enumerate(parts):
            digest.update(p.tag.encode() + b"\x1f" + p.text.encode() + b"\x1e")
            tokens += p.tokens
            if i in marks and tokens >= min_tokens and tokens > 0:
                points.append((tokens, digest.copy().digest(), marks[i]))
        read = 0
        for tokens_at, key, _ in points:
            if self._entries.alive(key, now):
                read = max(read, tokens_at)
        created = {"5m": 0, "1h": 0}
        done = read
        for tokens_at, key, ttl in points:
            if tokens_at > done:
                created[ttl] += tokens_at - done
                done = tokens_at
            self._entries.touch(key, now + TTL_SECONDS[ttl])
        creation = created["5m"] + created["1h"]
        return AnthropicUsage(total - read - creation, created["5m"], created["1h"], read)

    def clear(self) -> None:
        self._entries.clear()


class PrefixCache:
    """Automatic prefix caching, OpenAI's rule: 128-token blocks, a minimum of 1024."""

    def __init__(self) -> None:
        self._blocks = _Expiring()

    def account(self, scope: str, parts: list[Part], min_tokens: int, now: float) -> int:
        boundaries = _block_digests(scope, parts)
        cached = 0
        for tokens_at, key in boundaries:
            if not self._blocks.alive(key, now):
                break
            cached = tokens_at
        for _, key in boundaries:
            self._blocks.touch(key, now + PREFIX_TTL_S)
        return cached if cached >= min_tokens else 0

    def clear(self) -> None:
        self._blocks.clear()


def _block_digests(scope: str, parts: list[Part]) -> list[tuple[int, bytes]]:
    """Digest of the prompt prefix at every multiple of 128 tokens, in one hashing pass.
    Token t of a part covers its characters [4t, 4t + 4)."""
    out: list[tuple[int, bytes]] = []
    running = hashlib.sha256(scope.encode() + b"\x00")
    before = 0  # tokens before the current part
    for p in parts:
        running.update(p.tag.encode() + b"\x1f")
        next_boundary = (before // PREFIX_BLOCK_TOKENS + 1) * PREFIX_BLOCK_TOKENS
        fed = 0  # characters of p.text already hashed
        while next_boundary <= before + p.tokens:
            upto = (next_boundary - before) * 4
            running.update(p.text[fed:upto].encode())
            fed = upto
            out.append((next_boundary, running.copy().digest()))
            next_boundary += PREFIX_BLOCK_TOKENS
        running.update(p.text[fed:].encode() + b"\x1e")
        before += p.tokens
    return out


@dataclass(slots=True)
class GeminiCache:
    name: str
    model: str  # "models/..."
    tokens: int
    created: str
    updated: str
    expire_at: float  # wall-clock seconds
    content_key: str  # digest of what was cached: answers depend on it
    display_name: str | None = None
    documents: tuple[Document, ...] = ()  # its document blocks, to cite

    @property
    def keyword_count(self) -> int:
        return sum(len(doc.keywords) for doc in self.documents)


class GeminiCacheStore:
    """name -> cache, listed in creation order. Expired caches are dropped when seen; the least
    recently used go when there are more than `max_caches`, or more than `max_keywords`
    document keywords in all."""

    def __init__(
        self, max_caches: int = _MAX_GEMINI_CACHES, max_keywords: int = _MAX_GEMINI_KEYWORDS
    ) -> None:
        self._items: dict[str, GeminiCache] = {}
        self._recent: OrderedDict[str, None] = OrderedDict()  # least recently used first
        self._max_caches = max_caches
        self._max_keywords = max_keywords
        self._keywords = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, cache: GeminiCache) -> None:
        self.remove(cache.name)
        self._items[cache.name] = cache
        self._recent[cache.name] = None
        self._keywords += cache.keyword_count
        while len(self._items) > 1 and (
            len(self._items) > self._max_caches or self._keywords > self._max_keywords
        ):
            self.remove(next(iter(self._recent)))

    def remove(self, name: str) -> None:
        cache = self._items.pop(name, None)
        if cache is not None:
            del self._recent[name]
            self._keywords -= cache.keyword_count

    def get(self, name: str, now: float) -> GeminiCache | None:
        cache = self._items.get(name)
        if cache is None:
            return None
        if cache.expire_at <= now:
            self.remove(name)
            return None
        self._recent.move_to_end(name)
        return cache

    def live(self, now: float) -> list[GeminiCache]:
        for name in [n for n, c in self._items.items() if c.expire_at <= now]:
            self.remove(name)
        return list(self._items.values())

    def clear(self) -> None:
        self._items.clear()
        self._recent.clear()
        self._keywords = 0
