"""Malformed entries on the swarm's internal streams, against the service that reads each.

A worker fed malformed tasks on its vendor stream, the collector fed malformed findings, a
mega-shard fed malformed queries: each keeps running, parks every bad entry in the
dead-letter stream at its first delivery with a reason and its fields byte-exact, and
handles the good entries posted around them (a finding, a stored finding, a reply).
"""

from __future__ import annotations

import uuid

from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import BaseModel
from redis.asyncio import Redis

from shared.protocol import (
    ContextQuery,
    ContextReply,
    Finding,
    Names,
    Status,
    Task,
    decode,
    encode,
)
from tests.fuzz.conftest import SHARD, WORKER_VENDOR, Running
from tests.fuzz.entries import (
    Fields,
    check_record,
    decodes,
    deep_json,
    drained,
    entries,
    fuzz_settings,
    post,
    records_by_source,
)

ASKER = "fuzz-asker"
TEMPLATE_TASK = encode(Task(task_id="t-1", prompt="Classify this ticket.", complexity="simple"))
TEMPLATE_FINDING = encode(
    Finding(
        finding_id="finding-1",
        task_id="t-1",
        worker_id="worker-deepseek-1",
        vendor="deepseek",
        model="deepseek-chat",
        summary="Billing.",
        cost_usd=0.001,
    )
)
TEMPLATE_QUERY = encode(
    ContextQuery(
        query_id="query-1",
        requester_worker_id=ASKER,
        target_shard=SHARD,
        query="What is the retry policy?",
        reply_to="replies-of-nobody",
    )
)
# Shapes the stdlib JSON parser refuses with something other than a JSONDecodeError (found
# by the intake test): every reader must park them at once too.
JSON_LIMITS: list[Fields] = [
    {b"data": deep_json(100_000, 1).encode()},
    {b"data": b'{"schema_version": ' + b"9" * 5000 + b"}"},
]


def _malformed(model: type[BaseModel], template: dict[str, str]) -> st.SearchStrategy[Fields]:
    return entries(model, template).filter(lambda e: not decodes(model, e))


def _flat(message: BaseModel) -> Fields:
    return {k.encode(): v.encode() for k, v in encode(message).items()}


def _interleave(goods: list[Fields], bad: list[Fields]) -> list[Fields]:
    batch = [goods[0]]
    for entry, good in zip(bad, goods[1:], strict=True):
        batch += [entry, good]
    return batch


async def _parked(
    redis: Redis, names: Names, ids: list[str], bad: list[Fields], *, stream: str, group: str
) -> None:
    """Every bad entry (the odd positions of the batch) is parked once, with its reason."""
    dead = await records_by_source(redis, names.dead_letter, ids[0])
    for entry_id, fields in zip(ids[1::2], bad, strict=True):
        records = dead.get(entry_id, [])
        assert len(records) == 1, f"not dead-lettered exactly once: {fields!r:.300}"
        check_record(records[0], fields, source_stream=stream, group=group)
    for good_id in ids[0::2]:
        assert good_id not in dead, "a good entry next to bad ones is handled, not parked"


@fuzz_settings(max_examples=25)
@given(bad=st.lists(_malformed(Task, TEMPLATE_TASK), min_size=1, max_size=5))
@example(bad=JSON_LIMITS)
@example(bad=[{b"prompt": b"x", b"history": deep_json(50_000, 0).encode()}])
async def test_a_worker_parks_malformed_tasks_and_answers_the_rest(
    redis: Redis, names: Names, worker: Running, bad: list[Fields]
) -> None:
    stream, group = names.vendor_tasks(WORKER_VENDOR), Names.worker_group(WORKER_VENDOR)
    tasks = [
        Task(task_id=f"good-{uuid.uuid4().hex[:12]}", prompt="Classify this ticket: refund.")
        for _ in range(len(bad) + 1)
    ]
    ids = await post(redis, stream, _interleave([_flat(t) for t in tasks], bad))

    await drained(redis, stream, group)
    worker.alive()

    await _parked(redis, names, ids, bad, stream=stream, group=group)
    found = {
        f.task_id: f
        for f in (decode(Finding, raw) for _id, raw in await redis.xrange(names.findings))
    }
    for task in tasks:
        finding = found[task.task_id]
        assert finding.status is Status.OK and finding.summary, "a good task is answered"
        assert finding.vendor == WORKER_VENDOR


@fuzz_settings(max_examples=25)
@given(bad=st.lists(_malformed(Finding, TEMPLATE_FINDING), min_size=1, max_size=5))
@example(bad=JSON_LIMITS)
@example(bad=[{b"task_id": b"t", b"sources": deep_json(50_000, 0).encode()}])
async def test_the_collector_parks_malformed_findings_and_stores_the_rest(
    redis: Redis, names: Names, collector: Running, bad: list[Fields]
) -> None:
    good = [
        Finding(
            finding_id=f"finding-{uuid.uuid4().hex[:12]}",
            task_id=f"good-{uuid.uuid4().hex[:12]}",
            worker_id="worker-deepseek-1",
            vendor="deepseek",
            model="deepseek-chat",
            summary="Billing question.",
            input_tokens=120,
            output_tokens=8,
            cost_usd=0.0001,
        )
        for _ in range(len(bad) + 1)
    ]
    ids = await post(redis, names.findings, _interleave([_flat(f) for f in good], bad))

    await drained(redis, names.findings, Names.COLLECTOR_GROUP)
    collector.alive()

    await _parked(redis, names, ids, bad, stream=names.findings, group=Names.COLLECTOR_GROUP)
    for f in good:
        stored = await redis.hget(names.task_findings(f.task_id), f.finding_id)  # type: ignore[misc]
        assert stored is not None, "a good finding is stored"
        assert Finding.model_validate_json(stored) == f


@fuzz_settings(max_examples=25)
@given(bad=st.lists(_malformed(ContextQuery, TEMPLATE_QUERY), min_size=1, max_size=5))
@example(bad=JSON_LIMITS)
async def test_a_shard_parks_malformed_queries_and_answers_the_rest(
    redis: Redis, names: Names, shard: Running, bad: list[Fields]
) -> None:
    stream = names.shard_queries(SHARD)
    queries = [
        ContextQuery(
            query_id=f"good-{uuid.uuid4().hex[:12]}",
            requester_worker_id=ASKER,
            target_shard=SHARD,
            query="How are 429s retried?",
            max_response_tokens=64,
            reply_to=names.replies(ASKER),
        )
        for _ in range(len(bad) + 1)
    ]
    ids = await post(redis, stream, _interleave([_flat(q) for q in queries], bad))

    await drained(redis, stream, Names.MEGASHARD_GROUP)
    shard.alive()

    await _parked(redis, names, ids, bad, stream=stream, group=Names.MEGASHARD_GROUP)
    replies = {
        r.query_id: r
        for r in (decode(ContextReply, raw) for _id, raw in await redis.xrange(queries[0].reply_to))
    }
    for q in queries:
        reply = replies[q.query_id]
        assert reply.status is Status.OK and reply.answer, "a good query is answered"
        assert reply.shard_id == SHARD
