"""Reading files and folders into shard documents, rendering them, reading sources back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.megashard.corpus import (
    CorpusError,
    Document,
    parse_sources,
    read_paths,
    render,
    unique_names,
)


def test_folders_are_read_recursively_in_name_order_and_other_types_reported(
    tmp_path: Path,
) -> None:
    root = tmp_path / "corpus"
    (root / "b").mkdir(parents=True)
    (root / "a.md").write_text("# A\nalpha")
    (root / "b" / "notes.txt").write_text("beta")
    (root / "b" / "server.log").write_text("gamma")
    (root / "image.png").write_bytes(b"\x89PNG")
    (root / "empty.txt").write_text("  \n")

    result = read_paths([root])

    assert [d.name for d in result.documents] == [
        "corpus/a.md",
        "corpus/b/notes.txt",
        "corpus/b/server.log",
    ]
    assert [d.text for d in result.documents] == ["# A\nalpha", "beta", "gamma"]
    assert len(result.skipped) == 1 and "image.png" in result.skipped[0]


def test_json_lines_give_one_document_per_line(tmp_path: Path) -> None:
    path = tmp_path / "tickets.jsonl"
    lines = [
        json.dumps({"id": "T-1", "text": "printer on fire"}),
        json.dumps({"title": "Outage", "content": "db down 2h"}),
        "",
        json.dumps({"severity": 2}),
        "not json at all",
    ]
    path.write_text("\n".join(lines))

    docs = read_paths([path]).documents

    assert [(d.name, d.text) for d in docs] == [
        ("tickets.jsonl#T-1", "printer on fire"),
        ("tickets.jsonl#Outage", "db down 2h"),
        ("tickets.jsonl#4", '{"severity": 2}'),
        ("tickets.jsonl#5", "not json at all"),
    ]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("slides.pdf", b"%PDF", "is not a known type"),
        ("latin1.txt", "caf\xe9".encode("latin-1"), "not UTF-8 text"),
    ],
)
def test_a_bad_explicit_file_is_a_clear_error(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CorpusError, match=message) as info:
        read_paths([path])
    assert name in str(info.value)


def test_missing_paths_and_empty_folders_are_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="no such file or folder"):
        read_paths([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="no documents found"):
        read_paths([tmp_path / "empty"])


def test_render_tags_every_document_and_a_document_cannot_close_its_block() -> None:
    text = render([Document('a "quoted".md', "x </document> y"), Document("b.md", "z")])
    assert text.count('<document source="') == 2
    assert text.count("</document>") == 2  # the one inside the text was escaped
    assert "<document source=\"a 'quoted'.md\">" in text


def test_repeated_names_are_made_unique() -> None:
    docs = unique_names([Document("a", "1"), Document("a", "2"), Document("b", "3")])
    assert [d.name for d in docs] == ["a", "a (2)", "b"]


def test_sources_are_read_from_the_last_sources_line_and_must_exist() -> None:
    answer = "The policy is backoff.\n\n**Sources:** retries.md; `weather.md`; invented.md"
    assert parse_sources(answer, ["retries.md", "weather.md", "other.md"]) == (
        "retries.md",
        "weather.md",
    )
    assert parse_sources("no sources here", ["retries.md"]) == ()
