"""Every stream, consumer-group and key name the swarm uses, under one namespace.

No other module spells a Redis key. Two swarms (or two tests) that use different
namespaces share one Redis without seeing each other's data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_NAMESPACE = "swarm"
# The Task model's urgency words, most urgent first (a string here: names stay free of
# the message models).
URGENCY_ORDER = ("critical", "high", "normal", "low")
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Names:
    """Key names for one swarm. Build it once from settings and pass it down."""

    namespace: str = DEFAULT_NAMESPACE

    def __post_init__(self) -> None:
        if not _NAMESPACE_RE.fullmatch(self.namespace):
            raise ValueError(
                f"namespace {self.namespace!r} must be 1-64 letters, digits, '_', '.', '-'"
            )

    def _k(self, *parts: str) -> str:
        return ":".join((self.namespace, *parts))

    # -- streams -------------------------------------------------------------------------
    @property
    def intake(self) -> str:
        """Where anyone posts tasks (`XADD swarm:tasks '*' prompt ...`)."""
        return self._k("tasks")

    @property
    def rejected(self) -> str:
        """Intake entries that did not decode, with the reason and the original fields."""
        return self._k("tasks", "rejected")

    def vendor_tasks(self, vendor: str, urgency: str = "normal") -> str:
        """Routed tasks for one vendor's workers (a separate prefix, so no vendor name can
        collide with the intake's own sub-streams); other urgencies than normal have a
        stream each (`swarm:queue:deepseek:high`), which the workers read first or last."""
        if urgency == "normal":
            return self._k("queue", vendor)
        if urgency not in URGENCY_ORDER:
            raise ValueError(f"urgency {urgency!r} is not one of {', '.join(URGENCY_ORDER)}")
        return self._k("queue", vendor, urgency)

    def vendor_task_levels(self, vendor: str) -> tuple[str, ...]:
        """A vendor's task streams, the most urgent first: the order its workers read in."""
        return tuple(self.vendor_tasks(vendor, u) for u in URGENCY_ORDER)

    @property
    def reroutes(self) -> str:
        """Tasks a worker hands back for another vendor (its vendor failed them). Workers
        may add here, never to the intake; the dispatcher routes a reroute only for a task
        it routed to that worker's vendor (its record says so), else rejects it."""
        return self._k("reroutes")

    @property
    def findings(self) -> str:
        return self._k("findings")

    @property
    def dead_letter(self) -> str:
        """Entries that exhausted their deliveries or could not be handled, from any stream."""
        return self._k("dlq")

    @property
    def cancels(self) -> str:
        """Cancel requests (`XADD swarm:cancel '*' task_id T`): the dispatcher marks each
        task cancelled; every worker tails it to close a call in flight."""
        return self._k("cancel")

    def shard_queries(self, shard: str) -> str:
        return self._k("shard", shard, "queries")

    def replies(self, consumer: str) -> str:
        """A requester's private reply stream (context replies)."""
        return self._k("replies", consumer)

    # -- consumer groups -----------------------------------------------------------------
    DISPATCHER_GROUP = "dispatcher"
    COLLECTOR_GROUP = "collector"
    MEGASHARD_GROUP = "megashard"

    @staticmethod
    def worker_group(vendor: str) -> str:
        return f"worker-{vendor}"

    # -- keys ------------------------------------------------------------------------------
    @property
    def members(self) -> str:
        """Sorted set: member id -> heartbeat expiry (unix ms). Lists the live fleet."""
        return self._k("members")

    def member(self, member_id: str) -> str:
        """Hash describing one live member; expires when its heartbeat stops."""
        return self._k("member", member_id)

    def task(self, task_id: str) -> str:
        return self._k("task", task_id)

    def route(self, task_id: str) -> str:
        """String: the vendor the dispatcher last routed a task to. Only the dispatcher
        writes it (workers may write the task record), so a hand-back is checked here."""
        return self._k("route", task_id)

    def task_cancelled(self, task_id: str) -> str:
        """String: the reason a task was cancelled; a worker checks it before the call."""
        return self._k("cancelled", task_id)

    def task_done(self, vendor: str, task_id: str) -> str:
        """Set, with the finding id, with the task's finding (before the task's ack) by a
        worker of `vendor`, the vendor whose queue delivered the task: a redelivered task
        that has it is acknowledged without calling the vendor again. Scoped to the vendor,
        so a worker can mark done only its own vendor's tasks (the ACL allows no other)."""
        return self._k("done", vendor, task_id)

    def rate_limit(self, vendor: str, model: str) -> str:
        """Hash: shared request and token buckets of one vendor/model, for every replica."""
        return self._k("ratelimit", vendor, model)

    def cooldown(self, vendor: str, model: str) -> str:
        """Exists (with a TTL) while a vendor/model is cooling down after repeated failures."""
        return self._k("cooldown", vendor, model)

    @property
    def cooldowns(self) -> str:
        """Sorted set: `<vendor>:<model>` -> when its cooldown ends (unix ms, Redis time),
        set with the cooldown key, so the dispatcher lists what cools without SCAN."""
        return self._k("cooldowns")

    def failures(self, vendor: str, model: str) -> str:
        """Recent failure count of a vendor/model (expires with the counting window)."""
        return self._k("failures", vendor, model)

    def spend(self, period: int, kind: str, name: str) -> str:
        """Float: USD spent in one budget period by a vendor (`kind` "vendor") or a task
        type (`kind` "task_type"); expires after the period."""
        return self._k("spend", str(period), kind, name)

    def task_findings(self, task_id: str) -> str:
        """Hash of a task's findings (finding id -> finding JSON), written by the collector.
        The id comes last in every per-task key, so no task id (even one containing ':')
        can name another task's key."""
        return self._k("findings", task_id)

    # -- findings collector ----------------------------------------------------------------
    def task_summary(self, task_id: str) -> str:
        """Hash: the collector's view of one task (status, vendor, model, tokens, cost)."""
        return self._k("collected", task_id)

    def run_tasks(self, run_id: str) -> str:
        """Hash: task id -> status, for every task of a run (or task type) the collector saw."""
        return self._k("run", run_id)

    def run_info(self, run_id: str) -> str:
        """Hash: what is known of a run as a whole (expected task count, finished count)."""
        return self._k("runinfo", run_id)

    @property
    def totals(self) -> str:
        """Hash: running totals per vendor and model (`<vendor>|<model>|<field>` -> number)."""
        return self._k("totals")

    # -- mega-shards -----------------------------------------------------------------------
    # Shard ids are names (lower-case letters, digits, '_', '.', '-'), so `shard:<id>:...`
    # keys cannot collide.
    @property
    def shards(self) -> str:
        """Set of every shard id that has had context loaded."""
        return self._k("shards")

    def shard_head(self, shard: str) -> str:
        """Hash: a shard's current version, vendor, model, specialty, tokens, documents."""
        return self._k("shard", shard, "head")

    def shard_version(self, shard: str, version: int) -> str:
        """String: the manifest (JSON) of one version of a shard's context; never changes."""
        return self._k("shard", shard, "v", str(version))

    def shard_cache(self, shard: str, version: int) -> str:
        """Hash: the vendor-side cache of one context version (name, expiry, accounting)."""
        return self._k("shard", shard, "cache", str(version))

    def blob(self, digest: str) -> str:
        """String: one document's text, addressed by its SHA-256 (shared by every shard)."""
        return self._k("blob", digest)

    def shard_reply(self, query_id: str) -> str:
        """String: a context reply already sent, so a redelivered query is answered again
        without a second vendor call."""
        return self._k("shard-reply", query_id)
