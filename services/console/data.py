"""What the console shows, read from Redis with read-only commands and bounded work.

Nothing here walks the keyspace: no KEYS or SCAN, no read of a whole stream. Streams are
read newest first a page at a time (`XREVRANGE ... COUNT`), each listed task's records with
one pipelined `HMGET` each; the fleet comes from the members index (`ZRANGEBYSCORE`), the
streams worth showing from the names the swarm uses (the intake, findings, cancel,
dead-letter and rejected streams, each known vendor's queues, one per urgency, and every
shard's queries). So a page costs the same with a hundred tasks in Redis as with a hundred
thousand.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shared.bus.findings import TaskView, task_view
from shared.bus.membership import member_models
from shared.bus.streamids import text
from shared.llm.settings import VENDORS
from shared.protocol import DecodeError, Names, Rejection, decode_rejection

T = TypeVar("T")

# The dispatcher's record and the collector's summary: only the fields a list shows.
ROUTE_FIELDS = ("state", "vendor", "model", "complexity", "estimated_cost_usd", "attempt")
SUMMARY_FIELDS = ("status", "vendor", "model", "cost_usd", "input_tokens", "output_tokens")


@dataclass(frozen=True, slots=True)
class FleetRow:
    service: str
    name: str  # vendor or shard; "" for the dispatcher and the collector
    replicas: int
    in_flight: int
    capacity: int
    unconfigured: int
    missing: tuple[str, ...]
    models: tuple[str, ...] = ()  # what its workers announce they serve


@dataclass(frozen=True, slots=True)
class GroupRow:
    group: str
    consumers: int
    pending: int
    lag: int | None  # None: Redis cannot tell cheaply


@dataclass(frozen=True, slots=True)
class StreamRow:
    stream: str
    length: int
    groups: tuple[GroupRow, ...]


@dataclass(frozen=True, slots=True)
class TaskRow:
    entry_id: str  # the intake entry
    task_id: str
    prompt: str  # the first characters
    urgency: str
    route: dict[str, str]  # the dispatcher's record, ROUTE_FIELDS that are set
    summary: dict[str, str]  # the collector's summary, SUMMARY_FIELDS that are set


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    rows: list[T]
    older: str | None  # the `before` of the next (older) page; None: this is the last


@dataclass(frozen=True, slots=True)
class RecordRow:
    id: str
    rejection: Rejection | None  # None: not a dead-letter record
    raw: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TaskPage:
    task_id: str
    record: dict[str, str]  # the dispatcher's record (claims left out), {} if none
    view: TaskView | None  # the collector's summary and every finding
    intake: dict[str, str]  # the intake entry's fields, if it is still in the stream
    cancel_requested: str | None  # the reason, once the dispatcher marked it


# -- the fleet -------------------------------------------------------------------------------


async def members(redis: Redis, names: Names) -> list[dict[str, str]]:
    """Every member whose heartbeat has not expired (read only: expired entries of the
    index are left for the services to prune)."""
    now_ms = int(time.time() * 1000)
    ids: list[bytes] = await redis.zrangebyscore(names.members, f"({now_ms}", "+inf")  # type: ignore[assignment]
    if not ids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for member_id in ids:
            pipe.hgetall(names.member(text(member_id)))
        rows = await pipe.execute()
    return [{text(k): text(v) for k, v in row.items()} for row in rows if row]


def fleet_rows(live: list[dict[str, str]]) -> list[FleetRow]:
    """One row per service and vendor (or shard), summed over its replicas."""
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    for m in live:
        key = (m.get("service", "?"), m.get("vendor") or m.get("shard_id") or "")
        row = acc.setdefault(
            key, {"n": 0, "busy": 0, "cap": 0, "idle": 0, "missing": set(), "models": {}}
        )
        row["models"].update(dict.fromkeys(member_models(m)))
        row["n"] += 1
        row["busy"] += _int(m.get("in_flight"))
        row["cap"] += _int(m.get("capacity"))
        if m.get("configured") == "false":
            row["idle"] += 1
            row["missing"].update(v for v in m.get("missing", "").split(",") if v)
    return [
        FleetRow(
            s,
            n,
            r["n"],
            r["busy"],
            r["cap"],
            r["idle"],
            tuple(sorted(r["missing"])),
            tuple(r["models"]),
        )
        for (s, n), r in sorted(acc.items())
    ]


# -- streams ---------------------------------------------------------------------------------


async def stream_names(redis: Redis, names: Names, live: list[dict[str, str]]) -> list[str]:
    """The swarm's streams: fixed ones, the queues (one per urgency) of each known or live
    vendor, a query stream per shard (from the shards set); without SCAN."""
    vendors = set(VENDORS) | {m["vendor"] for m in live if m.get("vendor")}
    shards = sorted(text(s) for s in await redis.smembers(names.shards))
    return [
        names.intake,
        names.reroutes,
        names.findings,
        names.cancels,
        names.dead_letter,
        names.rejected,
        *(stream for v in sorted(vendors) for stream in names.vendor_task_levels(v)),
        *(names.shard_queries(s) for s in shards),
    ]


async def stream_rows(redis: Redis, streams: list[str]) -> list[StreamRow]:
    """Length and consumer groups of each stream that exists (XLEN, XINFO GROUPS)."""
    async with redis.pipeline(transaction=False) as pipe:
        for s in streams:
            pipe.xlen(s)
            pipe.xinfo_groups(s)
        replies = await pipe.execute(raise_on_error=False)
    rows = []
    for i, s in enumerate(streams):
        length, groups = replies[2 * i], replies[2 * i + 1]
        if isinstance(groups, ResponseError) or isinstance(length, ResponseError):
            continue  # no such key (or not a stream): nothing to show
        rows.append(
            StreamRow(
                s,
                int(length),
                tuple(
                    GroupRow(
                        text(g.get("name", b"")),
                        int(g.get("consumers", 0)),
                        int(g.get("pending", 0)),
                        None if g.get("lag") is None else int(g["lag"]),
                    )
                    for g in groups
                ),
            )
        )
    return rows


# -- tasks -----------------------------------------------------------------------------------


def _fields(raw: dict[bytes, bytes]) -> dict[str, str]:
    """An intake entry's fields as text; the `data` form unpacked (JSON values as text)."""
    fields = {text(k): text(v) for k, v in raw.items()}
    if set(fields) == {"data"}:
        try:
            doc = json.loads(fields["data"])
        except ValueError:
            return fields
        if isinstance(doc, dict):
            return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in doc.items()}
    return fields


