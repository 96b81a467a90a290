"""Cancel requests: `swarm:cancel` entries, read by the dispatchers' group.

Each marks its task cancelled (`swarm:cancelled:<task_id>`, the reason, for as long as task
records last). A worker checks the mark before it calls the vendor, so a task still queued
is never sent; workers also tail the stream themselves to close a call already in flight
(services/worker/cancels.py). A finished task is left as it is: its worker's done-marker
came first. Business logic only: the mark is an effect written with the ack.
"""

from __future__ import annotations

import structlog

from shared.bus import DeadLetter, Delivery, Effect, SetKey
from shared.bus.serve import Handler
from shared.protocol import Cancel, DecodeError, Names, decode

log = structlog.get_logger("swarm.dispatcher")


def cancel_handler(names: Names, ttl_s: float) -> Handler:
    async def handle(delivery: Delivery) -> list[Effect]:
        try:
            cancel = decode(Cancel, delivery.fields)
        except DecodeError as exc:
            raise DeadLetter(f"not a valid cancel request: {exc}", field=exc.field) from exc
        reason = cancel.reason.strip() or "cancelled by its poster"
        log.info("task.cancel_requested", task_id=cancel.task_id, reason=reason)
        return [SetKey(names.task_cancelled(cancel.task_id), reason, ttl_s)]

    return handle
