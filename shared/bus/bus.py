"""The bus: publish entries, and subscribe to a stream through a consumer group."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableSequence, Sequence

from redis.asyncio import Redis

from shared.bus.delivery import Outgoing
from shared.bus.priority import PrioritySubscription
from shared.bus.subscription import Subscription, ensure_group
from shared.protocol.names import Names
from shared.runtime.health import ReadinessCheck
from shared.runtime.metrics import Metrics
from shared.runtime.settings import BusSettings


class Bus:
    """Two verbs over Redis Streams: `publish` and `subscribe(...)` (deliveries with ack)."""

    def __init__(
        self,
        redis: Redis,
        names: Names,
        settings: BusSettings,
        metrics: Metrics,
        *,
        readiness: MutableSequence[ReadinessCheck] | None = None,
    ) -> None:
        self.redis = redis
        self.names = names
        self.settings = settings
        self.metrics = metrics
        # A service's readiness checks: each subscription adds itself while it runs.
        self.readiness: MutableSequence[ReadinessCheck] = [] if readiness is None else readiness

    async def publish(self, stream: str, fields: Mapping[str, str | bytes]) -> str:
        """Append one entry; returns its id. Trimming is done by consumers, safely."""
        entry_id = await self.redis.xadd(stream, dict(fields))  # type: ignore[arg-type]
        self.metrics.published.labels(stream).inc()
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def publish_many(self, entries: Iterable[Outgoing]) -> list[str]:
        """Append many entries in one round trip (pipelined, not atomic)."""
        items = list(entries)
        async with self.redis.pipeline(transaction=False) as pipe:
            for out in items:
                pipe.xadd(out.stream, dict(out.fields))  # type: ignore[arg-type]
            ids = await pipe.execute()
        for out in items:
            self.metrics.published.labels(out.stream).inc()
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    async def ensure_group(self, stream: str, group: str) -> bool:
        return await ensure_group(self.redis, stream, group)

    def subscribe(self, stream: str, group: str, consumer: str) -> Subscription:
        """A subscription; use `async with` (or start/close) and iterate its deliveries.

        `consumer` must be the member id this process heartbeats under, so that peers
        can tell when it has died and take over its pending entries at once. Once started
        it is one of `readiness` (its read loop alive) until it is closed.
        """
        return Subscription(
            self.redis,
            self.names,
            self.settings,
            self.metrics,
            stream=stream,
            group=group,
            consumer=consumer,
            readiness=self.readiness,
        )

    def subscribe_by_urgency(
        self, streams: Sequence[str], group: str, consumer: str
    ) -> PrioritySubscription:
        """Like `subscribe`, over several streams read most urgent (first) first, within one
        `max_in_flight`; a lower one is read at least once per `urgency_aging_s` while
        higher ones keep it busy (see docs/protocol.md, "Urgency")."""
        return PrioritySubscription(
            self.redis,
            self.names,
            self.settings,
            self.metrics,
            streams=streams,
            group=group,
            consumer=consumer,
            readiness=self.readiness,
        )
