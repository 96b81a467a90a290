"""One consumer reading several streams by urgency: a subscription per stream (each with
its own acks, reclaims, leases and trimming), sharing one set of slots. The most urgent
stream's subscription reads for all of them, highest first; deliveries are handed out
highest first too. See docs/protocol.md, "Urgency"."""

from __future__ import annotations

from collections.abc import MutableSequence, Sequence

from redis.asyncio import Redis

from shared.bus.delivery import Delivery
from shared.bus.slots import Slots
from shared.bus.subscription import Subscription, ensure_group
from shared.protocol.names import Names
from shared.runtime.health import ReadinessCheck
from shared.runtime.metrics import Metrics
from shared.runtime.settings import BusSettings


class PrioritySubscription:
    def __init__(
        self,
        redis: Redis,
        names: Names,
        settings: BusSettings,
        metrics: Metrics,
        *,
        streams: Sequence[str],
        group: str,
        consumer: str,
        readiness: MutableSequence[ReadinessCheck] | None = None,
    ) -> None:
        """`streams` most urgent first."""
        self.stream = ",".join(streams)
        self.group = group
        self.consumer = consumer
        slots = Slots(settings.max_in_flight)
        self._levels = [
            Subscription(
                redis,
                names,
                settings,
                metrics,
                stream=stream,
                group=group,
                consumer=consumer,
                slots=slots,
                reads=i == 0,
            )
            for i, stream in enumerate(streams)
        ]
        self._levels[0].read_for(self._levels, settings.urgency_aging_s)
        self._ready = slots.ready
        self._redis = redis
        self._readiness = readiness

    @property
    def in_flight(self) -> int:
        return sum(level.in_flight for level in self._levels)

    async def readiness(self) -> str | None:
        for level in self._levels:
            why = await level.readiness()
            if why is not None:
                return why
        return None

    async def start(self) -> None:
        for level in self._levels:  # the groups first, most urgent first, then their work
            await ensure_group(self._redis, level.stream, level.group)
        for level in reversed(self._levels):  # the reader last: every level runs by then
            await level.start()
        if self._readiness is not None:
            self._readiness.append(self.readiness)

    def stop(self) -> None:
        for level in self._levels:
            level.stop()

    async def close(self) -> None:
        self.stop()
        if self._readiness is not None and self.readiness in self._readiness:
            self._readiness.remove(self.readiness)
        for level in self._levels:
            await level.close()

    async def __aenter__(self) -> PrioritySubscription:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> PrioritySubscription:
        return self

    async def __anext__(self) -> Delivery:
        while True:
            # Cleared before looking: an entry queued meanwhile sets it again.
            self._ready.clear()
            for level in self._levels:
                delivery = await level.next_queued()
                if delivery is not None:
                    return delivery
            await self._ready.wait()
