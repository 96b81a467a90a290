"""`swarm post`: what lands on the intake stream, what a person is told, and --wait."""

from __future__ import annotations

import json
from pathlib import Path

from redis.asyncio import Redis

from shared.bus.findings import run_progress
from shared.protocol import Complexity, Names, Status, Task, decode
from tests.cli.conftest import Swarm, intake_ids
from tests.collector.conftest import StartCollector, make_finding, publish
from tests.waiting import eventually
from tests.worker.conftest import StartWorker


async def _intake(redis: Redis, names: Names) -> list[Task]:
    return [decode(Task, fields) for _id, fields in await redis.xrange(names.intake)]


async def test_one_task_is_posted_as_the_dispatcher_reads_it(
    swarm: Swarm, redis: Redis, names: Names
) -> None:
    res = await swarm(
        "post", "Summarise RFC 9110 section 9.", "--type", "code_review", "--complexity",
        "simple", "--vendor", "deepseek", "--model", "deepseek-chat", "--shard", "history",
        "--run", "r-one", "--budget", "0.25",
    )  # fmt: skip
    assert res.code == 0, res.err
    [task] = await _intake(redis, names)
    assert res.out.splitlines()[0] == f"posted {task.task_id}"
    assert f"1 task(s) on {names.intake}" in res.out
    assert "run r-one: 1 task(s) expected" in res.out
    assert task.prompt == "Summarise RFC 9110 section 9."
    assert task.task_type == "code_review"
    assert task.complexity is Complexity.SIMPLE
    assert (task.vendor, task.model, task.parent_shard) == ("deepseek", "deepseek-chat", "history")
    assert (task.run_id, task.budget_usd) == ("r-one", 0.25)
    [(_id, fields)] = await redis.xrange(names.intake)
    assert set(fields) == {b"data"}  # the data form, one JSON field
    assert (await run_progress(redis, names, "r-one")).expected == 1