def task_id_of(entry_id: str, fields: dict[str, str]) -> str:
    """The task's id: its own `task_id`, else its intake entry id (docs/protocol.md 4.2)."""
    return fields.get("task_id", "").strip() or entry_id


async def task_page(redis: Redis, names: Names, *, before: str | None, size: int) -> Page[TaskRow]:
    """The intake's newest `size` tasks older than entry `before` (None: the newest), with
    their route and finding."""
    newest = f"({before}" if before else "+"
    raw: Any = await redis.xrevrange(names.intake, max=newest, min="-", count=size + 1)
    entries = [(text(i), _fields(f)) for i, f in raw[:size]]
    ids = [task_id_of(e, f) for e, f in entries]
    async with redis.pipeline(transaction=False) as pipe:
        for t in ids:
            pipe.hmget(names.task(t), list(ROUTE_FIELDS))
            pipe.hmget(names.task_summary(t), list(SUMMARY_FIELDS))
        replies = await pipe.execute()
    rows = [
        TaskRow(
            entry_id=e,
            task_id=t,
            prompt=" ".join(f.get("prompt", "").split())[:140],
            urgency=f.get("urgency", "normal"),
            route=_present(ROUTE_FIELDS, replies[2 * n]),
            summary=_present(SUMMARY_FIELDS, replies[2 * n + 1]),
        )
        for n, ((e, f), t) in enumerate(zip(entries, ids, strict=True))
    ]
    older = entries[-1][0] if len(raw) > size else None
    return Page(rows, older)


def _present(fields: tuple[str, ...], values: list[bytes | None]) -> dict[str, str]:
    return {k: text(v) for k, v in zip(fields, values, strict=True) if v is not None}


async def task_detail(redis: Redis, names: Names, task_id: str) -> TaskPage:
    """One task: the dispatcher's record, the collector's view, the intake entry."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(names.task(task_id))  # a handful of fields: state, route, claims
        pipe.get(names.task_cancelled(task_id))
        record_raw, cancelled = await pipe.execute()
    record = {text(k): text(v) for k, v in record_raw.items() if not text(k).startswith("entry:")}
    view = await task_view(redis, names, task_id)
    intake: dict[str, str] = {}
    # The intake entry: the task's id when it named none, else its findings say which.
    entry = next((f.intake_id for f in view.findings if f.intake_id), task_id) if view else task_id
    try:
        found: Any = await redis.xrange(names.intake, min=entry, max=entry)
    except ResponseError:  # not an entry id: a task that named its own id
        found = []
    if found:
        intake = _fields(found[0][1])
    return TaskPage(task_id, record, view, intake, None if cancelled is None else text(cancelled))


# -- dead-letter and rejected records --------------------------------------------------------


async def record_page(
    redis: Redis, stream: str, *, before: str | None, size: int
) -> tuple[int, Page[RecordRow]]:
    """The stream's length and its newest `size` records older than `before`."""
    newest = f"({before}" if before else "+"
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xlen(stream)
        pipe.xrevrange(stream, max=newest, min="-", count=size + 1)
        total, raw = await pipe.execute()
    rows = []
    for entry_id, fields in raw[:size]:
        try:
            rejection: Rejection | None = decode_rejection(fields)
        except DecodeError:
            rejection = None
        raw_text = {text(k): text(v) for k, v in fields.items()}
        rows.append(RecordRow(text(entry_id), rejection, raw_text))
    older = rows[-1].id if len(raw) > size else None
    return int(total), Page(rows, older)


def _int(raw: str | None) -> int:
    try:
        return int(float(raw or 0))
    except ValueError:
        return 0
