"""Run a handler over a subscription's deliveries, many at once, with a graceful drain.

The handler gets a Delivery and returns the entries to publish (or nothing); they are
written before the ack (an entry whose output fails is not acked). It may raise DeadLetter
to park the entry with a reason. Redis unavailable inside the handler runs it again after a
short backoff (the entry is still ours). Any other exception is logged and the entry is
released: it stays pending and is delivered again after the visibility timeout, until
max_deliveries dead-letters it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog

from shared.bus.delivery import DeadLetter, Delivery, Effect
from shared.bus.priority import PrioritySubscription
from shared.bus.subscription import Subscription
from shared.runtime.redis import REDIS_UNAVAILABLE

log = structlog.get_logger("swarm.bus")

Handler = Callable[[Delivery], Awaitable[Sequence[Effect] | None]]

# A handler that meets Redis unavailable runs again after 0.25, 0.5, 1, 2, 4, 4 s (~12 s in
# all: a Redis restart or failover) before its entry is left for the visibility timeout.
BLIP_RETRIES = 6
BLIP_FIRST_DELAY_S = 0.25
BLIP_MAX_DELAY_S = 4.0


@dataclass(slots=True)
class ServeStats:
    acked: int = 0
    dead_lettered: int = 0
    failed: int = 0
    abandoned: int = 0


async def serve(
    sub: Subscription | PrioritySubscription,
    handler: Handler,
    *,
    stop: asyncio.Event,
    drain_timeout_s: float,
) -> ServeStats:
    """Hand each delivery to `handler` in its own task until `stop` is set, then drain.

    Concurrency is bounded by the subscription's max_in_flight. On stop: no new reads;
    in-flight handlers get `drain_timeout_s` to finish; the rest are cancelled without ack
    and stay pending for a peer (or this consumer's restart) to take over.
    """
    stats = ServeStats()
    tasks: set[asyncio.Task[None]] = set()
    stopper = asyncio.create_task(_stop_on(stop, sub))
    try:
        async for delivery in sub:
            task = asyncio.create_task(_handle(delivery, handler, stats))
            tasks.add(task)  # strong reference: the loop only keeps weak ones
            task.add_done_callback(tasks.discard)
    finally:
        stopper.cancel()
        if tasks:
            log.info("drain.start", in_flight=len(tasks), deadline_s=drain_timeout_s)
            _done, late = await asyncio.wait(tasks, timeout=drain_timeout_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await sub.close()
        log.info(
            "serve.stopped",
            stream=sub.stream,
            acked=stats.acked,
            dead_lettered=stats.dead_lettered,
            failed=stats.failed,
            abandoned=stats.abandoned,
        )
    return stats


async def _stop_on(stop: asyncio.Event, sub: Subscription | PrioritySubscription) -> None:
    await stop.wait()
    sub.stop()


async def _handle(delivery: Delivery, handler: Handler, stats: ServeStats) -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        stream=delivery.stream, entry_id=delivery.entry_id, deliveries=delivery.deliveries
    )
    started = time.perf_counter()
    delay = BLIP_FIRST_DELAY_S
    for attempt in range(1, BLIP_RETRIES + 2):
        try:
            out = await handler(delivery)
        except DeadLetter as dl:
            try:
                await delivery.dead_letter(
                    dl.reason,
                    field=dl.field,
                    stream=dl.stream,
                    effects=dl.effects,
                    excerpt=dl.excerpt,
                )
            except Exception:
                stats.failed += 1
                log.exception("delivery.dead_letter_failed", reason=dl.reason)
                return
            stats.dead_lettered += 1
            log.warning("delivery.dead_lettered", reason=dl.reason, field=dl.field)
            return
        except asyncio.CancelledError:
            delivery.release("abandoned")
            stats.abandoned += 1
            log.warning("delivery.abandoned", note="left pending for reclaim")
            raise
        except REDIS_UNAVAILABLE as exc:
            # A Redis blip (restart, failover, network): the entry is still this consumer's
            # and every step is idempotent, so run it again soon rather than leave it
            # pending for the visibility timeout (a minute by default).
            if attempt > BLIP_RETRIES:
                delivery.release("failed")
                stats.failed += 1
                log.exception("delivery.failed", note="Redis unavailable; left pending")
                return
            log.warning("delivery.redis_retry", error=str(exc) or type(exc).__name__, delay_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BLIP_MAX_DELAY_S)
            continue
        except Exception:
            delivery.release("failed")
            stats.failed += 1
            log.exception(
                "delivery.failed", note="left pending; redelivered after visibility timeout"
            )
            return
        break
    try:
        await delivery.ack(*(out or ()))
    except Exception:
        stats.failed += 1
        log.exception("delivery.ack_failed", note="not acked; redelivered after visibility timeout")
        return
    stats.acked += 1
    log.debug("delivery.acked", duration_ms=round((time.perf_counter() - started) * 1000, 2))
