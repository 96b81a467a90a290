"""Stream entry ids (`<ms>-<seq>`) compared as numbers, not strings."""

from __future__ import annotations


def parse(entry_id: str | bytes) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def fmt(parsed: tuple[int, int]) -> str:
    return f"{parsed[0]}-{parsed[1]}"


def text(entry_id: str | bytes) -> str:
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id
