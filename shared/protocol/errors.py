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


class DecodeError(ProtocolError):
    """The input does not decode to the expected message."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))

    @property
    def field(self) -> str:
        """The first offending field, for metrics and the rejection record."""
        return self.problems[0].field if self.problems else ""
