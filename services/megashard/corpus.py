"""Documents a shard holds: read from files and folders, rendered into one context. Pure.

Formats (by file extension):

* text: `.txt`, `.log`, `.text`: the whole file is one document, named by its path;
* Markdown: `.md`, `.markdown`: the whole file is one document;
* JSON lines: `.jsonl`, `.ndjson`: one document per line. A line that is an object with a
  `text`, `content` or `body` string uses it as the text and its `id`, `title`, `name` or
  `source` as the name (`path#<that>`); any other line is kept whole as its text, named
  `path#<line number>`.

A folder is read recursively in name order; files of other types inside it are skipped and
reported. A file named explicitly must be of a known type. Text must be UTF-8.

The context a model sees is the documents in order, each as
`<document source="NAME">...</document>`, so an answer can name what it drew on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

TEXT_SUFFIXES = frozenset({".txt", ".log", ".text", ".md", ".markdown"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
SUFFIXES = TEXT_SUFFIXES | JSONL_SUFFIXES
_TEXT_KEYS = ("text", "content", "body")
_NAME_KEYS = ("id", "title", "name", "source")

SYSTEM_PROMPT = (
    "You answer questions from the documents in your context, each given as "
    '<document source="NAME">...</document>. Answer only from them; say so when they do not '
    "hold the answer. End with one line `Sources: NAME; NAME` naming the documents you used."
)


class CorpusError(ValueError):
    """A path that cannot be read as context, with the reason."""


@dataclass(frozen=True, slots=True)
class Document:
    name: str
    text: str

    @property
    def digest(self) -> str:
        return digest(self.text)


@dataclass(slots=True)
class ReadResult:
    documents: list[Document] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "path: why"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def read_paths(paths: Sequence[Path]) -> ReadResult:
    """Every document under `paths`, in order; raises CorpusError for a bad explicit path."""
    result = ReadResult()
    for path in paths:
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                if child.suffix.lower() in SUFFIXES:
                    result.documents.extend(read_file(child, base=path.parent))
                else:
                    result.skipped.append(
                        f"{child}: not a known type ({', '.join(sorted(SUFFIXES))})"
                    )
        elif path.is_file():
            if path.suffix.lower() not in SUFFIXES:
                raise CorpusError(
                    f"{path}: {path.suffix or 'no extension'} is not a known type; "
                    f"use one of {', '.join(sorted(SUFFIXES))}"
                )
            result.documents.extend(read_file(path, base=path.parent))
        else:
            raise CorpusError(f"{path}: no such file or folder")
    if not result.documents:
        raise CorpusError("no documents found in " + ", ".join(str(p) for p in paths))
    return result


def read_file(path: Path, *, base: Path) -> list[Document]:
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise CorpusError(f"{path}: {exc.strerror or exc}") from None
    name = path.relative_to(base).as_posix() if path.is_relative_to(base) else path.as_posix()
    if path.suffix.lower() in JSONL_SUFFIXES:
        return list(_jsonl(raw, name))
    return [Document(name, raw)] if raw.strip() else []


def _jsonl(raw: str, name: str) -> Iterable[Document]:
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            obj = None
        text, label = line, str(number)
        if isinstance(obj, dict):
            text = next((v for k in _TEXT_KEYS if isinstance(v := obj.get(k), str)), line)
            label = next((str(v) for k in _NAME_KEYS if (v := obj.get(k)) not in (None, "")), label)
        yield Document(f"{name}#{label}", text)


def render(documents: Iterable[Document]) -> str:
    """The context text: every document in a tagged block, in order."""
    return "".join(_block(d) for d in documents)


def _block(doc: Document) -> str:
    name = doc.name.replace('"', "'")
    text = doc.text.replace("</document>", "<\\/document>")  # a document cannot end the block
    return f'<document source="{name}">\n{text}\n</document>\n\n'


def unique_names(documents: Sequence[Document]) -> list[Document]:
    """Documents renamed `name (2)`, `name (3)` where a name repeats, so sources are exact."""
    seen: dict[str, int] = {}
    out = []
    for doc in documents:
        n = seen.get(doc.name, 0) + 1
        seen[doc.name] = n
        out.append(doc if n == 1 else Document(f"{doc.name} ({n})", doc.text))
    return out


def parse_sources(answer: str, known: Iterable[str]) -> tuple[str, ...]:
    """The documents an answer names in its `Sources:` line, kept only if they exist."""
    names = set(known)
    found: list[str] = []
    for line in reversed(answer.splitlines()):
        stripped = line.strip().strip("*_`")
        if stripped.lower().startswith("sources:"):
            for raw in stripped.split(":", 1)[1].split(";"):
                item = raw.strip().strip("`'\"[]*_ ")
                if item in names and item not in found:
                    found.append(item)
            break
    return tuple(found)
