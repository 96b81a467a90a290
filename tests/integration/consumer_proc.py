"""A consumer process for crash and shutdown tests: `python -m tests.integration.consumer_proc`.

Serves the namespace's intake stream with group `g`. Each delivery announces itself on
`<ns>:started` (so the test knows the work is in flight), sleeps HANDLE_S, then publishes
to `<ns>:findings` atomically with its ack. Configured by REDIS_URL, SWARM_NAMESPACE,
SWARM_* bus settings and HANDLE_S.
"""

from __future__ import annotations

import asyncio
import os

from shared.bus import Delivery, Outgoing, serve, service_context
from shared.runtime.lifecycle import run
from shared.runtime.logging import configure_logging
from shared.runtime.settings import BusSettings, SwarmSettings


async def main(stop: asyncio.Event) -> int:
    swarm, settings = SwarmSettings(), BusSettings()
    handle_s = float(os.environ.get("HANDLE_S", "0"))
    async with service_context("testconsumer", swarm, settings) as ctx:
        names = ctx.names

        async def handler(d: Delivery) -> list[Outgoing]:
            await ctx.bus.publish(
                names.intake + ":started", {"id": d.entry_id, "by": ctx.member_id}
            )
            await asyncio.sleep(handle_s)
            return [
                Outgoing(names.findings, {"id": d.entry_id, "by": ctx.member_id, "n": d.text("n")})
            ]

        sub = ctx.bus.subscribe(names.intake, "g", ctx.member_id)
        await sub.start()
        await serve(sub, handler, stop=stop, drain_timeout_s=settings.drain_timeout_s)
    return 0


if __name__ == "__main__":
    configure_logging(os.environ.get("LOG_LEVEL", "warning"), json=True)
    raise SystemExit(run(main))
