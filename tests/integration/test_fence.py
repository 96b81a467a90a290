"""Fenced effects on a real Redis: a delivery's effects are written once per fence key,
whoever delivers it, so a consumer that a peer took work over from (judged dead while it
was only slow) cannot publish a second finding."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shared.bus import Bus, Delivery, Fence, Outgoing, SetFields, ensure_group, serve
from shared.bus.acker import Acker, AckOp
from shared.protocol import Names
from shared.runtime.metrics import Metrics
from tests.waiting import eventually


async def _pending(redis: Redis, stream: str, group: str) -> int:
    summary: Any = await redis.xpending(stream, group)
    return int(summary["pending"])


def _effects(names: Names, finding_id: str) -> list[Any]:
    return [
        Outgoing(names.findings, {"task_id": "t1", "finding_id": finding_id}),
        SetFields(names.task("t1"), {"state": "done", "finding_id": finding_id}, 60),
        Fence(names.task_done("claude", "t1"), finding_id, 60),
    ]


async def test_second_copy_of_fenced_effects_is_skipped_and_acked(
    redis: Redis, names: Names
) -> None:
    await ensure_group(redis, names.intake, "g")
    entry = (await redis.xadd(names.intake, {"prompt": "x"})).decode()
    await redis.xreadgroup("g", "c1", {names.intake: ">"})
    acker = Acker(redis, names.intake, "g", Metrics.create())
    runner = asyncio.create_task(acker.run())
    try:
        first, second = AckOp(entry, _effects(names, "f1")), AckOp(entry, _effects(names, "f2"))
        await acker.submit(first)
        await acker.submit(second)
    finally:
        runner.cancel()
    assert (first.fenced_off, second.fenced_off) == (False, True)
    findings = await redis.xrange(names.findings)
    assert [f[b"finding_id"] for _, f in findings] == [b"f1"]
    assert await redis.get(names.task_done("claude", "t1")) == b"f1"
    assert 0 < await redis.pttl(names.task_done("claude", "t1")) <= 60_000
    assert await redis.hget(names.task("t1"), "finding_id") == b"f1"
    assert 0 < await redis.pttl(names.task("t1")) <= 60_000
    assert await _pending(redis, names.intake, "g") == 0


async def test_an_effect_that_fails_leaves_the_fence_unset_and_the_entry_pending(
    redis: Redis, names: Names
) -> None:
    await ensure_group(redis, names.intake, "g")
    entry = (await redis.xadd(names.intake, {"prompt": "x"})).decode()
    await redis.xreadgroup("g", "c1", {names.intake: ">"})
    await redis.set(names.findings, "not a stream")  # WRONGTYPE for the finding's XADD
    acker = Acker(redis, names.intake, "g", Metrics.create())
    runner = asyncio.create_task(acker.run())
    try:
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await acker.submit(AckOp(entry, _effects(names, "f1")))
        assert await redis.exists(names.task_done("claude", "t1")) == 0
        assert await _pending(redis, names.intake, "g") == 1
        await redis.delete(names.findings)  # the operator fixes it; the redelivery lands
        await acker.submit(AckOp(entry, _effects(names, "f1")))
    finally:
        runner.cancel()
    assert len(await redis.xrange(names.findings)) == 1
    assert await _pending(redis, names.intake, "g") == 0


async def test_a_slow_consumer_whose_entry_a_peer_took_over_publishes_nothing(
    bus: Bus, names: Names
) -> None:
    """c1 is slow; a peer (c2) takes the entry over and finishes; c1 then finishes too."""
    await bus.publish(names.intake, {"prompt": "x"})
    c1_may_finish = asyncio.Event()
    started: list[str] = []

    async def slow(d: Delivery) -> list[Any]:
        started.append(d.entry_id)
        await c1_may_finish.wait()
        return _effects(names, "from-c1")

    async def fast(_d: Delivery) -> list[Any]:
        return _effects(names, "from-c2")

    stop = asyncio.Event()
    c1 = bus.subscribe(names.intake, "g", "c1")
    await c1.start()
    serving_c1 = asyncio.create_task(serve(c1, slow, stop=stop, drain_timeout_s=5))
    await eventually(lambda: _true(started), what="c1 holding the entry")
    # What a peer does to a consumer it judges dead: claim its entry, then handle it.
    await bus.redis.xclaim(names.intake, "g", "c2", 0, [started[0]])
    c2 = bus.subscribe(names.intake, "g", "c2")
    await c2.start()  # replays its own pending entries first
    serving_c2 = asyncio.create_task(serve(c2, fast, stop=stop, drain_timeout_s=5))
    await eventually(lambda: _has_findings(bus.redis, names, 1), what="c2's finding")
    c1_may_finish.set()
    await eventually(lambda: _pending_is(bus.redis, names, 0), what="both acked")
    stop.set()
    await asyncio.gather(serving_c1, serving_c2)
    findings = await bus.redis.xrange(names.findings)
    assert [f[b"finding_id"] for _, f in findings] == [b"from-c2"]
    fenced = bus.metrics.registry.get_sample_value(
        "swarm_deliveries_total", {"stream": names.intake, "group": "g", "outcome": "fenced_off"}
    )
    assert fenced == 1


async def _true(items: list[str]) -> bool:
    return bool(items)


async def _has_findings(redis: Redis, names: Names, n: int) -> bool:
    return int(await redis.xlen(names.findings)) >= n


async def _pending_is(redis: Redis, names: Names, n: int) -> bool:
    return await _pending(redis, names.intake, "g") == n
