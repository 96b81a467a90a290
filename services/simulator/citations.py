"""Which documents of the prompt an answer cites.

A document is a block of exactly this form inside a text part of the prompt:

    <document source="NAME">
    ...text...
    </document>

Keywords are runs of ASCII letters, case-folded, of 3 letters or more, minus a few stopwords;
every other character (digits, punctuation, non-ASCII) separates words. The question is the
last user message without its own document blocks. A document is cited if it shares at least
one keyword with the question; at most 3 are, the most shared keywords first, ties in prompt
order, each name once. Each is cited with the lines of its text that hold a question keyword,
first to last (`NAME#L3-L7`, or `NAME#L3` for one line; lines counted from the first line of
the document's text), as the mega-shard's system prompt asks.

Speed: a 4 MB prompt costs one regex pass to find the blocks and one byte translation of the
parts that hold them; with a short question each document is then checked by substring
search for each question keyword, with a long one its keyword set is built once. A Gemini
cache computes its documents' keyword sets once, at creation (`documents`).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from string import ascii_lowercase

from services.simulator.tokens import Part

MAX_CITED = 3
_OPEN = re.compile(r'<document source="([^"\n]*)">\n')
_CLOSE = "\n</document>"
_OPEN_PROBE = '<document source="'
# Up to this many question keywords, substring search beats building keyword sets.
_SEARCH_MAX_KEYWORDS = 24

# Byte -> itself for a-z, lower case for A-Z, a space for everything else. Text is encoded
# as ASCII with "?" for anything else, so byte offsets equal character offsets.
_LETTERS = bytes(c + 32 if 65 <= c <= 90 else c if 97 <= c <= 122 else 32 for c in range(256))
_STOPWORDS = b"""
    the and for are but not you all any can was were with this that these those from what
    which who whom whose how why when where does did has have had its into our your their
    they them there than then will would should could about also been being each per some
    such only other more most very please
"""
_SHORT = ("".join(p).encode() for n in (1, 2) for p in itertools.product(ascii_lowercase, repeat=n))
_IGNORED = frozenset(_STOPWORDS.split()).union(_SHORT)  # words of 1-2 letters too


@dataclass(frozen=True, slots=True)
class Document:
    name: str
    keywords: frozenset[bytes]
    text: str = ""  # the block's text, for the cited lines (a cache keeps its documents' text)


@dataclass(frozen=True, slots=True)
class Cited:
    name: str
    first: int  # 1-based lines of the document's text, inclusive
    last: int

    def __str__(self) -> str:
        lines = f"L{self.first}" if self.first == self.last else f"L{self.first}-L{self.last}"
        return f"{self.name}#{lines}"


def _letters(text: str) -> bytes:
    return text.encode("ascii", "replace").translate(_LETTERS)


def keywords(text: str) -> frozenset[bytes]:
    return frozenset(_letters(text).split()) - _IGNORED


def _blocks(text: str) -> Iterator[tuple[str, int, int, int]]:
    """(name, where the block starts, where its text starts, where its text ends), in order."""
    pos = 0
    while (match := _OPEN.search(text, pos)) is not None:
        end = text.find(_CLOSE, match.end())
        if end < 0:
            return
        yield match.group(1), match.start(), match.end(), end
        pos = end + len(_CLOSE)


def documents(parts: Iterable[Part]) -> list[Document]:
    """Every document block of the prompt with its full keyword set (for a Gemini cache)."""
    out: list[Document] = []
    for p in parts:
        if _OPEN_PROBE not in p.text:
            continue
        letters: bytes | None = None
        for name, _, start, end in _blocks(p.text):
            letters = letters or _letters(p.text)
            keys = frozenset(letters[start:end].split()) - _IGNORED
            out.append(Document(name, keys, p.text[start:end]))
    return out


def question_keywords(last_user: str) -> frozenset[bytes]:
    if _OPEN_PROBE not in last_user:
        return keywords(last_user)
    kept: list[str] = []
    pos = 0
    for _, block, _, end in _blocks(last_user):
        kept.append(last_user[pos:block])
        pos = end + len(_CLOSE)
    kept.append(last_user[pos:])
    # The block's own text is gone; "\n" keeps the surrounding words apart.
    return keywords("\n".join(kept))


def _scores(
    parts: Iterable[Part], question: frozenset[bytes]
) -> Iterator[tuple[str, int, str, int, int]]:
    """(name, shared keywords, the part's text, where the block's text starts and ends)."""
    needles = [b" " + word + b" " for word in question]
    for p in parts:
        if _OPEN_PROBE not in p.text:
            continue
        letters: bytes | None = None
        for name, _, start, end in _blocks(p.text):
            letters = letters or _letters(p.text)
            if len(needles) <= _SEARCH_MAX_KEYWORDS:
                # The characters just outside a block's text are newlines, i.e. spaces here.
                score = sum(letters.find(n, start - 1, end + 1) >= 0 for n in needles)
            else:
                score = len(question.intersection(letters[start:end].split()))
            yield name, score, p.text, start, end


def _lines(text: str, question: frozenset[bytes]) -> tuple[int, int]:
    """First and last line of `text` holding a question keyword (1-based)."""
    hits = [i for i, line in enumerate(text.split("\n"), 1) if question & keywords(line)]
    return (hits[0], hits[-1]) if hits else (1, text.count("\n") + 1)


def cited(parts: Iterable[Part], last_user: str, cached: Sequence[Document] = ()) -> list[Cited]:
    """The documents to cite with their lines, best first; `cached` come before `parts`."""
    question = question_keywords(last_user)
    if not question:
        return []
    scored = [
        (doc.name, len(question & doc.keywords), doc.text, 0, len(doc.text)) for doc in cached
    ]
    scored += _scores(parts, question)
    ranked = sorted((-row[1], i) for i, row in enumerate(scored) if row[1] > 0)
    out: list[Cited] = []
    for _, i in ranked:
        name, _, text, start, end = scored[i]
        if all(c.name != name for c in out):
            out.append(Cited(name, *_lines(text[start:end], question)))
            if len(out) == MAX_CITED:
                break
    return out


def cite(parts: Iterable[Part], last_user: str, cached: Sequence[Document] = ()) -> list[str]:
    """Names of the documents to cite, best first; `cached` come before `parts`."""
    return [c.name for c in cited(parts, last_user, cached)]
