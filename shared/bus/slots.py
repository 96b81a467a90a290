"""The in-flight capacity of one consumer, shared by the subscriptions it reads together
(one per urgency level): each reads only into free slots, so the levels never hold more
than the consumer can handle at once, and the consumer takes from the highest first."""

from __future__ import annotations

import asyncio
from typing import Protocol


class Holder(Protocol):
    def held(self) -> int:
        """Entries handed out or queued to be."""
        ...


class Slots:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.holders: list[Holder] = []
        self.room = asyncio.Event()  # set while a slot is free: readers may read
        self.room.set()
        self.ready = asyncio.Event()  # set when an entry was queued (or on stop/failure)

    def free(self) -> int:
        if len(self.holders) == 1:  # the common case, kept cheap: it runs per delivery
            return self.limit - self.holders[0].held()
        return self.limit - sum(h.held() for h in self.holders)

    def update(self) -> None:
        if self.free() > 0:
            self.room.set()
        else:
            self.room.clear()
