"""Redis restarts under a running consumer: it reconnects by itself and loses nothing acked."""

from __future__ import annotations

import asyncio
import tempfile
from typing import Any

from services.cli.redis_finder import free_port, private_redis_server
from shared.bus import Bus, Delivery, Outgoing, serve
from shared.protocol import Names
from shared.runtime.metrics import Metrics
from shared.runtime.redis import REDIS_UNAVAILABLE, connect
from shared.runtime.settings import BusSettings
from tests.waiting import eventually


async def test_consumer_survives_a_redis_restart() -> None:
    port = free_port()
    names = Names("restart")
    settings = BusSettings(block_ms=200, reclaim_interval_s=0.5, heartbeat_ttl_s=3)
    with (
        tempfile.TemporaryDirectory() as workdir,
        private_redis_server(port=port, appendonly=True, workdir=workdir) as (url, proc),
    ):
        redis = connect(url, settings)
        metrics = Metrics.create()
        bus = Bus(redis, names, settings, metrics)
        for i in range(20):
            await bus.publish(names.intake, {"n": str(i)})

        async def handler(d: Delivery) -> list[Outgoing]:
            return [Outgoing(names.findings, {"n": d.text("n")})]

        sub = bus.subscribe(names.intake, "g", "c1")
        await sub.start()
        stop = asyncio.Event()
        served = asyncio.create_task(serve(sub, handler, stop=stop, drain_timeout_s=5))

        async def findings_count(expected: int) -> bool:
            try:
                return await redis.xlen(names.findings) >= expected
            except REDIS_UNAVAILABLE:
                return False

        await eventually(lambda: findings_count(20), timeout=15, what="first 20 findings")
        first_run: Any = (await redis.info("server"))["run_id"]
        proc.kill()  # SIGKILL: no goodbye to the clients
        proc.wait()
        await asyncio.sleep(2.0)  # an outage longer than the client's own retries
        # The append-only file has everything acknowledged so far; restart on the same port.
        with private_redis_server(port=port, appendonly=True, workdir=workdir):

            async def publish_after_restart() -> bool:
                try:
                    for i in range(20, 40):
                        await bus.publish(names.intake, {"n": str(i)})
                    return True
                except REDIS_UNAVAILABLE:
                    return False

            await eventually(publish_after_restart, timeout=15, what="redis back")
            await eventually(lambda: findings_count(40), timeout=30, what="findings after restart")
            stop.set()
            await served
            entries: Any = await redis.xrange(names.findings)
            numbers = {int(f[b"n"]) for _id, f in entries}
            assert numbers == set(range(40))
            summary: Any = await redis.xpending(names.intake, "g")
            assert summary["pending"] == 0
            assert (await redis.info("server"))["run_id"] != first_run  # truly restarted
            await redis.aclose()
