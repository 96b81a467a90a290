"""Everything a service process needs around its handler, set up and torn down in order:
metrics and health endpoints, Redis (waited for), the bus, and a heartbeat under its
member id.

`/readyz` (see shared.runtime.health) passes when Redis answers PING and every check in
`ctx.readiness` passes: each subscription of `ctx.bus` adds itself while it runs, and a
service adds its own (the collector: its sinks) with `ctx.readiness.append(check)`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import structlog

from shared.bus.bus import Bus
from shared.bus.membership import Heartbeat
from shared.protocol.names import Names
from shared.runtime.health import HealthServer, ReadinessCheck, RedisPing
from shared.runtime.metrics import Metrics
from shared.runtime.redis import connect, wait_ready
from shared.runtime.settings import BusSettings, SwarmSettings
from shared.runtime.tracing import Tracer, build_tracer

log = structlog.get_logger("swarm.service")


@dataclass(slots=True)
class ServiceContext:
    service: str
    member_id: str
    names: Names
    bus: Bus
    metrics: Metrics
    swarm: SwarmSettings
    settings: BusSettings
    tracer: Tracer = field(default_factory=Tracer)
    live_info: list[Callable[[], Mapping[str, str]]] = field(default_factory=list)
    # async () -> None when fine, else a short reason; all must pass for /readyz.
    readiness: list[ReadinessCheck] = field(default_factory=list)

    def merged_live_info(self) -> Mapping[str, str]:
        out: dict[str, str] = {}
        for fn in self.live_info:
            out.update(fn())
        return out


@asynccontextmanager
async def service_context(
    service: str,
    swarm: SwarmSettings,
    settings: BusSettings,
    *,
    info: Mapping[str, str] | None = None,
    metrics: Metrics | None = None,
    tracer: Tracer | None = None,
) -> AsyncIterator[ServiceContext]:
    metrics = metrics or Metrics.create()
    url = swarm.redis_url.get_secret_value()
    async with AsyncExitStack() as stack:
        if tracer is None:  # ours: its last spans are exported when the service stops
            tracer = build_tracer(service, swarm.traces_endpoint, swarm.otel_service_name)
            stack.callback(tracer.shutdown)
        ping = RedisPing(url)
        stack.push_async_callback(ping.aclose)
        checks: list[ReadinessCheck] = [ping]
        if swarm.metrics_port:  # 0 disables the endpoints
            server = HealthServer(metrics.registry, checks)
            await server.start(swarm.metrics_port)  # up while Redis is waited for
            stack.push_async_callback(server.aclose)
        async with _connected(
            service,
            swarm,
            settings,
            url=url,
            metrics=metrics,
            tracer=tracer,
            checks=checks,
            info=info,
        ) as ctx:
            yield ctx


@asynccontextmanager
async def _connected(
    service: str,
    swarm: SwarmSettings,
    settings: BusSettings,
    *,
    url: str,
    metrics: Metrics,
    tracer: Tracer,
    checks: list[ReadinessCheck],
    info: Mapping[str, str] | None,
) -> AsyncIterator[ServiceContext]:
    redis = connect(url, settings)
    names = swarm.names
    member_id = swarm.member_id(service)
    bus = Bus(redis, names, settings, metrics, readiness=checks)
    ctx = ServiceContext(
        service, member_id, names, bus, metrics, swarm, settings, tracer, readiness=checks
    )
    heartbeat = Heartbeat(
        redis,
        names,
        member_id,
        service=service,
        interval_s=settings.heartbeat_interval_s,
        ttl_s=settings.heartbeat_ttl_s,
        info=info,
        live_info=ctx.merged_live_info,
    )
    beating: asyncio.Task[None] | None = None
    stop_beating = asyncio.Event()
    try:
        await wait_ready(redis, url, settings.connect_timeout_s)
        await heartbeat.beat()  # registered before the first read, so peers never misjudge us
        beating = asyncio.create_task(heartbeat.run(stop_beating), name="heartbeat")
        log.info(
            "service.started",
            service=service,
            member_id=member_id,
            redis=swarm.redis_url_redacted,
            namespace=names.namespace,
            metrics_port=swarm.metrics_port,
        )
        yield ctx
    finally:
        if beating is not None:
            stop_beating.set()
            _done, late = await asyncio.wait({beating}, timeout=settings.heartbeat_interval_s + 5)
            for task in late:
                task.cancel()
            await heartbeat.leave()
        await redis.aclose()
        log.info("service.stopped", service=service, member_id=member_id)
