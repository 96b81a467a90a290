"""W3C trace context (`traceparent`, `tracestate`) carried in a message's `headers`.

Pure data: parsing, a fresh trace, a child span id. Which spans exist and where they are
exported is shared.runtime.tracing's business (docs/protocol.md section 10.1).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, Self, TypeVar

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# version 00: 2 hex version, 32 hex trace id, 16 hex parent id, 2 hex flags, lowercase.
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_INVALID_TRACE, _INVALID_SPAN = "0" * 32, "0" * 16
SAMPLED = 0x01


@dataclass(frozen=True, slots=True)
class TraceContext:
    """One span's place in a trace: what the next hop names as its parent."""

    trace_id: str  # 32 lowercase hex, never all zeros
    span_id: str  # 16 lowercase hex, never all zeros
    flags: int = SAMPLED
    state: str = ""  # tracestate, passed on unchanged

    @classmethod
    def new(cls) -> TraceContext:
        """The first span of a new, sampled trace."""
        return cls(_nonzero_hex(16), _nonzero_hex(8))

    @classmethod
    def parse(cls, traceparent: str, tracestate: str = "") -> TraceContext | None:
        """None for a value W3C says to ignore (its receiver then starts a new trace).

        Version 00 must be exactly 55 characters; a later version may append fields,
        which are ignored; version ff is invalid."""
        m = _TRACEPARENT.match(traceparent.strip())
        if m is None:
            return None
        version, trace_id, span_id, flags, rest = m.groups()
        if version == "ff" or (version == "00" and rest):
            return None
        if trace_id == _INVALID_TRACE or span_id == _INVALID_SPAN:
            return None
        return cls(trace_id, span_id, int(flags, 16), tracestate.strip())

    @property
    def sampled(self) -> bool:
        return bool(self.flags & SAMPLED)

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags:02x}"

    def child(self, span_id: str | None = None) -> TraceContext:
        """A span of the same trace whose parent is this one."""
        return TraceContext(self.trace_id, span_id or _nonzero_hex(8), self.flags, self.state)

    def headers(self) -> dict[str, str]:
        out = {TRACEPARENT: self.traceparent}
        if self.state:
            out[TRACESTATE] = self.state
        return out


def trace_of(headers: Mapping[str, str]) -> TraceContext | None:
    """The trace a message's headers carry; None when none, or an invalid one."""
    value = headers.get(TRACEPARENT)
    if value is None:
        return None
    return TraceContext.parse(value, headers.get(TRACESTATE, ""))


def with_trace(headers: Mapping[str, str], trace: TraceContext) -> dict[str, str]:
    """`headers` naming `trace` as the parent of the next hop; other headers kept.

    An invalid `traceparent` is replaced and its `tracestate` dropped, as W3C requires."""
    out = {k: v for k, v in headers.items() if k not in (TRACEPARENT, TRACESTATE)}
    out.update(trace.headers())
    return out


class _Headed(Protocol):
    """A message with `headers` (Task, ContextQuery, Finding): a pydantic model."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    def model_copy(
        self, *, update: Mapping[str, Any] | None = None, deep: bool = False
    ) -> Self: ...


Headed = TypeVar("Headed", bound=_Headed)


def child_of(message: Headed, trace: TraceContext) -> Headed:
    """`message` with `trace` as the parent of its next hop (its headers by with_trace)."""
    return message.model_copy(update={"headers": with_trace(message.headers, trace)})


def _nonzero_hex(nbytes: int) -> str:
    while True:
        raw = os.urandom(nbytes)
        if any(raw):
            return raw.hex()
