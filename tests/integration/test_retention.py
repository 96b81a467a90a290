"""Streams nobody consumes stay bounded: each write to the dead-letter and rejected streams
trims them to about their cap (`SWARM_DLQ_MAXLEN`, `SWARM_REJECTED_MAXLEN`), on the plain
and on the fenced path, and what the caps drop is counted."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from shared.bus import Bus, DeadLetter, Delivery, Fence, Outgoing, serve
from shared.protocol import Names
from shared.runtime.metrics import Metrics
from shared.runtime.settings import BusSettings
from tests.waiting import eventually

CAP = 50
NODE = 100  # Redis's stream-node-max-entries: `MAXLEN ~` trims whole nodes only
EACH = 400


async def test_dead_letter_and_rejected_streams_stay_near_their_caps(
    redis: Redis, names: Names, bus_settings: BusSettings
) -> None:
    settings = bus_settings.model_copy(update={"dlq_maxlen": CAP, "rejected_maxlen": CAP})
    bus = Bus(redis, names, settings, Metrics.create())

    async def refuse(d: Delivery) -> list[Any]:
        n = int(d.fields[b"n"])
        if n % 2:  # a worker's way: parked with its fenced failed finding
            fence = Fence(names.task_done("claude", f"t{n}"), f"f{n}", 60)
            finding = Outgoing(names.findings, {"task_id": f"t{n}"})
            raise DeadLetter("gave up", stream=names.rejected, effects=(finding, fence))
        raise DeadLetter("cannot handle it")

    async with redis.pipeline(transaction=False) as pipe:
        for n in range(2 * EACH):
            pipe.xadd(names.intake, {"n": str(n), "payload": "x" * 1000})
        await pipe.execute()
    stop = asyncio.Event()
    sub = bus.subscribe(names.intake, "g", "c1")
    await sub.start()
    serving = asyncio.create_task(serve(sub, refuse, stop=stop, drain_timeout_s=5))

    async def all_parked() -> bool:
        return int(await redis.xlen(names.findings)) == EACH

    await eventually(all_parked, timeout=20, what="every entry dead-lettered or rejected")
    await eventually(lambda: _settled(redis, names), timeout=10, what="every entry acked")
    stop.set()
    await serving
    for stream in (names.dead_letter, names.rejected):
        kept = int(await redis.xlen(stream))
        assert CAP <= kept <= CAP + NODE, (stream, kept)
        dropped = bus.metrics.registry.get_sample_value(
            "swarm_capped_records_total", {"stream": stream}
        )
        assert dropped == EACH - kept, stream
    assert int(await redis.xlen(names.findings)) == EACH  # an effect's own stream: no cap


async def _settled(redis: Redis, names: Names) -> bool:
    summary: Any = await redis.xpending(names.intake, "g")
    return int(summary["pending"]) == 0
