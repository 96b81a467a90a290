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

Sources. An answer ends with `Sources: NAME#L10-L42; NAME`; `read_sources` keeps what the
shard holds, each as `NAME#L<first>-L<last>` (lines of that document's own text, from 1,
inclusive; `NAME#L<n>` for one line) or a bare `NAME` when the answer gave no range or one
outside the document. A name the shard does not hold is dropped (and reported). A range is
checked to lie within the document, not to be what the model read.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
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
    "hold the answer. End with one line `Sources: NAME#L10-L42; NAME#L7` naming the documents "
    "you used, each with the lines of it you drew on (counted from its first line)."
)
_RANGE = re.compile(r"^(?P<name>.+?)#L(?P<first>\d+)(?:-L?(?P<last>\d+))?$")


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


@dataclass(frozen=True, slots=True)
class Sources:
    kept: tuple[str, ...]  # NAME or NAME#L<first>-L<last>, each a document the shard holds
    dropped: tuple[str, ...]  # what the answer named that the shard does not hold


def line_count(text: str) -> int:
    return max(len(text.splitlines()), 1)


def read_sources(answer: str, held: Mapping[str, int]) -> Sources:
    """The sources an answer names in its last `Sources:` line, checked against `held`
    (document name -> its number of lines)."""
    kept: list[str] = []
    dropped: list[str] = []
    for line in reversed(answer.splitlines()):
        stripped = line.strip().strip("*_`")
        if stripped.lower().startswith("sources:"):
            for raw in stripped.split(":", 1)[1].split(";"):
                item = raw.strip().strip("`'\"[]*_ ")
                source = _checked(item, held)
                if source is None:
                    if item:
                        dropped.append(item)
                elif source not in kept:
                    kept.append(source)
            break
    return Sources(tuple(kept), tuple(dropped))


def _checked(item: str, held: Mapping[str, int]) -> str | None:
    if item in held:
        return item
    match = _RANGE.match(item)
    if match is None or match["name"] not in held:
        return None
    name, first = match["name"], int(match["first"])
    last = int(match["last"] or first)
    if not 1 <= first <= last <= held[name]:
        return name  # the document is held; that range of it is not
    return f"{name}#L{first}" if first == last else f"{name}#L{first}-L{last}"


def parse_sources(answer: str, known: Iterable[str]) -> tuple[str, ...]:
    """The document names an answer's `Sources:` line gives, kept only if they exist
    (without line ranges: `read_sources` checks those)."""
    return read_sources(answer, dict.fromkeys(known, 0)).kept
