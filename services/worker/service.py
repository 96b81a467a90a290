"""Wiring only: the vendor's task stream -> Worker.run -> findings, reroutes, dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import cast

import structlog
from redis.asyncio import Redis

from services.worker.cancels import CancelWatch
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
from shared.bus.membership import models_field
from shared.bus.ratelimit import RateLimiter
from shared.bus.spend import SpendBook
from shared.bus.streamids import text
from shared.bus.tail import tail
from shared.llm.registry import build_client, default_model, price_table, served_models
from shared.llm.settings import MissingCredentialsError, VendorSettings
from shared.protocol import Cancel, DecodeError, Finding, Names, Status, Task, decode, encode
from shared.protocol.tracecontext import child_of, trace_of
from shared.runtime.config_errors import ConfigError, Problem
from shared.runtime.logging import register_secret
from shared.runtime.settings import BusSettings, SwarmSettings
from shared.runtime.tracing import Tracer

log = structlog.get_logger("swarm.worker")


async def run_worker(
    stop: asyncio.Event,
    swarm: SwarmSettings,
    bus_settings: BusSettings,
    settings: WorkerSettings,
    vendors: VendorSettings,
    *,
    tracer: Tracer | None = None,
) -> int:
    vendor = settings.vendor
    try:
        vendors.endpoint(vendor)
    except MissingCredentialsError as exc:
        if settings.unconfigured == "idle":
            return await run_unconfigured(stop, swarm, bus_settings, vendor, exc)
        raise ConfigError(Problem(exc.variable, str(exc))) from None
    real_key = vendors.key_sent_to_simulator(vendor)
    if real_key is not None and not vendors.allow_simulator_with_keys:
        raise ConfigError(
            Problem(
                "SWARM_ALLOW_SIMULATOR_WITH_KEYS",
                f"{real_key} is set and SWARM_SIMULATOR_URL points vendor {vendor} at the "
                "simulator, which would receive the real key: unset one of them, or set "
                "SWARM_ALLOW_SIMULATOR_WITH_KEYS=1 if that simulator is yours",
            )
        )
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
        "models": models_field(served_models(vendor, vendors, llm.default_model)),
        "capacity": str(bus_settings.max_in_flight),
        "simulated": str(vendors.simulator_url is not None and not _own_url(vendors, vendor)),
    }
    try:
        async with service_context(
            f"worker-{vendor}", swarm, bus_settings, info=info, tracer=tracer
        ) as ctx:
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
                    tracer=ctx.tracer,
                )
                sub = ctx.bus.subscribe_by_urgency(
                    names.vendor_task_levels(vendor), Names.worker_group(vendor), ctx.member_id
                )
                await sub.start()
                ctx.live_info.append(lambda: {"in_flight": str(sub.in_flight)})

                async def mark_running(key: str, worker_id: str) -> str | None:
                    # Only a task the dispatcher keeps a record of (posted straight to a
                    # vendor stream, it has none); a plain write, not worth a transaction.
                    # The vendor it was routed to, if any: only such a task is rerouted.
                    routed_to = await redis.hget(key, "vendor")
                    if routed_to is not None:
                        await redis.hset(
                            key,
                            mapping={
                                "state": "running",
                                "worker": worker_id,
                                "updated_at": f"{time.time():.3f}",
                            },
                        )
                    return None if routed_to is None else text(routed_to)

                async def mget(*keys: str) -> list[bytes | None]:
                    return cast(list[bytes | None], await redis.mget(keys))

                watch = CancelWatch()
                handler = make_handler(
                    worker,
                    names,
                    settings,
                    redis_mget=mget,
                    mark_running=mark_running,
                    cancels=watch,
                )
                tail = asyncio.create_task(
                    tail_cancels(redis, names.cancels, watch, stop), name="cancel-tail"
                )
                try:
                    await serve(
                        sub, handler, stop=stop, drain_timeout_s=bus_settings.drain_timeout_s
                    )
                finally:
                    tail.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await tail
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
    redis_mget: Callable[[str, str], Awaitable[list[bytes | None]]],
    mark_running: Callable[[str, str], Awaitable[str | None]],
    cancels: CancelWatch,
) -> Handler:
    metrics = worker.metrics

    def cancelled(task: Task, reason: str, *, in_flight: bool) -> list[Effect]:
        """The finding of a cancelled task: $0 if no call was made; unknown (None) if the
        call was closed midway, since the vendor may bill what it had read."""
        metrics.tasks.labels(worker.vendor, "cancelled").inc()
        log.info("task.cancelled", in_flight=in_flight, reason=reason)
        when = "during its vendor call (closed)" if in_flight else "before any vendor call"
        f = Finding(
            task_id=task.task_id,
            worker_id=worker.worker_id,
            vendor=worker.vendor,
            model=task.model or task.route_model or worker.llm.default_model,
            status=Status.CANCELLED,
            error=f"cancelled {when}: {reason}",
            cost_usd=None if in_flight else 0.0,
            attempt=task.attempt,
            task_type=task.task_type,
            run_id=task.run_id,
            intake_id=task.intake_id,
            headers=task.headers,
        )
        return published(f, "cancelled")

    def published(f: Finding, state: str) -> list[Effect]:
        """A finding, fenced by its task's done-marker, and the task record's new state."""
        return [
            Outgoing(names.findings, encode(f)),
            Fence(names.task_done(worker.vendor, f.task_id), f.finding_id, settings.done_ttl_s),
            _state(names.task(f.task_id), state, f.finding_id, settings),
        ]

    async def handle(delivery: Delivery) -> list[Effect]:
        try:
            task = decode(Task, delivery.fields)
        except DecodeError as exc:
            raise DeadLetter(f"not a valid task: {exc}", field=exc.field) from exc
        return await _traced(worker, delivery, task, work)

    async def work(task: Task) -> list[Effect]:
        done_key = names.task_done(worker.vendor, task.task_id)
        done, cancel = await redis_mget(done_key, names.task_cancelled(task.task_id))
        if done is not None:
            metrics.tasks.labels(worker.vendor, "duplicate").inc()
            log.info("task.duplicate", note="finding already published; acked without a call")
            return []
        if cancel is not None:
            return cancelled(task, cancel.decode(errors="replace"), in_flight=False)
        record = names.task(task.task_id)
        # The dispatcher takes a task back only if it routed it here (docs/protocol.md,
        # section 2): one posted straight to this vendor's stream, or replayed to it from
        # another vendor's, fails here instead of being handed back.
        routed_here = await mark_running(record, worker.worker_id) == worker.vendor
        call = asyncio.ensure_future(worker.run(task, may_reroute=routed_here))
        cancels.track(task.task_id, call)
        try:
            outcome = await call
        except asyncio.CancelledError:
            reason = cancels.requested(task.task_id)
            current = asyncio.current_task()
            if reason is None or (current is not None and current.cancelling()):
                raise  # shutting down: the entry stays pending for a peer
            return cancelled(task, reason, in_flight=True)
        finally:
            cancels.untrack(task.task_id)
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
            return published(f, "done")
        if isinstance(outcome, Reroute):
            metrics.tasks.labels(worker.vendor, "rerouted").inc()
            log.warning(
                "task.rerouted", reason=outcome.reason, excluded=list(outcome.task.excluded_vendors)
            )
            return [
                Outgoing(names.reroutes, encode(outcome.task)),
                _state(record, "rerouted", "", settings),
            ]
        assert isinstance(outcome, GiveUp)
        metrics.tasks.labels(worker.vendor, "failed").inc()
        log.error("task.failed", reason=outcome.reason)
        raise DeadLetter(
            outcome.reason,
            effects=tuple(published(outcome.finding, "failed")),
        )

    return handle


async def tail_cancels(redis: Redis, stream: str, watch: CancelWatch, stop: asyncio.Event) -> None:
    """Every cancel request posted from now on, as it comes (every worker sees each one), so
    a call in flight here is closed within a read; queued tasks are covered by the mark the
    dispatcher sets."""
    async for _entry_id, fields in tail(redis, stream, stop):
        try:
            request = decode(Cancel, fields)
        except DecodeError:
            continue  # the dispatcher dead-letters it with the reason
        reason = request.reason.strip() or "cancelled by its poster"
        if watch.cancel(request.task_id, reason):
            log.info("task.cancel_in_flight", task_id=request.task_id)


async def _traced(
    worker: Worker,
    delivery: Delivery,
    task: Task,
    work: Callable[[Task], Awaitable[list[Effect]]],
) -> list[Effect]:
    """`work(task)` inside the task's span; the task's trace, if it carries one, names
    this span as the parent of its vendor calls, a reroute and its finding."""
    trace = trace_of(task.headers)
    attributes = {
        "swarm.task_id": task.task_id,
        "swarm.vendor": worker.vendor,
        "swarm.worker_id": worker.worker_id,
    }
    with worker.tracer.consume(
        "swarm.task",
        trace,
        stream=delivery.stream,
        entry_id=delivery.entry_id,
        attributes=attributes,
    ) as span:
        structlog.contextvars.bind_contextvars(task_id=task.task_id, vendor=worker.vendor)
        if trace is not None:
            task = child_of(task, span.context)
        return await work(task)


def _state(key: str, state: str, finding_id: str, settings: WorkerSettings) -> SetFields:
    fields = {"state": state, "updated_at": f"{time.time():.3f}"}
    if finding_id:
        fields["finding_id"] = finding_id
    return SetFields(key, fields, settings.done_ttl_s)


def _own_url(vendors: VendorSettings, vendor: str) -> bool:
    return not vendors.endpoint(vendor).simulated
