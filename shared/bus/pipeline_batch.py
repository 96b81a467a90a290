"""One round trip for the commands of every caller waiting at once.

A service handles hundreds of deliveries at once, each with a command or two of its own
(the collector: is this finding stored, then store it). Sent one by one they cost a round
trip each, and as many pooled connections as there are deliveries; queued here, each
waits for the next pipeline, which carries every command queued while the one before was
on the wire (the dispatcher's task-id claims do the same, services/dispatcher/claims.py).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

Queue = Callable[[Pipeline], Awaitable[Any] | Any]


class PipelineBatch:
    """`await batch.call(lambda pipe: pipe.hexists(key, field))`: the command's reply, or
    its error raised; a script goes as `lambda pipe: script(keys=..., args=..., client=pipe)`.
    A call that queues several commands gets their replies as a list (the first error
    raised instead)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._queued: list[tuple[Queue, asyncio.Future[Any]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def call(self, queue: Queue) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append((queue, future))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send(), name="pipeline-batch")
        return await future

    async def _send(self) -> None:
        batch: list[tuple[Queue, asyncio.Future[Any]]] = []
        try:
            while self._queued:
                batch, self._queued = self._queued, []
                try:
                    replies = await self._execute(batch)
                except Exception as exc:  # e.g. Redis unavailable: each caller decides
                    _fail(batch, exc)
                    continue
                for (_queue, future), reply in zip(batch, replies, strict=True):
                    if future.done():
                        continue
                    error = next((r for r in reply if isinstance(r, Exception)), None)
                    if error is not None:
                        future.set_exception(error)
                    else:
                        future.set_result(reply[0] if len(reply) == 1 else reply)
        except BaseException as exc:  # cancelled: no caller is left waiting forever
            _fail([*batch, *self._queued], exc)
            self._queued = []
            raise
        finally:
            self._sender = None

    async def _execute(self, batch: list[tuple[Queue, asyncio.Future[Any]]]) -> list[list[Any]]:
        """Each call's replies, in the order of the batch."""
        async with self._redis.pipeline(transaction=False) as pipe:
            bounds = []
            for queue, _future in batch:
                start = len(pipe.command_stack)
                queued = queue(pipe)
                if inspect.isawaitable(queued):
                    await queued
                bounds.append((start, len(pipe.command_stack)))
            replies = list(await pipe.execute(raise_on_error=False))
        return [replies[start:end] for start, end in bounds]

    async def close(self) -> None:
        """Wait for the batch on the wire, if any."""
        if self._sender is not None:
            await asyncio.gather(self._sender, return_exceptions=True)


def _fail(batch: list[tuple[Queue, asyncio.Future[Any]]], exc: BaseException) -> None:
    for _queue, future in batch:
        if not future.done():
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
