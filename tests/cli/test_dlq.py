"""`swarm dlq list` and `swarm dlq replay`."""

from __future__ import annotations

import json

from redis.asyncio import Redis

from shared.protocol import (
    Names,
    Rejection,
    Task,
    decode,
    decode_rejection,
    encode,
    encode_rejection,
)
from tests.cli.conftest import Swarm
from tests.waiting import eventually


async def _reject(redis: Redis, names: Names, original: dict[str, str], **why: str) -> str:
    rejection = Rejection(
        reason=why.get("reason", "no route: every candidate is over budget"),
        field=why.get("field", ""),
        source_stream=why.get("source_stream", names.intake),
        source_id=why.get("source_id", "1700000000000-0"),
        consumer="dispatcher-test",
        group="dispatcher",
    )
    stream = names.dead_letter if why.get("dlq") else names.rejected
    entry = await redis.xadd(stream, encode_rejection(rejection, original))  # type: ignore[arg-type]
    return entry.decode()


async def test_list_shows_the_dispatchers_reason_for_a_rejected_task(
    swarm: Swarm, redis: Redis, names: Names, dispatcher: None
) -> None:
    await redis.xadd(names.intake, {"prompt": "Classify this ticket.", "complexty": "simple"})

    async def rejected() -> int:
        return int(await redis.xlen(names.rejected))

    await eventually(rejected, timeout=20, what="the rejection")
    res = await swarm("dlq", "list", "--stream", "rejected")
    assert res.code == 0, res.err
    lines = res.out.splitlines()
    assert lines[0] == f"{names.rejected}: 1 record(s); the newest 1, oldest first"
    assert f"from {names.intake} " in lines[2] and "1 delivery, by dispatcher-test" in lines[2]
    assert lines[3] == "  reason:   complexty: is not a field of Task"
    assert lines[4] == "  field:    complexty"
    assert lines[5] == '  original: prompt="Classify this ticket." complexty="simple"'

    res = await swarm("dlq", "list", "--stream", "rejected", "--json")
    [record] = json.loads(res.out)
    assert record["field"] == "complexty" and record["source_stream"] == names.intake
    assert record["original"] == {"prompt": "Classify this ticket.", "complexty": "simple"}

    res = await swarm("dlq", "list")
    assert res.code == 0 and res.out.strip() == f"{names.dead_letter}: empty"


async def test_replay_moves_a_record_back_to_its_stream_and_out_of_the_dlq(
    swarm: Swarm, redis: Redis, names: Names
) -> None:
    keep = await _reject(redis, names, {"prompt": "stays"})
    original = {"prompt": "Research supplier terms", "task_id": "t-back", "budget_usd": "0.01"}
    record = await _reject(redis, names, original, source_id="1700000000001-0")
    # the dispatcher had claimed the task id for the rejected entry: the replay releases it
    await redis.hset(names.task("t-back"), mapping={"state": "rejected",
                                                    "entry:1": "1700000000001-0"})  # fmt: skip
    res = await swarm("dlq", "replay", record, "--stream", "rejected")
    assert res.code == 0, res.err
    [(new_id, fields)] = await redis.xrange(names.intake)
    assert res.out.splitlines() == [
        f"replayed {record} -> {names.intake} as {new_id.decode()} (task t-back)",
        f"replayed 1 record(s) from {names.rejected}",
    ]
    assert {k.decode(): v.decode() for k, v in fields.items()} == original
    assert decode(Task, fields).task_id == "t-back"
    assert [i.decode() for i, _ in await redis.xrange(names.rejected)] == [keep]
    assert await redis.hget(names.task("t-back"), "entry:1") is None
    assert await redis.hget(names.task("t-back"), "state") == b"rejected"

    res = await swarm("dlq", "replay", record, "--stream", "rejected")
    assert res.code == 1
    assert f"not replayed: {record}: not in {names.rejected} (already replayed?" in res.err


async def test_replay_of_a_given_up_task_releases_its_done_marker(
    swarm: Swarm, redis: Redis, names: Names
) -> None:
    queue = names.vendor_tasks("deepseek")
    task = Task(task_id="t-quota", prompt="Summarise the contracts", vendor="deepseek")
    record = await _reject(redis, names, encode(task), reason="quota exhausted", dlq="1",
                           source_stream=queue)  # fmt: skip
    await redis.set(names.task_done("deepseek", "t-quota"), "finding_1")
    await redis.hset(names.task("t-quota"), mapping={"state": "failed", "finding_id": "finding_1"})
    res = await swarm("dlq", "replay", "--all", "--json")
    assert res.code == 0, res.err
    [replayed] = json.loads(res.out)["replayed"]
    assert (replayed["id"], replayed["stream"], replayed["task_id"]) == (record, queue, "t-quota")
    [(_id, fields)] = await redis.xrange(queue)
    assert decode(Task, fields) == task
    assert await redis.exists(names.task_done("deepseek", "t-quota")) == 0
    assert await redis.xlen(names.dead_letter) == 0


