"""The dispatcher's fleet view on a private redis-server, counted by Redis itself
(INFO commandstats): one refresh however many handlers ask, and no keyspace scan."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError

from services.cli.redis_finder import private_redis_server
from services.dispatcher.fleet import FleetView
from shared.bus import Cooldowns, Heartbeat
from shared.bus.spend import SpendBook
from shared.protocol import Names
from shared.runtime.net import free_port

# A client opening a connection, not work the view asks for.
CONNECTION_SETUP = {"hello", "client|setinfo", "client|setname", "select"}


@pytest.fixture(scope="module")
def private_url() -> Iterator[str]:
    with private_redis_server() as (url, _proc):
        yield url


@pytest.fixture
async def private(private_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(private_url, max_connections=1000)
    yield client
    await client.aclose()


async def commandstats(redis: Redis) -> dict[str, int]:
    """Calls per command since the server started (subcommands as `xgroup|create`)."""
    info = await redis.info("commandstats")
    return {key.removeprefix("cmdstat_"): int(row["calls"]) for key, row in info.items()}


async def calls_during(redis: Redis, work: object) -> dict[str, int]:
    before = await commandstats(redis)
    await work  # type: ignore[misc]
    after = await commandstats(redis)
    delta = {cmd: n - before.get(cmd, 0) for cmd, n in after.items()}
    delta["info"] -= 1  # the second INFO itself
    return {cmd: n for cmd, n in delta.items() if n and cmd not in CONNECTION_SETUP}


async def fleet_with_a_cooldown(redis: Redis, names: Names, refresh_s: float) -> FleetView:
    for vendor in ("claude", "deepseek"):
        await Heartbeat(
            redis, names, f"worker-{vendor}-1", service=f"worker-{vendor}",
            interval_s=60, ttl_s=120, info={"vendor": vendor},
        ).beat()  # fmt: skip
    cooldowns = Cooldowns(redis, names, threshold=1, period_s=60)
    assert await cooldowns.failure("deepseek", "deepseek-flash")
    return FleetView(
        redis,
        names,
        cooldowns,
        refresh_s,
        spend=SpendBook(redis, names),
        vendor_caps={"claude": 100.0},
    )


async def test_concurrent_handlers_after_expiry_cause_one_refresh(private: Redis) -> None:
    names = Names("fleet-herd")
    view = await fleet_with_a_cooldown(private, names, refresh_s=0.3)
    first = await view.get()
    assert first.live == {"claude": 1, "deepseek": 1}
    assert first.cooling == {("deepseek", "deepseek-flash")}

    assert await calls_during(private, view.get()) == {}  # cached: Redis sees nothing
    await asyncio.sleep(0.35)  # expired
    one = await calls_during(private, view.get())  # what one refresh costs Redis
    assert one, "expired, yet nothing was read"
    assert "scan" not in one and "keys" not in one
    assert one["evalsha"] == 1 and one["pttl"] == 1  # the cooling script, the one cooling

    await asyncio.sleep(0.35)  # expired again
    herd = asyncio.gather(*(view.get() for _ in range(300)))
    calls = await calls_during(private, herd)
    fleets = await herd
    assert calls == one  # 300 handlers, one refresh
    assert all(f is fleets[0] for f in fleets)  # every handler got the one new snapshot
    assert fleets[0].cooling == {("deepseek", "deepseek-flash")}


async def test_a_failed_refresh_fails_its_waiters_once_and_the_next_call_retries() -> None:
    names = Names("fleet-outage")
    port = free_port()  # nothing listens there yet: Redis is down
    client = Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=0.5)
    try:
        view = FleetView(client, names, Cooldowns(client, names), refresh_s=60)
        results = await asyncio.gather(*(view.get() for _ in range(50)), return_exceptions=True)
        assert isinstance(results[0], ConnectionError)
        assert all(r is results[0] for r in results)  # one refresh failed, once, for all
        with private_redis_server(port=port):  # Redis is back
            fleet = await view.get()  # no failed refresh stuck in flight: it reads again
            assert fleet.live == {}
    finally:
        await client.aclose()


async def test_a_cancelled_caller_does_not_cancel_the_others_refresh(private: Redis) -> None:
    names = Names("fleet-cancel")
    view = await fleet_with_a_cooldown(private, names, refresh_s=60)
    impatient = asyncio.create_task(view.get())
    patient = asyncio.create_task(view.get())
    await asyncio.sleep(0)  # both waiting on the one refresh
    impatient.cancel()
    fleet = await patient
    assert fleet.live == {"claude": 1, "deepseek": 1}
    assert impatient.cancelled()


async def test_cooling_scans_nothing_whatever_the_keyspace(private: Redis) -> None:
    names = Names("fleet-noscan")
    neighbour = Names("noisy-neighbour")
    async with private.pipeline(transaction=False) as pipe:
        for i in range(20_000):
            pipe.set(f"{neighbour.namespace}:k:{i}", b"x")
        await pipe.execute()
    view = await fleet_with_a_cooldown(private, names, refresh_s=0.01)
    calls = await calls_during(private, view.get())
    assert "scan" not in calls and "keys" not in calls
    assert calls["evalsha"] == 1
