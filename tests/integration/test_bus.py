"""The bus on a real Redis: groups, ack, atomic publish, dead letters, concurrency."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shared.bus import Bus, DeadLetter, Delivery, Outgoing, ensure_group, serve
from shared.protocol import Names
from shared.runtime.metrics import Metrics
from shared.runtime.net import free_port
from shared.runtime.settings import BusSettings
from tests.waiting import eventually


async def _pending(redis: Redis, stream: str, group: str) -> int:
    summary: Any = await redis.xpending(stream, group)
    return int(summary["pending"])


async def _run(bus: Bus, stream: str, group: str, handler: Any, until: Any) -> None:
    """Serve until `until()` is truthy, then stop and drain."""
    sub = bus.subscribe(stream, group, "c1")
    await sub.start()
    stop = asyncio.Event()
    served = asyncio.create_task(serve(sub, handler, stop=stop, drain_timeout_s=5))
    try:
        await eventually(until, timeout=15, what="handler outcome")
    finally:
        stop.set()
        await served


async def test_group_creation_is_idempotent(redis: Redis, names: Names) -> None:
    assert await ensure_group(redis, names.intake, "g") is True
    assert await ensure_group(redis, names.intake, "g") is False
    assert [g["name"] for g in await redis.xinfo_groups(names.intake)] == [b"g"]


async def test_group_creation_reraises_other_errors(redis: Redis, names: Names) -> None:
    await redis.set(names.intake, "not a stream")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await ensure_group(redis, names.intake, "g")


async def test_tasks_posted_before_the_group_exists_are_served(bus: Bus, names: Names) -> None:
    await bus.publish(names.intake, {"prompt": "early"})
    seen: list[str] = []

    async def handler(d: Delivery) -> None:
        seen.append(d.text("prompt"))

    async def done() -> bool:
        return seen == ["early"]

    await _run(bus, names.intake, "g", handler, done)
    assert await _pending(bus.redis, names.intake, "g") == 0


async def test_ack_publishes_effect_and_acks_together(bus: Bus, names: Names) -> None:
    for i in range(50):
        await bus.publish(names.intake, {"n": str(i)})

    async def handler(d: Delivery) -> list[Outgoing]:
        return [Outgoing(names.findings, {"n": d.text("n"), "by": "c1"})]

    async def done() -> bool:
        return await bus.redis.xlen(names.findings) == 50

    await _run(bus, names.intake, "g", handler, done)
    entries = await bus.redis.xrange(names.findings)
    assert sorted(int(f[b"n"]) for _, f in entries) == list(range(50))
    assert await _pending(bus.redis, names.intake, "g") == 0


async def test_handler_dead_letter_keeps_reason_and_original_fields(bus: Bus, names: Names) -> None:
    entry_id = await bus.publish(names.intake, {"prompt": b"\xff\xfe", "complexity": "hard"})

    async def handler(d: Delivery) -> None:
        raise DeadLetter("prompt: is not valid UTF-8", field="prompt", stream=names.rejected)

    async def done() -> list[Any]:
        return list(await bus.redis.xrange(names.rejected))

    await _run(bus, names.intake, "g", handler, done)
    [(_id, record)] = await bus.redis.xrange(names.rejected)
    assert record[b"reason"] == b"prompt: is not valid UTF-8"
    assert record[b"field"] == b"prompt"
    assert record[b"source_id"] == entry_id.encode()
    assert record[b"orig:prompt"] == b"\xff\xfe"  # byte-exact, so it can be replayed
    assert record[b"orig:complexity"] == b"hard"
    assert await _pending(bus.redis, names.intake, "g") == 0


async def test_poison_message_is_dead_lettered_after_max_deliveries(
    redis: Redis, names: Names, bus_settings: BusSettings
) -> None:
    settings = bus_settings.model_copy(update={"visibility_timeout_s": 0.3, "max_deliveries": 3})
    bus = Bus(redis, names, settings, Metrics.create())
    await bus.publish(names.intake, {"prompt": "explodes"})
    attempts: list[int] = []

    async def handler(d: Delivery) -> None:
        attempts.append(d.deliveries)
        raise RuntimeError("handler bug")

    async def done() -> list[Any]:
        return list(await redis.xrange(names.dead_letter))

    await _run(bus, names.intake, "g", handler, done)
    assert attempts == [1, 2, 3]  # handled max_deliveries times, never a fourth
    [(_id, record)] = await redis.xrange(names.dead_letter)
    assert b"delivered 4 times" in record[b"reason"]
    assert record[b"orig:prompt"] == b"explodes"
    assert await _pending(redis, names.intake, "g") == 0


async def test_in_flight_is_bounded(redis: Redis, names: Names, bus_settings: BusSettings) -> None:
    settings = bus_settings.model_copy(update={"max_in_flight": 4, "read_count": 10})
    bus = Bus(redis, names, settings, Metrics.create())
    for i in range(30):
        await bus.publish(names.intake, {"n": str(i)})
    running, peak, finished = 0, 0, 0

    async def handler(d: Delivery) -> None:
        nonlocal running, peak, finished
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1
        finished += 1

    async def done() -> bool:
        return finished == 30

    await _run(bus, names.intake, "g", handler, done)
    assert peak == 4
    assert await _pending(redis, names.intake, "g") == 0


async def test_namespaces_are_isolated(redis: Redis, bus_settings: BusSettings) -> None:
    a, b = Names("iso-a-" + str(id(redis))), Names("iso-b-" + str(id(redis)))
    bus_a = Bus(redis, a, bus_settings, Metrics.create())
    bus_b = Bus(redis, b, bus_settings, Metrics.create())
    await bus_a.publish(a.intake, {"prompt": "for a"})
    seen_b: list[str] = []
    seen_a: list[str] = []

    async def on_b(d: Delivery) -> None:
        seen_b.append(d.text("prompt"))

    async def on_a(d: Delivery) -> None:
        seen_a.append(d.text("prompt"))

    async def a_done() -> bool:
        return bool(seen_a)

    sub_b = bus_b.subscribe(b.intake, "g", "c1")
    await sub_b.start()
    stop_b = asyncio.Event()
    served_b = asyncio.create_task(serve(sub_b, on_b, stop=stop_b, drain_timeout_s=1))
    await _run(bus_a, a.intake, "g", on_a, a_done)
    stop_b.set()
    await served_b
    assert seen_a == ["for a"]
    assert seen_b == []
    for ns in (a, b):
        keys = [k async for k in redis.scan_iter(match=f"{ns.namespace}:*")]
        await redis.delete(*keys)


async def test_an_ack_that_cannot_be_written_frees_the_slot_and_the_entry_comes_back(
    redis: Redis, names: Names, bus_settings: BusSettings
) -> None:
    settings = bus_settings.model_copy(update={"visibility_timeout_s": 0.5, "max_in_flight": 1})
    bus = Bus(redis, names, settings, Metrics.create())
    await redis.set(names.findings, "not a stream")  # every publish to it fails: WRONGTYPE
    await bus.publish(names.intake, {"n": "1"})
    seen: list[int] = []

    async def handler(d: Delivery) -> list[Outgoing]:
        seen.append(d.deliveries)
        if len(seen) == 2:
            await redis.delete(names.findings)  # fixed: the second try can be written
        return [Outgoing(names.findings, {"n": d.text("n")})]

    async def written() -> bool:
        return await redis.type(names.findings) == b"stream"

    await _run(bus, names.intake, "g", handler, written)
    assert seen[:2] == [1, 2]  # the unacked entry was redelivered, not held forever
    assert await _pending(redis, names.intake, "g") == 0


async def test_a_redis_blip_in_a_handler_is_retried_in_place_not_after_the_timeout(
    bus: Bus, names: Names, redis_url: str
) -> None:
    """The handler's own Redis calls fail (nothing listens on that port) twice, then work:
    the entry is acked on its first delivery, not left pending for the visibility timeout
    (30 s here, longer than this test may take)."""
    await bus.publish(names.intake, {"prompt": "x"})
    down = Redis(port=free_port(), socket_connect_timeout=0.5)
    attempts: list[int] = []

    async def handler(d: Delivery) -> None:
        attempts.append(d.deliveries)
        client = down if len(attempts) <= 2 else bus.redis
        await client.set(f"{names.namespace}:blip", d.entry_id)

    async def acked() -> bool:
        return bool(attempts) and await _pending(bus.redis, names.intake, "g") == 0

    await _run(bus, names.intake, "g", handler, acked)
    await down.aclose()
    assert attempts == [1, 1, 1]  # three runs of the same (first) delivery
    assert await bus.redis.get(f"{names.namespace}:blip") is not None
