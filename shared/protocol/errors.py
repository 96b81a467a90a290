"""Errors raised while decoding messages.

ProtocolError
└── DecodeError        a stream entry or JSON document is not a valid message;
                       carries one FieldProblem per offending field
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One thing wrong with one field: `field` is "" when the entry as a whole is wrong."""

    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.field}: {self.problem}" if self.field else self.problem


class ProtocolError(Exception):
    """Base of every protocol error."""


_SHOWN = 10
_MAX_CHARS = 4000


class DecodeError(ProtocolError):
    """The input does not decode to the expected message."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        self.problems = problems
        shown = "; ".join(str(p) for p in problems[:_SHOWN])
        if len(problems) > _SHOWN:
            shown += f"; and {len(problems) - _SHOWN:,} more problems"
        if len(shown) > _MAX_CHARS:  # a reason is read by people and kept in Redis
            shown = shown[:_MAX_CHARS] + "..."
        super().__init__(shown)

    @property
    def field(self) -> str:
        """The first offending field, for metrics and the rejection record."""
        return self.problems[0].field if self.problems else ""
