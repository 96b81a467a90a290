"""The dispatcher on a real Redis: redis-cli-shaped tasks are routed; every kind of bad
input lands in the rejected stream with its reason, and the dispatcher keeps serving."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from services.dispatcher.service import run_dispatcher
from services.dispatcher.settings import DispatcherSettings
from shared.bus import Heartbeat
from shared.llm.settings import VendorSettings
from shared.protocol import (
    KNOWN_VENDORS,
    AttemptRecord,
    Finding,
    Names,
    Rejection,
    Task,
    decode,
    decode_rejection,
    encode,
)
from shared.protocol.tracecontext import trace_of
from shared.runtime.settings import BusSettings, SwarmSettings
from tests.waiting import eventually

MAX_TASK_BYTES = 64 * 1024


@pytest.fixture
async def dispatcher(redis_url: str, names: Names) -> AsyncIterator[None]:
    async with running_dispatcher(redis_url, names):
        yield


@contextlib.asynccontextmanager
async def running_dispatcher(redis_url: str, names: Names) -> AsyncIterator[None]:
    stop = asyncio.Event()
    swarm = SwarmSettings(
        REDIS_URL=redis_url,
        SWARM_NAMESPACE=names.namespace,
        METRICS_PORT=0,
        CONSUMER_NAME="dispatcher-test",
    )
    bus = BusSettings(block_ms=200, heartbeat_interval_s=0.3, heartbeat_ttl_s=1.5)
    settings = DispatcherSettings(
        max_prompt_chars=1000, max_task_bytes=MAX_TASK_BYTES, fleet_refresh_s=0.1
    )
    task = asyncio.create_task(run_dispatcher(stop, swarm, bus, settings, VendorSettings()))
    yield
    stop.set()
    await asyncio.wait_for(task, 20)


async def _workers(redis: Redis, names: Names, *vendors: str) -> None:
    for vendor in vendors:
        await Heartbeat(
            redis,
            names,
            f"worker-{vendor}-t",
            service=f"worker-{vendor}",
            interval_s=1,
            ttl_s=60,
            info={"vendor": vendor},
        ).beat()


async def _routed(redis: Redis, names: Names, n: int) -> list[tuple[str, Task]]:
    async def enough() -> list[tuple[str, Task]]:
        out = [
            (v, decode(Task, f))
            for v in KNOWN_VENDORS
            for _id, f in await redis.xrange(names.vendor_tasks(v))
        ]
        return out if len(out) >= n else []

    return await eventually(enough, timeout=20, what=f"{n} routed tasks")


async def test_flat_and_data_tasks_are_routed_with_a_record(
    redis: Redis, names: Names, dispatcher: None
) -> None:
    await _workers(redis, names, *KNOWN_VENDORS)
    await redis.xadd(
        names.intake,
        {"task_id": "t-flat", "prompt": "Research supplier terms", "complexity": "simple"},
    )
    await redis.xadd(
        names.intake,
        {"data": json.dumps({"task_id": "t-json", "prompt": "Summarise the contracts"})},
    )
    routed = dict((t.task_id, (v, t)) for v, t in await _routed(redis, names, 2))
    vendor, task = routed["t-flat"]
    assert task.route_model and task.model is None  # chosen, not pinned
    raw = await redis.hgetall(names.task("t-flat"))
    record = {k.decode(): v.decode() for k, v in raw.items()}
    assert record["state"] == "routed" and record["vendor"] == vendor
    assert record["complexity"] == "simple" and float(record["estimated_cost_usd"]) > 0
    assert "t-json" in routed


BAD = [
    ({"complexity": "simple"}, "prompt", "required"),
    ({"prompt": "   "}, "prompt", "empty"),
    ({"prompt": "x", "complexity": "hard"}, "complexity", "simple"),
    ({"prompt": "x", "vendor": "mistral"}, "vendor", "unknown vendor"),
    ({"prompt": "x", "budget_usd": "abc"}, "budget_usd", "number"),
    ({"data": "{not json"}, "data", "JSON"),
    ({"prompt": "x" * 1001}, "prompt", "limit is 1,000"),
    ({"prompt": b"\xff\xfe"}, "prompt", "UTF-8"),
    ({"prompt": "x", "complexty": "simple"}, "complexty", "not a field"),
]


async def test_every_bad_input_is_rejected_with_its_reason_and_service_goes_on(
    redis: Redis, names: Names, dispatcher: None
) -> None:
    await _workers(redis, names, *KNOWN_VENDORS)
    for fields, _field, _words in BAD:
        await redis.xadd(names.intake, fields)  # type: ignore[arg-type]
    await redis.xadd(names.intake, {"task_id": "after-bad", "prompt": "Still served?"})
    [(_vendor, task)] = await _routed(redis, names, 1)
    assert task.task_id == "after-bad"

    async def all_rejected() -> list[Any]:
        rows = await redis.xrange(names.rejected)
        return rows if len(rows) == len(BAD) else []

    rows = await eventually(all_rejected, what="every bad entry in the rejected stream")
    for (_id, record), (fields, field, words) in zip(rows, BAD, strict=True):
        rejection = decode_rejection(record)
        assert rejection.field == field, rejection.reason
        assert words in rejection.reason
        assert set(rejection.original) == set(fields)  # the original entry, kept


def _netstring_sha256(fields: dict[bytes, bytes]) -> str:
    h = hashlib.sha256()
    for name, value in fields.items():
        h.update(b"%d:%b,%d:%b," % (len(name), name, len(value), value))
    return h.hexdigest()


async def test_a_task_over_the_size_limits_is_rejected_keeping_an_excerpt_size_and_hash(
    redis: Redis, names: Names, dispatcher: None
) -> None:
    await _workers(redis, names, *KNOWN_VENDORS)
    huge = {b"task_id": b"huge", b"prompt": b"Read this", b"context": b"c" * (5 << 20)}
    long = {b"task_id": b"long", b"prompt": "é".encode() * 30_000}  # over 1,000 characters
    small = {b"task_id": b"small", b"prompt": b"x" * 1001}  # too long too, but a small entry
    for fields in (huge, long, small):
        await redis.xadd(names.intake, fields)  # type: ignore[arg-type]

    async def three() -> list[Any]:
        rows = await redis.xrange(names.rejected)
        return rows if len(rows) == 3 else []

    rows = await eventually(three, what="the three rejections")
    by_task = {decode_rejection(r).excerpt.get("task_id", "small"): r for _id, r in rows}
    for fields, field, limit in ((huge, "entry", "65,536"), (long, "prompt", "1,000")):
        record = by_task[fields[b"task_id"].decode()]
        rejection = decode_rejection(record)
        assert rejection.field == field and f"the limit is {limit}" in rejection.reason
        assert rejection.excerpted and not rejection.original  # nothing to replay
        assert rejection.original_bytes == sum(len(k) + len(v) for k, v in fields.items())
        assert rejection.original_sha256 == _netstring_sha256(fields)
        assert rejection.excerpt["task_id"] == fields[b"task_id"].decode()
        assert sum(len(k) + len(v) for k, v in record.items()) < 3000  # not megabytes
    kept = decode_rejection(by_task["small"])
    assert not kept.excerpted and kept.original == {"task_id": "small", "prompt": "x" * 1001}
    assert int(await redis.memory_usage(names.rejected) or 0) < 64 * 1024


async def test_a_task_id_posted_twice_runs_once(
    redis: Redis, names: Names, dispatcher: None
) -> None:
    await _workers(redis, names, *KNOWN_VENDORS)
    for _ in range(2):
        await redis.xadd(names.intake, {"task_id": "same", "prompt": "Only once"})
    await redis.xadd(names.intake, {"task_id": "marker", "prompt": "after"})

    async def drained() -> bool:
        [group] = await redis.xinfo_groups(names.intake)
        return group["lag"] == 0 and group["pending"] == 0

    await eventually(drained, what="all three intake entries handled")
    ids = [t.task_id for _v, t in await _routed(redis, names, 2)]
    assert sorted(ids) == ["marker", "same"]


async def test_a_task_without_an_id_is_named_by_its_entry_on_every_delivery(
    redis: Redis, names: Names, redis_url: str
) -> None:
    """A dispatcher read two entries and died before acking them; the live one takes them
    over (their second delivery). The one without a task_id is the task its entry id names,
    not a fresh id per decode (which made a redelivered entry a second task and a second
    paid call); both carry their entry id as intake_id."""
    await _workers(redis, names, *KNOWN_VENDORS)
    await redis.xgroup_create(names.intake, Names.DISPATCHER_GROUP, id="0", mkstream=True)
    bare = (await redis.xadd(names.intake, {"prompt": "Research supplier terms"})).decode()
    own = (await redis.xadd(names.intake, {"task_id": "mine", "prompt": "Summarise"})).decode()
    await redis.xreadgroup(Names.DISPATCHER_GROUP, "dispatcher-ghost", {names.intake: ">"})
    async with running_dispatcher(redis_url, names):
        routed = sorted((t.task_id, t.intake_id) for _v, t in await _routed(redis, names, 2))
    assert routed == sorted([(bare, bare), ("mine", own)])
    pending: Any = await redis.xpending(names.intake, Names.DISPATCHER_GROUP)
    assert pending["pending"] == 0
    record = await redis.hgetall(names.task(bare))
    assert record[b"state"] == b"routed"


async def test_a_handed_back_task_avoids_the_failed_vendor_and_live_workers_only(
    redis: Redis, names: Names, dispatcher: None
) -> None:
    """Handed back at the intake, as workers before `swarm:reroutes` did: still routed, so
    a newer dispatcher serves older workers during a rolling upgrade."""
    await _workers(redis, names, "deepseek", "claude")
    task = Task(
        task_id="back",
        prompt="Summarise",
        complexity="simple",
        attempt=2,
        excluded_vendors=("deepseek",),
    )
    await redis.xadd(names.intake, encode(task))  # type: ignore[arg-type]
    [(vendor, routed)] = await _routed(redis, names, 1)
    assert vendor == "claude"
    assert routed.excluded_vendors == ("deepseek",) and routed.attempt == 2


def _handed_back(task: Task, by: str) -> Task:
    """`task` as a worker of `by` hands it back (services/worker/handler.py)."""
    failed = AttemptRecord(vendor=by, model="m", error="context too long")
    return task.model_copy(
        update={
            "attempt": task.attempt + 1,
            "excluded_vendors": (*task.excluded_vendors, by),
            "history": (*task.history, failed),
            "route_model": None,
        }
    )


async def test_a_task_handed_back_by_the_vendor_it_was_routed_to_goes_to_another(
    redis: Redis, names: Names, dispatcher: None
) -> None:
    await _workers(redis, names, "deepseek", "claude")
    posted = Task(task_id="moved", prompt="Summarise", complexity="simple")
    await redis.xadd(names.intake, encode(posted))  # type: ignore[arg-type]
    [(first, routed)] = await _routed(redis, names, 1)
    await redis.xadd(names.reroutes, encode(_handed_back(routed, first)))  # type: ignore[arg-type]
    moved = await _routed(redis, names, 2)
    [(second, again)] = [(v, t) for v, t in moved if t.attempt == 2]
    assert second != first and again.excluded_vendors == (first,)
    assert await redis.hget(names.task("moved"), "vendor") == second.encode()
    assert await redis.get(names.route("moved")) == second.encode()
    assert await redis.xlen(names.rejected) == 0


async def _rejected_reroute(redis: Redis, names: Names) -> Rejection:
    async def one() -> list[Any]:
        return await redis.xrange(names.rejected)

    [(_id, record)] = await eventually(one, what="the reroute in the rejected stream")
    rejection = decode_rejection(record)
    assert rejection.source_stream == names.reroutes
    return rejection


async def test_a_reroute_of_a_task_the_dispatcher_never_routed_is_rejected(
    redis: Redis, names: Names, dispatcher: None
) -> None:
    """A worker's credential cannot post new work: a hand-back of a task id the dispatcher
    has no record of is rejected with the reason, and nothing is routed."""
    await _workers(redis, names, *KNOWN_VENDORS)
    forged = _handed_back(Task(task_id="invented", prompt="Mine the keys"), "claude")
    await redis.xadd(names.reroutes, encode(forged))  # type: ignore[arg-type]
    rejection = await _rejected_reroute(redis, names)
    assert rejection.field == "task_id"
    assert "no task 'invented' was routed here" in rejection.reason
    assert await redis.exists(names.task("invented")) == 0
    assert [v for v in KNOWN_VENDORS if await redis.xlen(names.vendor_tasks(v))] == []


async def test_a_forged_task_record_does_not_make_a_hand_back_new_work(
    redis: Redis, names: Names, dispatcher: None
) -> None:
    """Workers may write task records (their `state`), so a record naming a worker's own
    vendor proves nothing: the dispatcher checks its route key, which only it writes."""
    await _workers(redis, names, *KNOWN_VENDORS)
    await redis.hset(names.task("forged"), mapping={"vendor": "deepseek", "state": "running"})
    forged = _handed_back(Task(task_id="forged", prompt="Mine the keys"), "deepseek")
    await redis.xadd(names.reroutes, encode(forged))  # type: ignore[arg-type]
    rejection = await _rejected_reroute(redis, names)
    assert rejection.field == "task_id"
    assert "no task 'forged' was routed here" in rejection.reason
    assert [v for v in KNOWN_VENDORS if await redis.xlen(names.vendor_tasks(v))] == []


async def test_a_reroute_from_a_vendor_the_task_was_not_routed_to_is_rejected(
    redis: Redis, names: Names, dispatcher: None
) -> None:
    await _workers(redis, names, "deepseek", "claude")
    await redis.xadd(names.intake, {"task_id": "theirs", "prompt": "Summarise", "vendor": "claude"})
    [(_vendor, routed)] = await _routed(redis, names, 1)
    await redis.xadd(names.reroutes, encode(_handed_back(routed, "deepseek")))  # type: ignore[arg-type]
    rejection = await _rejected_reroute(redis, names)
    assert rejection.field == "history"
    assert "handed back by 'deepseek', but task 'theirs' was routed to 'claude'" in (
        rejection.reason
    )
    assert await redis.hget(names.task("theirs"), "state") == b"routed"


async def test_swarm_status_shows_where_a_task_went(
    redis: Redis, redis_url: str, names: Names, dispatcher: None
) -> None:
    await _workers(redis, names, *KNOWN_VENDORS)
    await redis.xadd(names.intake, {"task_id": "where", "prompt": "Where am I?"})
    [(vendor, _task)] = await _routed(redis, names, 1)
    env = {**os.environ, "REDIS_URL": redis_url, "SWARM_NAMESPACE": names.namespace}
    res = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli.main", "status", "where", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert res.returncode == 0, res.stderr
    record = json.loads(res.stdout)["record"]  # the dispatcher's part of the task's view
    assert record["state"] == "routed" and record["vendor"] == vendor
    missing = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli.main", "status", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert missing.returncode == 2 and "no record of task 'nope'" in missing.stderr


def test_rejection_metric_labels_stay_bounded_whatever_the_poster_sends() -> None:
    from services.dispatcher.service import rejection_label  # noqa: PLC0415

    assert rejection_label("urgency") == "urgency"
    assert rejection_label("history.0.vendor") == "history.0.vendor"
    assert rejection_label("") == ""
    assert rejection_label("complexty") == "unknown"  # a typo the poster made
    assert rejection_label("made-up-" + "z" * 500) == "unknown"
    assert rejection_label("history." + "9" * 100) == "unknown"  # too long for a label


async def test_headers_ride_on_the_routed_task_and_the_no_route_finding(
    redis: Redis, names: Names, dispatcher: None
) -> None:
    """`headers` (docs/protocol.md section 10) are carried, never routed on; the trace
    context keeps its trace id and state, with the dispatcher's span as the parent."""
    await _workers(redis, names, "deepseek")
    posted = {"traceparent": TRACEPARENT, "tracestate": "congo=t61", "x-team": "search"}
    fields = {"prompt": "Summarise", "complexity": "simple", "headers": json.dumps(posted)}
    await redis.xadd(names.intake, {**fields, "task_id": "routed"})  # type: ignore[arg-type]
    [(vendor, routed)] = await _routed(redis, names, 1)
    assert vendor == "deepseek"
    _same_trace_new_parent(routed.headers, posted)
    nowhere = {**fields, "task_id": "nowhere", "excluded_vendors": json.dumps(KNOWN_VENDORS)}
    await redis.xadd(names.intake, nowhere)  # type: ignore[arg-type]

    async def refused() -> list[Finding]:
        return [decode(Finding, f) for _id, f in await redis.xrange(names.findings)]

    [finding] = await eventually(refused, timeout=20, what="the no-route finding")
    assert finding.task_id == "nowhere" and finding.worker_id == "dispatcher"
    _same_trace_new_parent(finding.headers, posted)


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _same_trace_new_parent(carried: dict[str, str], posted: dict[str, str]) -> None:
    """Other headers as posted; the same trace and tracestate under another parent span."""
    was, now = trace_of(posted), trace_of(carried)
    assert was is not None and now is not None, carried
    assert (now.trace_id, now.state, now.flags) == (was.trace_id, was.state, was.flags)
    assert now.span_id != was.span_id
    assert {k: v for k, v in carried.items() if k not in ("traceparent",)} == {
        k: v for k, v in posted.items() if k != "traceparent"
    }
