"""A service's surroundings: ACL-authenticated Redis, /metrics, heartbeat while it runs."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator

import pytest

from services.cli.redis_finder import free_port, private_redis_server
from shared.bus import Delivery, live_members, serve, service_context
from shared.protocol import Names
from shared.runtime.settings import BusSettings, SwarmSettings
from tests.waiting import eventually


@pytest.fixture
def acl_redis() -> Iterator[int]:
    """A private redis-server whose only usable account is `swarm` / `s3cret`."""
    with private_redis_server(
        config="user default off\nuser swarm on >s3cret ~* &* +@all\n",
        probe_url="redis://swarm:s3cret@127.0.0.1:{port}/0",
    ) as (url, _proc):
        yield int(url.rsplit(":", 1)[1].split("/")[0])


async def test_service_runs_on_an_acl_user_and_serves_metrics(acl_redis: int) -> None:
    url = f"redis://swarm:s3cret@127.0.0.1:{acl_redis}/0"
    port = free_port()
    swarm = SwarmSettings(REDIS_URL=url, SWARM_NAMESPACE="acl", METRICS_PORT=port)
    settings = BusSettings(block_ms=200, heartbeat_interval_s=0.2, heartbeat_ttl_s=1)
    async with service_context("worker", swarm, settings, info={"vendor": "deepseek"}) as ctx:
        await ctx.bus.publish(ctx.names.intake, {"n": "1"})
        handled: list[str] = []

        async def handler(d: Delivery) -> None:
            handled.append(d.entry_id)

        sub = ctx.bus.subscribe(ctx.names.intake, "g", ctx.member_id)
        await sub.start()
        stop = asyncio.Event()
        served = asyncio.create_task(serve(sub, handler, stop=stop, drain_timeout_s=1))

        async def one_handled() -> bool:
            return len(handled) == 1

        await eventually(one_handled, what="the delivery")
        stop.set()
        await served
        [member] = await live_members(ctx.bus.redis, Names("acl"))
        assert member["service"] == "worker"
        assert member["vendor"] == "deepseek"
        body = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        )
    text = body.decode()
    assert 'swarm_deliveries_total{group="g",outcome="acked",stream="acl:tasks"} 1.0' in text
    assert "s3cret" not in text


async def test_a_wrong_password_is_a_clear_error(acl_redis: int) -> None:
    swarm = SwarmSettings(REDIS_URL=f"redis://swarm:wrong@127.0.0.1:{acl_redis}/0", METRICS_PORT=0)
    with pytest.raises(PermissionError, match=r"refused the credentials in REDIS_URL") as info:
        async with service_context("worker", swarm, BusSettings(connect_timeout_s=1)):
            pass
    assert "wrong" not in str(info.value)  # the password is not echoed back
