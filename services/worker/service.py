"""Wiring only: the vendor's task stream -> Worker.run -> findings, reroutes, dead letters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from services.worker.handler import Done, GiveUp, Reroute, Worker
from services.worker.settings import WorkerSettings
from shared.bus import (
    DeadLetter,
    Delivery,
    Effect,
    Fence,
    Handler,
    Outgoing,
    SetFields,
    serve,
    service_context,
)
from shared.bus.context_client import ContextClient
from shared.bus.cooldown import Cooldowns
from shared.bus.ratelimit import RateLimiter
from shared.bus.spend import SpendBook
from shared.llm.registry import build_client, default_model, price_table
from shared.llm.settings import MissingCredentialsError, VendorSettings
from shared.protocol import DecodeError, Names, Task, decode, encode
from shared.runtime.config_errors import ConfigError, Problem
from shared.runtime.logging import register_secret
from shared.runtime.settings import BusSettings, SwarmSettings

log = structlog.get_logger("swarm.worker")


async def run_worker(
    stop: asyncio.Event,
    swarm: SwarmSettings,
    bus_settings: BusSettings,
    settings: WorkerSettings,
    vendors: VendorSettings,
) -> int:
    vendor = settings.vendor
    try:
        vendors.endpoint(vendor)
    except MissingCredentialsError as exc:
        if settings.unconfigured == "idle":
            return await run_unconfigured(stop, swarm, bus_settings, vendor, exc)
        raise ConfigError(Problem(exc.variable, str(exc))) from None
    prices = price_table(vendors)
    model = default_model(vendor, vendors, prices)
    llm = build_client(vendor, vendors, model)
    for secret in (
        vendors.anthropic_api_key,
        vendors.google_api_key,
        vendors.openai_api_key,
        vendors.deepseek_api_key,
        vendors.compat_api_key,
    ):
        register_secret(secret.get_secret_value() if secret else None)
    info = {
        "vendor": vendor,
        "configured": "true",
        "model": llm.default_model,
        "capacity": str(bus_settings.max_in_flight),
        "simulated": str(vendors.simulator_url is not None and not _own_url(vendors, vendor)),
    }
    try:
        async with service_context(f"worker-{vendor}", swarm, bus_settings, info=info) as ctx:
            names, redis = ctx.names, ctx.bus.redis
            limiter = None
            if settings.rpm or settings.tpm:
                limiter = RateLimiter(
                    redis,
                    names,
                    vendor=vendor,
                    model=llm.default_model,
                    rpm=settings.rpm,
                    tpm=settings.tpm,
                )
            cooldowns = Cooldowns(
                redis,
                names,
                threshold=settings.cooldown_threshold,
                window_s=settings.cooldown_window_s,
                period_s=settings.cooldown_period_s,
            )
            async with ContextClient(ctx.bus, requester_id=ctx.member_id) as context:
                worker = Worker(
                    ctx.member_id,
                    vendor,
                    llm,
                    limiter,
                    cooldowns,
                    context,
                    prices,
                    ctx.metrics,
                    settings,
                    spend=SpendBook(redis, names, period_s=settings.budget_period_s),
                )
                sub = ctx.bus.subscribe(
                    names.vendor_tasks(vendor), Names.worker_group(vendor), ctx.member_id
                )
                await sub.start()
                ctx.live_info.append(lambda: {"in_flight": str(sub.in_flight)})

                async def mark_running(key: str, worker_id: str) -> None:
                    # Only a task the dispatcher keeps a record of (posted straight to a
                    # vendor stream, it has none); a plain write, not worth a transaction.
                    if await redis.exists(key):
                        await redis.hset(
                            key,
                            mapping={
                                "state": "running",
                                "worker": worker_id,
                                "updated_at": f"{time.time():.3f}",
                            },
                        )

                handler = make_handler(
                    worker, names, settings, redis_exists=redis.exists, mark_running=mark_running
                )
                await serve(sub, handler, stop=stop, drain_timeout_s=bus_settings.drain_timeout_s)
    finally:
        await llm.aclose()
    return 0


async def run_unconfigured(
    stop: asyncio.Event,
    swarm: SwarmSettings,
    bus_settings: BusSettings,
    vendor: str,
    missing: MissingCredentialsError,
) -> int:
    """SWARM_WORKER_UNCONFIGURED=idle and no key for the vendor: say so once, then live as a
    member that takes no tasks (its heartbeat says `configured=false` and which variable is
    `missing`, so the dispatcher routes nothing to the vendor and `swarm status` shows it)
    until SIGTERM. A compose fleet with one vendor's key then neither crash-loops the other
    vendors' workers under `restart: unless-stopped` nor routes tasks to them (a task pinned
    to such a vendor still waits in its queue, for a worker with the key)."""
    log.warning(
        "worker.unconfigured",
        message=f"{missing}; this worker takes no tasks until it is set",
        variable=missing.variable,
        vendor=vendor,
    )
    info = {"vendor": vendor, "configured": "false", "missing": missing.variable}
    async with service_context(f"worker-{vendor}", swarm, bus_settings, info=info):
        await stop.wait()
    return 0


def make_handler(
    worker: Worker,
    names: Names,
    settings: WorkerSettings,
    *,
    redis_exists: Callable[[str], Awaitable[int]],
    mark_running: Callable[[str, str], Awaitable[None]],
) -> Handler:
    metrics = worker.metrics

    async def handle(delivery: Delivery) -> list[Effect]:
        try:
            task = decode(Task, delivery.fields)
        except DecodeError as exc:
            raise DeadLetter(f"not a valid task: {exc}", field=exc.field) from exc
        structlog.contextvars.bind_contextvars(task_id=task.task_id, vendor=worker.vendor)
        done_key = names.task_done(task.task_id)
        if await redis_exists(done_key):
            metrics.tasks.labels(worker.vendor, "duplicate").inc()
            log.info("task.duplicate", note="finding already published; acked without a call")
            return []
        record = names.task(task.task_id)
        await mark_running(record, worker.worker_id)
        outcome = await worker.run(task)
        if isinstance(outcome, Done):
            f = outcome.finding
            metrics.tasks.labels(worker.vendor, "done").inc()
            log.info(
                "task.done",
                model=f.model,
                tokens_in=f.input_tokens,
                tokens_out=f.output_tokens,
                cached=f.cache_read_tokens,
                cost_usd=f.cost_usd,
                attempts=f.attempt,
            )
            return [
                Outgoing(names.findings, encode(f)),
                Fence(done_key, f.finding_id, settings.done_ttl_s),
                _state(record, "done", f.finding_id, settings),
            ]
        if isinstance(outcome, Reroute):
            metrics.tasks.labels(worker.vendor, "rerouted").inc()
            log.warning(
                "task.rerouted", reason=outcome.reason, excluded=list(outcome.task.excluded_vendors)
            )
            return [
                Outgoing(names.intake, encode(outcome.task)),
                _state(record, "rerouted", "", settings),
            ]
        assert isinstance(outcome, GiveUp)
        metrics.tasks.labels(worker.vendor, "failed").inc()
        log.error("task.failed", reason=outcome.reason)
        raise DeadLetter(
            outcome.reason,
            effects=(
                Outgoing(names.findings, encode(outcome.finding)),
                Fence(done_key, outcome.finding.finding_id, settings.done_ttl_s),
                _state(record, "failed", outcome.finding.finding_id, settings),
            ),
        )

    return handle


def _state(key: str, state: str, finding_id: str, settings: WorkerSettings) -> SetFields:
    fields = {"state": state, "updated_at": f"{time.time():.3f}"}
    if finding_id:
        fields["finding_id"] = finding_id
    return SetFields(key, fields, settings.done_ttl_s)


def _own_url(vendors: VendorSettings, vendor: str) -> bool:
    return not vendors.endpoint(vendor).simulated