async def test_replay_of_a_refused_hand_back_goes_to_the_intake(
    swarm: Swarm, redis: Redis, names: Names
) -> None:
    """A hand-back the dispatcher did not accept (no record of the task): replayed, the
    operator vouches for it, so it goes to the intake (nobody but workers adds to
    swarm:reroutes, and the console may not)."""
    task = Task(task_id="t-orphan", prompt="Summarise the contracts", attempt=2)
    record = await _reject(redis, names, encode(task), reason="task_id: no task 't-orphan'",
                           field="task_id", source_stream=names.reroutes)  # fmt: skip
    res = await swarm("dlq", "replay", record, "--stream", "rejected", "--json")
    assert res.code == 0, res.err
    [replayed] = json.loads(res.out)["replayed"]
    assert (replayed["stream"], replayed["task_id"]) == (names.intake, "t-orphan")
    [(_id, fields)] = await redis.xrange(names.intake)
    assert decode(Task, fields) == task
    assert await redis.xlen(names.reroutes) == 0


async def test_a_still_malformed_task_lands_in_rejected_again(
    swarm: Swarm, redis: Redis, names: Names, dispatcher: None
) -> None:
    record = await _reject(redis, names, {"prompt": "Classify this ticket.", "complexty": "x"},
                           reason="complexty: is not a field of Task")  # fmt: skip
    res = await swarm("dlq", "replay", "--all", "--stream", "rejected")
    assert res.code == 0, res.err

    async def rejected_again() -> list[Rejection]:
        entries = await redis.xrange(names.rejected)
        return [decode_rejection(f) for i, f in entries if i.decode() != record]

    [again] = await eventually(rejected_again, timeout=20, what="the second rejection")
    assert again.original == {"prompt": "Classify this ticket.", "complexty": "x"}
    assert record not in [i.decode() for i, _ in await redis.xrange(names.rejected)]


async def test_dry_run_changes_nothing(swarm: Swarm, redis: Redis, names: Names) -> None:
    first = await _reject(redis, names, {"prompt": "one"})
    second = await _reject(redis, names, {"prompt": "two"})
    before = await redis.xrange(names.rejected)
    res = await swarm("dlq", "replay", "--all", "--stream", "rejected", "--dry-run")
    assert res.code == 0, res.err
    assert res.out.splitlines() == [
        f"would replay {first} -> {names.intake}",
        f"would replay {second} -> {names.intake}",
        f"would replay 2 record(s) from {names.rejected}",
    ]
    assert await redis.xrange(names.rejected) == before
    assert await redis.exists(names.intake) == 0


async def test_replay_needs_ids_or_all(swarm: Swarm) -> None:
    res = await swarm("dlq", "replay")
    assert res.code == 2
    assert res.err.strip() == "swarm: error: give record IDs or --all (one of them)"


async def test_a_record_refused_for_its_size_is_listed_with_its_excerpt_and_not_replayed(
    swarm: Swarm, redis: Redis, names: Names
) -> None:
    huge = {"task_id": "t-huge", "prompt": "Read this", "context": "c" * 100_000}
    rejection = Rejection(
        reason="entry: is 100,035 bytes; the limit is 65,536 (SWARM_MAX_TASK_BYTES)",
        field="entry",
        source_stream=names.intake,
        source_id="1700000000002-0",
        consumer="dispatcher-test",
        group="dispatcher",
    )
    fields = encode_rejection(rejection, huge, excerpt=True)
    record = (await redis.xadd(names.rejected, fields)).decode()  # type: ignore[arg-type]

    res = await swarm("dlq", "list", "--stream", "rejected")
    assert res.code == 0, res.err
    [excerpt] = [line for line in res.out.splitlines() if line.startswith("  excerpt:")]
    assert 'task_id="t-huge"' in excerpt and "of 100,035 bytes, sha256 " in excerpt
    assert excerpt.endswith("not replayable)")

    res = await swarm("dlq", "replay", record, "--stream", "rejected")
    assert res.code == 1
    assert f"not replayed: {record}: refused for its size (100,035 bytes)" in res.err
    assert "not replayable" in res.err
    assert int(await redis.xlen(names.intake)) == 0  # nothing posted back
    assert int(await redis.xlen(names.rejected)) == 1  # and the record kept
