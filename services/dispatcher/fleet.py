"""The fleet as the router sees it: live workers per vendor, the models they announce and
what is cooling down, read from Redis at most once per refresh interval (not once per
task), by one refresh at a time however many handlers ask for it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import structlog
from redis.asyncio import Redis

from services.dispatcher.router import Fleet
from shared.bus import Cooldowns, live_members
from shared.bus.membership import member_models
from shared.bus.spend import SpendBook
from shared.protocol import Names
from shared.runtime.metrics import Metrics

log = structlog.get_logger("swarm.dispatcher")


def is_worker(member: Mapping[str, str]) -> bool:
    """A member that takes its vendor's tasks: a worker that has its vendor's key (one
    started without it under SWARM_WORKER_UNCONFIGURED=idle heartbeats `configured=false`)."""
    return (
        member.get("service", "").startswith("worker-")
        and bool(member.get("vendor"))
        and member.get("configured") != "false"
    )


class FleetView:
    def __init__(
        self,
        redis: Redis,
        names: Names,
        cooldowns: Cooldowns,
        refresh_s: float,
        *,
        spend: SpendBook | None = None,
        vendor_caps: Mapping[str, float] | None = None,
        task_type_caps: Mapping[str, float] | None = None,
        live_grace_s: float = 0.0,
    ) -> None:
        self._redis, self._names, self._cooldowns = redis, names, cooldowns
        self._refresh_s = refresh_s
        self._fleet = Fleet(live={}, cooling=frozenset())
        self._read_at = float("-inf")
        self._spend = spend
        self._vendor_caps = dict(vendor_caps or {})
        self._type_caps = dict(task_type_caps or {})
        self.vendors_over_cap: dict[str, tuple[float, float]] = {}  # vendor -> (spent, cap)
        self.types_over_cap: dict[str, tuple[float, float]] = {}
        self._members: dict[tuple[str, str], int] = {}
        self._last_seen: dict[str, float] = {}  # vendor -> monotonic time a worker was live
        self._last_models: dict[str, frozenset[str]] = {}  # vendor -> models it last announced
        self._live_grace_s = live_grace_s
        self._cooling: dict[tuple[str, str], float] = {}
        self._spent: dict[tuple[str, str], tuple[float, float]] = {}  # (kind, name) -> (spent, cap)
        # (kind, name) -> findings of unpriced models this period, not in `_spent`
        self.unpriced: dict[tuple[str, str], int] = {}
        # vendor -> the variable its workers miss: every live one runs unconfigured (idle)
        self.unconfigured: dict[str, str] = {}
        self._refreshing: asyncio.Task[Fleet] | None = None

    async def get(self) -> Fleet:
        """The fleet, read again once `refresh_s` old. Single-flight: however many
        handlers ask while it is stale, one refresh runs and they all await it (a failed
        refresh fails them all; the next call tries again)."""
        if time.monotonic() - self._read_at < self._refresh_s:
            return self._fleet
        refresh = self._refreshing
        if refresh is None:
            refresh = self._refreshing = asyncio.create_task(self._refresh(), name="fleet-refresh")
            refresh.add_done_callback(self._refreshed)
        # Shielded: a caller cancelled while waiting must not cancel everyone's refresh.
        return await asyncio.shield(refresh)

    def _refreshed(self, task: asyncio.Task[Fleet]) -> None:
        if self._refreshing is task:
            self._refreshing = None
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have been cancelled

    async def _refresh(self) -> Fleet:
        live: dict[str, int] = {}
        served: dict[str, set[str]] = {}
        members: dict[tuple[str, str], int] = {}
        unconfigured: dict[str, str] = {}
        for member in await live_members(self._redis, self._names):
            service = member.get("service", "")
            key = (service, member.get("vendor") or member.get("shard_id") or "")
            members[key] = members.get(key, 0) + 1
            if is_worker(member):
                live[member["vendor"]] = live.get(member["vendor"], 0) + 1
                served.setdefault(member["vendor"], set()).update(member_models(member))
            elif service.startswith("worker-") and member.get("vendor"):
                unconfigured[member["vendor"]] = member.get("missing", "")
        self._members = members
        self._cooling = await self._cooldowns.cooling()
        cooling = frozenset(self._cooling.keys())
        if self._spend is not None:
            self.vendors_over_cap = await self._over(self._spend, "vendor", self._vendor_caps)
            self.types_over_cap = await self._over(self._spend, "task_type", self._type_caps)
        # A worker restarting, or a heartbeat late under load, is not a vendor gone: a
        # vendor seen live within the grace period still takes work (its queue waits).
        now = time.monotonic()
        for vendor in live:
            self._last_seen[vendor] = now
            self._last_models[vendor] = frozenset(served.get(vendor, ()))
        for vendor, seen in self._last_seen.items():
            if vendor not in live and now - seen <= self._live_grace_s:
                live[vendor] = 1
        self.unconfigured = {v: m for v, m in unconfigured.items() if v not in live}
        # A vendor over its period budget takes no new work, whatever its live workers.
        live = {v: n for v, n in live.items() if v not in self.vendors_over_cap}
        # What a vendor in its grace period announced last is still what it serves.
        models = {v: self._last_models.get(v, frozenset()) for v in live}
        self._fleet = Fleet(live=live, cooling=cooling, models=models)
        self._read_at = time.monotonic()
        return self._fleet

    @property
    def ever_live(self) -> bool:
        """Whether any worker has been seen since this dispatcher started."""
        return bool(self._last_seen)

    async def fresh(self) -> Fleet:
        """The fleet read now, not at the next refresh: before refusing a task pinned to a
        model no price table knows, since the worker that announces it may have joined
        since the last read (up to `refresh_s` ago)."""
        self._read_at = float("-inf")
        return await self.get()

    async def wait_for_workers(self, timeout_s: float) -> Fleet:
        """The fleet once a worker is live, or as it is after `timeout_s` (a cold start)."""
        deadline = time.monotonic() + timeout_s
        while True:
            fleet = await self.fresh()
            if fleet.live or time.monotonic() >= deadline:
                return fleet
            await asyncio.sleep(min(0.25, max(deadline - time.monotonic(), 0.0)))

    async def _over(
        self, spend: SpendBook, kind: str, caps: Mapping[str, float]
    ) -> dict[str, tuple[float, float]]:
        spent = await spend.spent(kind, list(caps))
        unpriced = await spend.unpriced(kind, list(caps))
        for n, cap in caps.items():
            self._spent[(kind, n)] = (spent[n], cap)
            if unpriced[n] > self.unpriced.get((kind, n), 0):  # say so once per new count
                log.warning(
                    "budget.unpriced",
                    kind=kind,
                    name=n,
                    findings=unpriced[n],
                    note="findings of unpriced models: their cost is unknown, not in the cap",
                )
            self.unpriced[(kind, n)] = unpriced[n]
        return {n: (spent[n], cap) for n, cap in caps.items() if spent[n] >= cap}

    def export(self, metrics: Metrics) -> None:
        """The last read of the fleet as gauges: live members, cooldowns, budgets."""
        metrics.fleet_members.clear()
        for (service, vendor), n in self._members.items():
            metrics.fleet_members.labels(service, vendor).set(n)
        metrics.cooldown_active.clear()
        for vendor, model in self._cooling:
            metrics.cooldown_active.labels(vendor, model).set(1)
        for (kind, name), (spent, cap) in self._spent.items():
            metrics.budget_spent.labels(kind, name).set(spent)
            metrics.budget_cap.labels(kind, name).set(cap)
            metrics.budget_unpriced.labels(kind, name).set(self.unpriced.get((kind, name), 0))
