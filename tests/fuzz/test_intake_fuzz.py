"""Anything anyone can XADD to the intake stream, against a running dispatcher.

Whatever the entry (MBs, bytes that are not UTF-8, NUL bytes, JSON nested past any limit,
wrong types, unknown or empty field names, NaN and infinity), the dispatcher keeps running;
an entry that is not a task lands in the rejected stream at its first delivery with a reason
and its fields byte-exact; an entry that is a task after all is routed, refused with a
reason, or recognised as a task id already taken; and the good tasks posted around the bad
ones are routed.
"""

from __future__ import annotations

import uuid

from hypothesis import example, given
from hypothesis import strategies as st
from redis.asyncio import Redis

from shared.protocol import KNOWN_VENDORS, Names, Task, decode, encode, encode_data
from tests.fuzz.conftest import Running
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

GOOD_PROMPT = "Summarise the supplier contracts in three bullet points."
VALID = encode(Task(task_id="t-1", prompt="Classify this ticket.", complexity="simple"))


def _good(n: int) -> tuple[str, Fields]:
    task = Task(task_id=f"good-{uuid.uuid4().hex[:12]}", prompt=GOOD_PROMPT)
    fields = encode(task) if n % 2 else encode_data(task)  # both forms
    return task.task_id, {k.encode(): v.encode() for k, v in fields.items()}


async def _routed(redis: Redis, names: Names, since: str) -> dict[str, Task]:
    """Tasks routed to any vendor's stream since entry id `since`, by task id."""
    out: dict[str, Task] = {}
    for vendor in KNOWN_VENDORS:
        for _id, fields in await redis.xrange(names.vendor_tasks(vendor), min=since):
            task = decode(Task, fields)
            out[task.task_id] = task
    return out


async def _owner(redis: Redis, names: Names, task: Task) -> str | None:
    """The intake entry that claimed this task id and attempt, if any did."""
    raw = await redis.hget(names.task(task.task_id), f"entry:{task.attempt}")  # type: ignore[misc]
    return raw.decode() if raw else None


@fuzz_settings(max_examples=50)
@given(bad=st.lists(entries(Task, VALID), min_size=1, max_size=6))
# Found by this test (JSON the stdlib parser raises on with something other than a
# JSONDecodeError); each must be rejected at once like any other bad entry.
@example(bad=[{b"data": deep_json(100_000, 0).encode()}])
@example(bad=[{b"prompt": b"x", b"excluded_vendors": deep_json(50_000, 0).encode()}])
@example(bad=[{b"data": b'{"prompt": "x", "attempt": ' + b"9" * 5000 + b"}"}])
@example(bad=[{b"prompt": b"x", b"history": b"9" * 5000}])
# A field name that is not UTF-8 is kept byte-exact, even beside its escaped spelling.
@example(bad=[{b"\xff": b"a", b"\\xff": b"b", b"prompt": b"x"}])
async def test_the_dispatcher_rejects_any_bad_entry_and_routes_the_rest(
    redis: Redis, names: Names, dispatcher: Running, bad: list[Fields]
) -> None:
    goods = [_good(n) for n in range(len(bad) + 1)]
    batch: list[Fields] = [goods[0][1]]
    for entry, (_id, good) in zip(bad, goods[1:], strict=True):
        batch += [entry, good]  # each bad entry between two good tasks
    ids = await post(redis, names.intake, batch)

    await drained(redis, names.intake, Names.DISPATCHER_GROUP)
    dispatcher.alive()

    rejected = await records_by_source(redis, names.rejected, ids[0])
    dead = await records_by_source(redis, names.dead_letter, ids[0])
    routed = await _routed(redis, names, ids[0])
    for task_id, _fields in goods:
        assert routed[task_id].prompt == GOOD_PROMPT, "a good task next to bad ones is routed"
    routed_from = {await _owner(redis, names, t) for t in routed.values()}

    for entry_id, fields in zip(ids[1::2], bad, strict=True):
        assert entry_id not in dead, "a bad intake entry goes to the rejected stream"
        records = rejected.get(entry_id, [])
        if not decodes(Task, fields):
            assert len(records) == 1, f"not rejected exactly once: {fields!r:.300}"
            check_record(
                records[0], fields, source_stream=names.intake, group=Names.DISPATCHER_GROUP
            )
            continue
        # A well-formed task after all: refused with a reason, routed, or a duplicate id.
        if records:
            assert len(records) == 1
            check_record(
                records[0], fields, source_stream=names.intake, group=Names.DISPATCHER_GROUP
            )
        elif entry_id not in routed_from:
            task = decode(Task, fields)
            assert "task_id" in task.model_fields_set, f"entry {entry_id} vanished: {fields!r}"
            owner = await _owner(redis, names, task)
            assert owner not in (None, entry_id), f"entry {entry_id} vanished: {fields!r}"
