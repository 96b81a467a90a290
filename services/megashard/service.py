"""Wiring only: the shard's query stream -> Shard.answer -> the asker's reply stream.

Replies are written before the ack, and kept for `reply_ttl_s` under the query id: a query
redelivered after a crash (the reply was sent, the ack was not) gets the same reply again
without a second vendor call. A query whose asker's deadline has passed is acknowledged
without an answer: nobody waits for it, and it would be paid for nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import structlog

from services.megashard.cache import ExplicitCacheClient, GeminiContextCache
from services.megashard.corpus import SYSTEM_PROMPT
from services.megashard.settings import SHARD_VENDORS, ShardSettings
from services.megashard.shard import Shard
from services.megashard.store import ContextStore
from shared.bus import (
    DeadLetter,
    Delivery,
    Effect,
    Handler,
    Outgoing,
    SetKey,
    serve,
    service_context,
)
from shared.bus.context_client import MEGASHARD_SERVICE
from shared.llm.base import LLMClient
from shared.llm.registry import build_client, price_table
from shared.llm.settings import MissingCredentialsError, VendorSettings
from shared.protocol import ContextQuery, DecodeError, Names, decode, encode
from shared.protocol.tracecontext import child_of, trace_of
from shared.runtime.config_errors import ConfigError, Problem
from shared.runtime.logging import register_secret
from shared.runtime.metrics import Metrics
from shared.runtime.settings import BusSettings, SwarmSettings
from shared.runtime.tracing import Tracer

log = structlog.get_logger("swarm.megashard")


async def run_megashard(
    stop: asyncio.Event,
    swarm: SwarmSettings,
    bus_settings: BusSettings,
    settings: ShardSettings,
    vendors: VendorSettings,
    *,
    tracer: Tracer | None = None,
) -> int:
    for secret in (vendors.anthropic_api_key, vendors.google_api_key):
        register_secret(secret.get_secret_value() if secret else None)
    prices = price_table(vendors)
    info = {"shard_id": settings.id, **_configured(vendors, settings)}
    async with service_context(
        MEGASHARD_SERVICE, swarm, bus_settings, info=info, tracer=tracer
    ) as ctx:
        names, redis = ctx.names, ctx.bus.redis
        store = ContextStore(redis, names)

        def clients(vendor: str, model: str) -> LLMClient:
            return build_client(vendor, vendors, model)

        def caches(client: ExplicitCacheClient, model: str) -> GeminiContextCache:
            return GeminiContextCache(
                redis,
                names,
                client,
                ctx.metrics,
                shard=settings.id,
                model=model,
                ttl_s=settings.cache_ttl_s,
                system=SYSTEM_PROMPT,
            )

        shard = Shard(
            settings.id,
            store=store,
            clients=clients,
            caches=caches,
            prices=prices,
            metrics=ctx.metrics,
            settings=settings,
            tracer=ctx.tracer,
        )
        sub = ctx.bus.subscribe(
            names.shard_queries(settings.id), Names.MEGASHARD_GROUP, ctx.member_id
        )
        ctx.live_info.append(shard.info)
        ctx.live_info.append(lambda: {"in_flight": str(sub.in_flight)})
        watching = asyncio.create_task(_watch(shard, stop, settings), name="shard-watch")
        try:
            await sub.start()
            handler = make_handler(
                shard, names, settings, ctx.metrics, redis_get=redis.get, tracer=ctx.tracer
            )
            await serve(sub, handler, stop=stop, drain_timeout_s=bus_settings.drain_timeout_s)
        finally:
            stop.set()
            await watching
            await shard.aclose()
    return 0


def _configured(vendors: VendorSettings, settings: ShardSettings) -> dict[str, str]:
    """Heartbeat fields on whether any shard vendor has its key; with none, a ConfigError
    (exit 2), or with SWARM_SHARD_UNCONFIGURED=idle one warning, and every query is then
    answered `failed`, naming the variable (a compose stack with other vendors' keys only
    keeps its mega-shard up instead of restarting it forever)."""
    missing: list[str] = []
    for vendor in SHARD_VENDORS:
        try:
            vendors.endpoint(vendor)
        except MissingCredentialsError as exc:
            missing.append(exc.variable)
        else:
            return {"configured": "true"}
    problem = Problem(
        ",".join(missing),
        f"the mega-shard needs {' or '.join(missing)} (or SWARM_SIMULATOR_URL to use the "
        "simulator instead of the real APIs)",
    )
    if settings.unconfigured != "idle":
        raise ConfigError(problem)
    log.warning(
        "shard.unconfigured",
        message=f"{problem.message}; every query is answered failed until one is set",
        variable=problem.variable,
    )
    return {"configured": "false", "missing": ",".join(missing)}


async def _watch(shard: Shard, stop: asyncio.Event, settings: ShardSettings) -> None:
    """Load the head version while idle too, so the heartbeat says what the shard holds
    (and a new version is read) before the next query needs it."""
    said = False
    while not stop.is_set():
        try:
            await shard.current()
        except Exception as exc:  # nothing loaded yet, or Redis away: say it once, go on
            if not said:
                log.warning("shard.no_context_yet", error=str(exc))
                said = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(settings.version_check_s, 1.0))


def make_handler(
    shard: Shard,
    names: Names,
    settings: ShardSettings,
    metrics: Metrics,
    *,
    redis_get: Callable[[str], Awaitable[bytes | str | None]],
    tracer: Tracer | None = None,
) -> Handler:
    get = redis_get
    tracing = tracer or Tracer()

    async def handle(delivery: Delivery) -> list[Effect]:
        try:
            query = decode(ContextQuery, delivery.fields)
        except DecodeError as exc:
            raise DeadLetter(f"not a valid context query: {exc}", field=exc.field) from exc
        trace = trace_of(query.headers)
        attributes = {
            "swarm.query_id": query.query_id,
            "swarm.shard_id": shard.shard_id,
            "swarm.task_id": query.task_id,
        }
        with tracing.consume(
            "swarm.shard_query",
            trace,
            stream=delivery.stream,
            entry_id=delivery.entry_id,
            attributes=attributes,
        ) as sp:
            structlog.contextvars.bind_contextvars(
                query_id=query.query_id, requester=query.requester_worker_id, task_id=query.task_id
            )
            if trace is not None:  # the shard's vendor call is this span's child
                query = child_of(query, sp.context)
            return await answer(query)

    async def answer(query: ContextQuery) -> list[Effect]:
        kept = await get(names.shard_reply(query.query_id))
        if kept is not None:
            metrics.shard_queries.labels(shard.shard_id, "duplicate").inc()
            log.info("shard.query_duplicate", note="reply sent again, no vendor call")
            return [Outgoing(query.reply_to, json.loads(kept))]
        if query.deadline is not None and query.deadline < datetime.now(UTC):
            metrics.shard_queries.labels(shard.shard_id, "expired").inc()
            log.info("shard.query_expired", note="deadline passed; acknowledged without a reply")
            return []
        answered = await shard.answer(query)
        log.info(
            "shard.query_answered",
            status=answered.status.value,
            sources=len(answered.sources),
            tokens_in=answered.input_tokens,
            cache_read=answered.cache_read_tokens,
            cache_write=answered.cache_write_tokens,
            cost_usd=answered.cost_usd,
            latency_ms=round(answered.latency_ms, 1),
            error=answered.error,
        )
        fields = encode(answered)
        return [
            Outgoing(query.reply_to, fields),
            SetKey(names.shard_reply(query.query_id), json.dumps(fields), settings.reply_ttl_s),
        ]

    return handle
