"""Wiring only: the intake stream -> validate -> route -> a vendor's stream, with a task
record; bad input to the rejected stream with its reason, never dropped, never fatal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

import structlog

from services.dispatcher.cancels import cancel_handler
from services.dispatcher.claims import TaskClaims
from services.dispatcher.fleet import FleetView
from services.dispatcher.policy import Policy
from services.dispatcher.router import Decision, Fleet, route
from services.dispatcher.settings import DispatcherSettings
from shared.bus import (
    Cooldowns,
    DeadLetter,
    Delivery,
    Effect,
    Outgoing,
    SetFields,
    SetKey,
    serve,
    service_context,
    streamids,
)
from shared.bus.spend import SpendBook
from shared.llm.prices import PriceTable
from shared.llm.registry import price_table
from shared.llm.settings import VendorSettings
from shared.protocol import KNOWN_VENDORS, DecodeError, Finding, Names, Status, Task, decode, encode
from shared.protocol.codec import entry_size
from shared.protocol.tracecontext import TraceContext, child_of, trace_of
from shared.runtime.metrics import Metrics
from shared.runtime.redis import REDIS_UNAVAILABLE
from shared.runtime.settings import BusSettings, SwarmSettings
from shared.runtime.tracing import Tracer

log = structlog.get_logger("swarm.dispatcher")


async def run_dispatcher(
    stop: asyncio.Event,
    swarm: SwarmSettings,
    bus_settings: BusSettings,
    settings: DispatcherSettings,
    vendors: VendorSettings,
    *,
    tracer: Tracer | None = None,
) -> int:
    prices = price_table(vendors)
    policy = Policy.load(settings.policy_file, prices)
    async with service_context("dispatcher", swarm, bus_settings, tracer=tracer) as ctx:
        redis = ctx.bus.redis
        _zero_queue_counters(ctx.metrics, ctx.names)
        fleet = FleetView(
            redis,
            ctx.names,
            Cooldowns(redis, ctx.names),
            settings.fleet_refresh_s,
            spend=SpendBook(redis, ctx.names, period_s=settings.budget_period_s),
            vendor_caps=settings.vendor_caps_usd,
            task_type_caps=settings.task_type_caps_usd,
            live_grace_s=settings.live_grace_s,
        )
        sub = ctx.bus.subscribe(ctx.names.intake, Names.DISPATCHER_GROUP, ctx.member_id)
        await sub.start()
        gauges = asyncio.create_task(
            _export_fleet(fleet, ctx.metrics, stop, settings.fleet_refresh_s), name="fleet-gauges"
        )
        claims = TaskClaims(redis, settings.record_ttl_s)

        async def routed_to(task_id: str) -> str | None:
            vendor = await redis.get(ctx.names.route(task_id))
            return None if vendor is None else streamids.text(vendor)

        intake = Intake(
            ctx.names,
            settings=settings,
            policy=policy,
            prices=prices,
            fleet=fleet,
            metrics=ctx.metrics,
            claim=claims.claim,
            routed_to=routed_to,
            tracer=ctx.tracer,
        )
        reroutes = ctx.bus.subscribe(ctx.names.reroutes, Names.DISPATCHER_GROUP, ctx.member_id)
        await reroutes.start()
        cancels = ctx.bus.subscribe(ctx.names.cancels, Names.DISPATCHER_GROUP, ctx.member_id)
        await cancels.start()
        drain = bus_settings.drain_timeout_s
        try:
            await asyncio.gather(
                serve(sub, intake.handle, stop=stop, drain_timeout_s=drain),
                serve(reroutes, intake.handle_reroute, stop=stop, drain_timeout_s=drain),
                serve(
                    cancels,
                    cancel_handler(ctx.names, settings.record_ttl_s),
                    stop=stop,
                    drain_timeout_s=drain,
                ),
            )
        finally:
            stop.set()
            await gauges
            await claims.close()
    return 0


def _zero_queue_counters(metrics: Metrics, names: Names) -> None:
    """Show every vendor queue's publish counter at 0 from the start: increase() cannot
    count the burst that makes a counter appear, so a vendor's first backlog after a
    dispatcher (re)start would be invisible to the lag alert (SwarmStreamLagGrowing)."""
    for vendor in KNOWN_VENDORS:
        for stream in names.vendor_task_levels(vendor):
            metrics.published.labels(stream)


async def _export_fleet(
    fleet: FleetView, metrics: Metrics, stop: asyncio.Event, every_s: float
) -> None:
    """Keep the fleet gauges fresh while no task arrives (the router reads it per task)."""
    while not stop.is_set():
        try:
            await fleet.get()
            fleet.export(metrics)
        except REDIS_UNAVAILABLE as exc:
            log.warning("redis.unavailable", job="fleet_gauges", error=str(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(every_s, 1.0))


def rejection_label(field: str) -> str:
    """The metric label for a rejection's field: bounded, so a field name the poster made
    up (or a megabyte long) is counted as "unknown" instead of adding a series."""
    top = field.split(".", 1)[0]
    known = top in Task.model_fields or top in ("", "entry", "data")
    return field if known and len(field) <= 64 else "unknown"


class Intake:
    def __init__(
        self,
        names: Names,
        *,
        settings: DispatcherSettings,
        policy: Policy,
        prices: PriceTable,
        fleet: FleetView,
        metrics: Metrics,
        claim: Callable[[str, str, str], Awaitable[bool]],
        routed_to: Callable[[str], Awaitable[str | None]],
        tracer: Tracer | None = None,
    ) -> None:
        self.names, self.settings, self.policy, self.prices = names, settings, policy, prices
        self.fleet, self.metrics = fleet, metrics
        self._claim = claim
        self._routed_to = routed_to
        self.tracer = tracer or Tracer()

    async def handle_reroute(self, delivery: Delivery) -> list[Effect]:
        """A task a worker hands back (`swarm:reroutes`): routed again like an intake entry,
        but only if this dispatcher routed it to the vendor that hands it back (its route
        key says so: workers may write the task record, never the route), so a worker's
        credential cannot post new work or move another vendor's tasks; anything else goes
        to the rejected stream with the reason."""
        task = self._validate(delivery)
        if not task.history:
            raise self._rejection(
                "history", "history: a reroute names the vendor that failed the task; none here"
            )
        by = task.history[-1].vendor
        routed = await self._routed_to(task.task_id)
        if routed is None:
            raise self._rejection(
                "task_id",
                f"task_id: no task {task.task_id!r} was routed here (no route); a reroute is "
                "accepted only for a task the dispatcher routed",
            )
        if routed != by:
            raise self._rejection(
                "history",
                f"history: handed back by {by!r}, but task {task.task_id!r} was routed to "
                f"{routed or 'no vendor'!r}; only the vendor it was routed to may hand it back",
            )
        return await self._handle(task, delivery)

    async def handle(self, delivery: Delivery) -> list[Effect]:
        return await self._handle(self._validate(delivery), delivery)

    async def _handle(self, task: Task, delivery: Delivery) -> list[Effect]:
        caller = trace_of(task.headers)  # the poster's trace, or None: this span starts one
        with self.tracer.consume(
            "swarm.intake",
            caller,
            stream=delivery.stream,
            entry_id=delivery.entry_id,
            attributes={"swarm.task_id": task.task_id, "swarm.attempt": task.attempt},
        ) as span:
            structlog.contextvars.bind_contextvars(task_id=task.task_id)
            # Without the poster's trace (and with SWARM_TRACE_START off) nothing is written
            # into headers: the routed task stays readable by workers of schema 1.0.
            carry = caller is not None or self.settings.start_traces
            if carry:
                structlog.contextvars.bind_contextvars(trace_id=span.context.trace_id)
                task = child_of(task, span.context)
            return await self._accept(task, delivery, span.context, carry=carry)

    async def _accept(
        self, task: Task, delivery: Delivery, intake: TraceContext, *, carry: bool
    ) -> list[Effect]:
        # One intake entry per task id and attempt wins, atomically, even when two copies
        # are handled at once; a redelivery of the winning entry still goes through.
        key = self.names.task(task.task_id)
        if not await self._claim(key, f"entry:{task.attempt}", delivery.entry_id):
            log.info("task.duplicate", note="this task id was already taken; acked")
            return []
        fleet = await self.fleet.get()
        if task.task_type in self.fleet.types_over_cap:
            spent, cap = self.fleet.types_over_cap[task.task_type]
            raise self._rejection(
                "task_type",
                f"task_type: {task.task_type!r} has spent ${spent:.2f} of its ${cap:.2f} "
                "budget this period",
            )
        with self.tracer.span(
            "swarm.route", intake, attributes={"swarm.task_id": task.task_id}
        ) as span:
            decision = await self._route(task, fleet)
            chosen = decision.chosen
            span.set(
                {
                    "swarm.vendor": chosen.vendor if chosen else None,
                    "gen_ai.request.model": chosen.model if chosen else None,
                    "swarm.complexity": decision.complexity,
                    "swarm.reason": decision.reason,
                }
            )
            if chosen is None:
                span.fail("no_route", decision.reason)
            elif carry:  # the worker's spans are this one's children
                task = child_of(task, span.context)
        if decision.chosen is None and self.fleet.vendors_over_cap:
            over = ", ".join(
                f"{v} (${s:.2f} of ${c:.2f})"
                for v, (s, c) in sorted(self.fleet.vendors_over_cap.items())
            )
            decision = replace(decision, reason=f"{decision.reason}; over period budget: {over}")
        if decision.chosen is None:
            raise self._refuse(task, decision)
        chosen = decision.chosen
        routed = task.model_copy(update={"route_model": chosen.model})
        log.info(
            "task.routed",
            vendor=chosen.vendor,
            model=chosen.model,
            complexity=decision.complexity,
            est_cost_usd=None if chosen.cost_usd is None else round(chosen.cost_usd, 6),
        )
        record = self._record(task, "routed", decision)
        return [
            Outgoing(self.names.vendor_tasks(chosen.vendor, task.urgency), encode(routed)),
            # No TTL here: the claim has just set the record's (one PEXPIRE per task).
            SetFields(self.names.task(task.task_id), record),
            SetKey(self.names.route(task.task_id), chosen.vendor, self.settings.record_ttl_s),
        ]

    async def _route(self, task: Task, fleet: Fleet) -> Decision:
        """Route on the fleet as it is, leaning towards serving the task when the only
        obstacle is a momentary view: at a cold start wait a little for workers; a task
        pinned to a vendor waits in that vendor's queue for its workers; when every viable
        model is cooling down, the least recently failed is still better than a refusal."""
        decision = route(task, self.policy, self.prices, fleet)
        if decision.chosen is not None:
            return decision
        if not self.fleet.ever_live:  # nobody has registered yet: give workers a moment
            fleet = await self.fleet.wait_for_workers(self.settings.cold_start_wait_s)
            decision = route(task, self.policy, self.prices, fleet)
            if decision.chosen is None and not fleet.live and not self.fleet.vendors_over_cap:
                # Still none: queue for the cheapest; its worker will serve it when it comes
                # (not a vendor whose workers run without its key: they never will).
                everyone = Fleet.everyone_live().live
                hoped = {v: n for v, n in everyone.items() if v not in self.fleet.unconfigured}
                return route(task, self.policy, self.prices, Fleet(live=hoped))
        if decision.chosen is None and task.model and self.prices.get(task.model) is None:
            # Only live workers know this model: one may have announced it since the last
            # read of the fleet (up to a refresh interval ago). Read again before refusing.
            fleet = await self.fleet.fresh()
            decision = route(task, self.policy, self.prices, fleet)
        pinned = task.vendor
        if decision.chosen is None and pinned and pinned not in self.fleet.vendors_over_cap:
            waiting = replace(fleet, live={**fleet.live, pinned: max(fleet.live.get(pinned, 0), 1)})
            decision = route(task, self.policy, self.prices, waiting)
            if decision.chosen is not None and fleet.live.get(pinned, 0) <= 0:
                log.warning("task.queued_without_workers", vendor=pinned)
        if decision.chosen is None and fleet.cooling:
            calm = route(task, self.policy, self.prices, replace(fleet, cooling=frozenset()))
            if calm.chosen is not None:
                log.warning("task.routed_to_cooling_model", reason=decision.reason)
                return replace(calm, reason=f"every viable model is cooling down; {calm.reason}")
        return decision

    def _validate(self, delivery: Delivery) -> Task:
        # Refused for its size: the rejected record keeps an excerpt, its size and SHA-256,
        # never megabytes (replayed, it would be refused again anyway).
        size, limit = entry_size(delivery.fields), self.settings.max_task_bytes
        if size > limit:
            self._reject_metric("entry")
            raise DeadLetter(
                f"entry: is {size:,} bytes; the limit is {limit:,} (SWARM_MAX_TASK_BYTES)",
                field="entry",
                stream=self.names.rejected,
                excerpt=True,
            )
        try:
            task = decode(Task, delivery.fields)
        except DecodeError as exc:
            self._reject_metric(exc.field or "entry")
            raise DeadLetter(str(exc), field=exc.field, stream=self.names.rejected) from exc
        named: dict[str, str] = {}
        if "task_id" not in task.model_fields_set:
            # Its entry id names it: the same on every delivery, so a redelivered entry is
            # one task (one claim, one vendor call), and the id XADD printed finds it.
            named["task_id"] = delivery.entry_id
        if task.intake_id is None:
            named["intake_id"] = delivery.entry_id
        if named:
            task = task.model_copy(update=named)
        for field, text, limit, env in (
            ("prompt", task.prompt, self.settings.max_prompt_chars, "MAX_PROMPT_CHARS"),
            ("context", task.context, self.settings.max_context_chars, "MAX_CONTEXT_CHARS"),
        ):
            if len(text) > limit:
                self._reject_metric(field)
                raise DeadLetter(
                    f"{field}: is {len(text):,} characters; the limit is {limit:,} "
                    f"(SWARM_DISPATCHER_{env})",
                    field=field,
                    stream=self.names.rejected,
                    excerpt=True,
                )
        if task.vendor is not None and task.vendor not in KNOWN_VENDORS:
            self._reject_metric("vendor")
            raise DeadLetter(
                f"vendor: unknown vendor {task.vendor!r}; choose one of: "
                f"{', '.join(KNOWN_VENDORS)}",
                field="vendor",
                stream=self.names.rejected,
            )
        return task

    def _refuse(self, task: Task, decision: Decision) -> DeadLetter:
        field = (
            "model"
            if task.model
            else "vendor"
            if task.vendor
            else ("budget_usd" if task.budget_usd else "")
        )
        self._reject_metric(field or "route")
        effects: tuple[Effect, ...] = (
            SetFields(
                self.names.task(task.task_id),
                self._record(task, "rejected", decision),
                self.settings.record_ttl_s,
            ),
        )
        # Its poster is owed a finding (a failed one), so a run with it still completes.
        why = "; ".join([*(f"{h.vendor}: {h.error}" for h in task.history), decision.reason])
        failed = Finding(
            task_id=task.task_id,
            worker_id="dispatcher",
            vendor="dispatcher",
            model="",
            status=Status.FAILED,
            error=why,
            attempt=task.attempt,
            task_type=task.task_type,
            run_id=task.run_id,
            intake_id=task.intake_id,
            headers=task.headers,
        )
        effects = (*effects, Outgoing(self.names.findings, encode(failed)))
        return DeadLetter(
            f"no route: {decision.reason}", field=field, stream=self.names.rejected, effects=effects
        )

    def _record(self, task: Task, state: str, decision: Decision) -> dict[str, str]:
        """The task record (a hash): where the task is and why; workers update `state`."""
        chosen = decision.chosen
        return {
            "task_id": task.task_id,
            "state": state,
            "attempt": str(task.attempt),
            "vendor": chosen.vendor if chosen else "",
            "model": chosen.model if chosen else "",
            "complexity": decision.complexity,
            "reason": decision.reason,
            "estimated_cost_usd": chosen.estimated_cost if chosen else "",
            "excluded_vendors": json.dumps(list(task.excluded_vendors)),
            "updated_at": f"{time.time():.3f}",
        }

    def _rejection(self, field: str, reason: str) -> DeadLetter:
        """`reason` for the rejected stream, counted under `field`."""
        self._reject_metric(field)
        return DeadLetter(reason, field=field, stream=self.names.rejected)

    def _reject_metric(self, field: str) -> None:
        self.metrics.rejected.labels(rejection_label(field)).inc()