async def test_json_output_names_the_task_and_its_entry(
    swarm: Swarm, redis: Redis, names: Names
) -> None:
    res = await swarm("post", "Classify this ticket.", "--task-id", "t-json", "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["stream"] == names.intake
    assert out["tasks"] == [{"task_id": "t-json", "entry_id": (await intake_ids(redis, names))[0]}]


async def test_a_bad_value_is_one_line_naming_the_field_and_nothing_is_posted(
    swarm: Swarm, redis: Redis, names: Names
) -> None:
    res = await swarm("post", "Classify this ticket.", "--complexity", "hard")
    assert res.code == 2
    [line] = res.err.strip().splitlines()
    assert line.startswith("swarm: error: invalid task, nothing posted: complexity (--complexity)")
    assert "'simple'" in line and "Traceback" not in res.err

    res = await swarm("post", "   ", "--budget", "-1")
    assert res.code == 2
    [line] = res.err.strip().splitlines()
    assert "prompt: must not be empty" in line and "budget_usd (--budget)" in line
    assert await redis.exists(names.intake) == 0


async def test_a_file_posts_the_good_tasks_and_reports_the_bad_lines(
    swarm: Swarm, redis: Redis, names: Names, tmp_path: Path
) -> None:
    workload = tmp_path / "tasks.jsonl"
    workload.write_text(
        '{"prompt": "Research supplier terms", "task_id": "t-1"}\n'
        '{"prompt": "Classify this ticket.", "complexty": "simple"}\n'
        "\n"
        '{"prompt": "Summarise the contracts", "task_id": "t-2", "urgency": "high"}\n'
        "not json at all\n"
    )
    res = await swarm("post", "--file", str(workload), "--run", "batch-1")
    assert res.code == 1  # some lines were skipped
    assert "posted t-1 (line 1)" in res.out and "posted t-2 (line 4)" in res.out
    assert "run batch-1: 2 task(s) expected" in res.out
    skipped = res.err.strip().splitlines()
    assert skipped[0] == "swarm: skipped line 2: complexty: is not a field of Task"
    assert skipped[1].startswith("swarm: skipped line 5: is not valid JSON")
    tasks = await _intake(redis, names)
    assert [(t.task_id, t.run_id) for t in tasks] == [("t-1", "batch-1"), ("t-2", "batch-1")]
    assert (await run_progress(redis, names, "batch-1")).expected == 2

    # a second batch of the same run adds to what the run expects
    again = tmp_path / "more.json"
    again.write_text(json.dumps([{"prompt": "One more"}]))
    res = await swarm("post", "--file", str(again), "--run", "batch-1", "--vendor", "gemini")
    assert res.code == 0, res.err
    assert "run batch-1: 3 task(s) expected" in res.out
    assert (await _intake(redis, names))[-1].vendor == "gemini"


async def test_a_file_with_no_good_task_posts_nothing(
    swarm: Swarm, redis: Redis, names: Names, tmp_path: Path
) -> None:
    workload = tmp_path / "bad.jsonl"
    workload.write_text('{"promt": "typo"}\n')
    res = await swarm("post", "--file", str(workload), "--run", "r-bad")
    assert res.code == 2
    assert res.err.strip().splitlines() == [
        "swarm: skipped line 1: prompt: is required; promt: is not a field of Task",
        f"swarm: error: nothing posted: no valid task in {workload}",
    ]
    assert await redis.exists(names.intake, names.run_info("r-bad")) == 0


async def test_wait_prints_the_finding_once_the_collector_has_it(
    swarm: Swarm, redis: Redis, names: Names, start_collector: StartCollector
) -> None:
    await start_collector()
    proc = await swarm.start("post", "Research supplier terms", "--task-id", "t-wait", "--wait")
    await eventually(lambda: intake_ids(redis, names), timeout=30, what="the posted task")
    await publish(
        redis,
        names,
        make_finding(
            task_id="t-wait",
            summary="Net 30 for every supplier since 2021.",
            input_tokens=1840,
            output_tokens=212,
            cost_usd=0.00073,
            latency_ms=4210.0,
        ),
    )
    res = await swarm.finish(proc)
    assert res.code == 0, res.err
    assert "posted t-wait" in res.out
    assert "result       ok  deepseek/deepseek-chat  by worker-deepseek-1" in res.out
    assert "tokens       1,840 in, 212 out" in res.out
    assert "cost         $0.000730" in res.out
    assert "latency      4.21 s" in res.out
    assert res.out.rstrip().endswith("answer:\n  Net 30 for every supplier since 2021.")


async def test_wait_times_out_with_what_is_still_pending(swarm: Swarm) -> None:
    res = await swarm("post", "Nobody will answer this", "--task-id", "t-late", "--wait",
                      "--timeout", "1")  # fmt: skip
    assert res.code == 1
    assert "posted t-late" in res.out
    assert "swarm: timed out after 1 s: task t-late (not routed yet: is the dispatcher " in res.err
    assert res.err.rstrip().endswith("still pending: t-late")


async def test_wait_for_a_run_prints_its_totals(
    swarm: Swarm,
    redis: Redis,
    names: Names,
    tmp_path: Path,
    start_collector: StartCollector,
) -> None:
    await start_collector()
    workload = tmp_path / "run.jsonl"
    workload.write_text('{"prompt": "a", "task_id": "r-a"}\n{"prompt": "b", "task_id": "r-b"}\n')
    proc = await swarm.start("post", "--file", str(workload), "--run", "nightly", "--wait")

    async def two() -> bool:
        return len(await intake_ids(redis, names)) == 2

    await eventually(two, timeout=30, what="the posted tasks")
    await publish(
        redis,
        names,
        make_finding(task_id="r-a", run_id="nightly", summary="answer a", cost_usd=0.002),
        make_finding(task_id="r-b", run_id="nightly", summary="answer b", cost_usd=0.001),
    )
    res = await swarm.finish(proc)
    assert res.code == 0, res.err
    assert "run nightly: 2 of 2 finished (2 ok, 0 failed), complete" in res.out
    assert "answer a" in res.out and "answer b" in res.out
    assert "total: 2 tasks, 2 ok, 0 failed; 200 tokens in, 40 out; $0.003000" in res.out


async def test_wait_through_the_whole_swarm(
    swarm: Swarm,
    redis: Redis,
    names: Names,
    dispatcher: None,
    start_worker: StartWorker,
    start_collector: StartCollector,
) -> None:
    """Dispatcher, a deepseek worker on the simulator and the collector: post --wait."""
    await start_worker("deepseek")
    await start_collector()
    res = await swarm(
        "post", "Research supplier payment terms 2021", "--vendor", "deepseek",
        "--task-id", "t-e2e", "--wait", "--timeout", "60", "--json",
    )  # fmt: skip
    assert res.code == 0, res.err
    out = json.loads(res.out)
    result = out["result"]
    assert result["record"]["state"] == "done"
    assert result["summary"]["status"] == Status.OK.value
    assert result["summary"]["vendor"] == "deepseek"
    assert result["summary"]["input_tokens"] > 0 and result["summary"]["cost_usd"] > 0
    [finding] = result["findings"]
    assert finding["task_id"] == "t-e2e" and finding["summary"]
