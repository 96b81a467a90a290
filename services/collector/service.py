"""Wiring only: the findings stream -> export (file, database) -> the Redis store -> ack.

A finding that does not decode is dead-lettered with the reason, never fatal. A finding
already stored (a redelivery) is acked without being exported or counted again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from services.collector.export import Sink, open_exports
from services.collector.settings import CollectorSettings
from services.collector.store import FindingStore, Outcome
from shared.bus import DeadLetter, Delivery, Effect, Handler, serve, service_context
from shared.protocol import DecodeError, Finding, Names, decode
from shared.protocol.tracecontext import trace_of
from shared.runtime.logging import register_secret
from shared.runtime.metrics import Metrics
from shared.runtime.settings import BusSettings, SwarmSettings
from shared.runtime.tracing import Tracer

log = structlog.get_logger("swarm.collector")


async def run_collector(
    stop: asyncio.Event,
    swarm: SwarmSettings,
    bus_settings: BusSettings,
    settings: CollectorSettings,
    *,
    metrics: Metrics | None = None,
    tracer: Tracer | None = None,
) -> int:
    if settings.database_url is not None:
        register_secret(settings.database_url.get_secret_value())
    info = {
        "export_path": settings.export_path,
        "database": "postgres" if settings.database_url is not None else "",
    }
    async with (
        service_context(
            "collector", swarm, bus_settings, info=info, metrics=metrics, tracer=tracer
        ) as ctx,
        open_exports(settings) as sinks,
    ):
        ctx.readiness.extend(sink.check for sink in sinks)  # /readyz: the exports too
        store = FindingStore(ctx.bus.redis, ctx.names, retention_s=settings.retention_s)
        sub = ctx.bus.subscribe(ctx.names.findings, Names.COLLECTOR_GROUP, ctx.member_id)
        await sub.start()
        ctx.live_info.append(lambda: {"in_flight": str(sub.in_flight)})
        handler = make_handler(store, sinks, ctx.metrics, ctx.tracer)
        try:
            await serve(sub, handler, stop=stop, drain_timeout_s=bus_settings.drain_timeout_s)
        finally:
            await store.close()
    return 0


def make_handler(
    store: FindingStore, sinks: Sequence[Sink], metrics: Metrics, tracer: Tracer | None = None
) -> Handler:
    tracing = tracer or Tracer()

    async def handle(delivery: Delivery) -> list[Effect]:
        try:
            finding = decode(Finding, delivery.fields)
        except DecodeError as exc:
            raise DeadLetter(f"not a valid finding: {exc}", field=exc.field) from exc
        if "finding_id" not in finding.model_fields_set:
            # Posted by hand without an id: name it after its entry, so that a redelivery
            # of this entry is recognised instead of getting a fresh random id.
            finding = finding.model_copy(update={"finding_id": f"entry-{delivery.entry_id}"})
        attributes = {
            "swarm.task_id": finding.task_id,
            "swarm.finding_id": finding.finding_id,
            "swarm.status": finding.status.value,
        }
        with tracing.consume(
            "swarm.store",
            trace_of(finding.headers),
            stream=delivery.stream,
            entry_id=delivery.entry_id,
            attributes=attributes,
        ) as span:
            structlog.contextvars.bind_contextvars(
                task_id=finding.task_id, finding_id=finding.finding_id
            )
            if await store.seen(finding):
                outcome = Outcome.REDELIVERED
            else:
                for sink in sinks:  # before the Redis write and the ack: never lost
                    await sink.write(finding)
                outcome = await store.add(finding)
            span.set({"swarm.outcome": outcome.value})
        _count(metrics, finding, outcome)
        log.info(
            "finding.collected",
            outcome=outcome.value,
            status=finding.status.value,
            vendor=finding.vendor,
            model=finding.model,
            cost_usd=finding.cost_usd,
            run_id=finding.run_id,
        )
        return []

    return handle


def _count(metrics: Metrics, f: Finding, outcome: Outcome) -> None:
    metrics.collector_findings.labels(outcome.value).inc()
    if outcome not in (Outcome.STORED, Outcome.SUPERSEDED):
        return  # totals move only for a finding that counts for its task
    metrics.collector_tasks.labels(f.vendor, f.model, f.status.value).inc()
    for kind, tokens in (
        ("input", f.input_tokens),
        ("output", f.output_tokens),
        ("cache_read", f.cache_read_tokens),
        ("cache_write", f.cache_write_tokens),
    ):
        metrics.collector_tokens.labels(f.vendor, f.model, kind).inc(tokens)
    if f.cost_usd is not None:
        metrics.collector_cost.labels(f.vendor, f.model).inc(f.cost_usd)
