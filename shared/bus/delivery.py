"""One delivered stream entry and the ways it can end: ack, dead-letter, or release."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shared.protocol import Rejection, encode_rejection

if TYPE_CHECKING:
    from shared.bus.subscription import Subscription

# Entry fields to write; a dead-letter record keeps a non-UTF-8 original name as bytes.
Fields = Mapping[str, str | bytes] | Mapping[str | bytes, str | bytes]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An entry to publish atomically with an ack (the handler's effect). With `maxlen`
    the stream is then trimmed to about that many entries (`XTRIM MAXLEN ~`)."""

    stream: str
    fields: Fields
    maxlen: int | None = None


@dataclass(frozen=True, slots=True)
class SetKey:
    """A key to set atomically with an ack (an idempotency marker, a task record)."""

    key: str
    value: str
    ttl_s: float | None = None


@dataclass(frozen=True, slots=True)
class SetFields:
    """Hash fields to set atomically with an ack (a task record's state)."""

    key: str
    fields: Mapping[str, str]
    ttl_s: float | None = None


@dataclass(frozen=True, slots=True)
class Fence:
    """Makes a delivery's effects happen once per key, whoever delivers it: if `key` exists,
    the other effects are skipped (another consumer already wrote them: a peer took the entry
    over while this one was slow) and the entry is acked; else they are written and `key` set
    last, in one script. A worker fences its finding with the task's done-marker."""

    key: str
    value: str
    ttl_s: float | None = None


Effect = Outgoing | SetKey | SetFields | Fence


class DeadLetter(Exception):
    """Raised by a handler: move this entry to a dead-letter stream with `reason`.

    `stream` overrides the destination (the dispatcher sends bad intake to the rejected
    stream); `field` names the offending field when there is one; `effects` are written
    with it (a worker parks a task it gave up on together with its failed finding);
    `excerpt` keeps only a bounded excerpt of the entry, its size and hash (an entry refused
    for its size: the record must not hold megabytes, and replaying it would fail again).
    """

    def __init__(
        self,
        reason: str,
        *,
        field: str = "",
        stream: str | None = None,
        effects: tuple[Effect, ...] = (),
        excerpt: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.stream = stream
        self.effects = effects
        self.excerpt = excerpt


@dataclass(slots=True, eq=False)
class Delivery:
    """An entry this consumer owns until it acks, dead-letters or releases it.

    `deliveries` counts how often the group has handed the entry out (1 on first read).
    """

    stream: str
    group: str
    entry_id: str
    fields: dict[bytes, bytes]
    deliveries: int
    _sub: Subscription
    started: float = field(default_factory=time.monotonic)
    done: bool = False

    def text(self, name: str, default: str = "") -> str:
        raw = self.fields.get(name.encode())
        return default if raw is None else raw.decode(errors="replace")

    async def ack(self, *effects: Effect) -> None:
        """Acknowledge, once `effects` are written (never if one of them fails)."""
        await self._sub._finish(self, effects, None, None, "acked")

    async def dead_letter(
        self,
        reason: str,
        *,
        field: str = "",
        stream: str | None = None,
        effects: tuple[Effect, ...] = (),
        excerpt: bool = False,
    ) -> None:
        """Copy the entry with `reason` to the dead-letter stream, then ack, atomically
        (with `effects`, such as a failed finding); with `excerpt`, only a bounded excerpt."""
        rejection = Rejection(
            reason=reason,
            field=field,
            source_stream=self.stream,
            source_id=self.entry_id,
            deliveries=self.deliveries,
            consumer=self._sub.consumer,
            group=self.group,
        )
        record = encode_rejection(rejection, self.fields, excerpt=excerpt)
        await self._sub._finish(self, effects, record, stream, "dead_lettered")

    def release(self, outcome: str = "failed") -> None:
        """Give up without ack: the entry stays pending and is redelivered after the
        visibility timeout (its delivery count then rises towards the dead-letter cap)."""
        self._sub._release(self, outcome)
