"""Cancels for a worker: which tasks' vendor calls are in flight here, and closing one when
a cancel request for its task arrives (the worker tails `swarm:cancel`; service.py).

Cancelling the call's asyncio task closes its HTTP request: the vendor stops generating,
though it may bill what it had read. A request that arrives just before the call starts
is remembered (the most recent `remember` task ids), so the call is cancelled as it starts.
No Redis here.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any


class CancelWatch:
    def __init__(self, remember: int = 10_000) -> None:
        self._calls: dict[str, asyncio.Future[Any]] = {}
        self._requested: OrderedDict[str, str] = OrderedDict()  # task id -> reason
        self._remember = remember

    def track(self, task_id: str, call: asyncio.Future[Any]) -> None:
        self._calls[task_id] = call
        if task_id in self._requested:
            call.cancel()

    def untrack(self, task_id: str) -> None:
        self._calls.pop(task_id, None)

    def requested(self, task_id: str) -> str | None:
        """The reason this task was cancelled, if a request for it reached this worker."""
        return self._requested.get(task_id)

    def cancel(self, task_id: str, reason: str) -> bool:
        """Remember the request; close the task's call if it is in flight here (True)."""
        self._requested[task_id] = reason
        self._requested.move_to_end(task_id)
        while len(self._requested) > self._remember:
            self._requested.popitem(last=False)
        call = self._calls.get(task_id)
        if call is None or call.done():
            return False
        call.cancel()
        return True
