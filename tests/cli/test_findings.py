"""`swarm findings TASK_ID` and `swarm findings --run RUN`."""

from __future__ import annotations

import json

from redis.asyncio import Redis

from shared.bus.findings import expect_run
from shared.protocol import Names
from tests.cli.conftest import Swarm
from tests.collector.conftest import StartCollector, make_finding, publish, wait_handled


async def test_every_finding_of_a_task_newest_last(
    swarm: Swarm, redis: Redis, names: Names, start_collector: StartCollector
) -> None:
    await start_collector()
    await publish(
        redis,
        names,
        make_finding(
            task_id="t-f", status="failed", error="context window exceeded", summary="",
            vendor="gemini", model="gemini-2.5-flash", cost_usd=None,
        ),
        make_finding(
            task_id="t-f", summary="The counter is only touched under the lock.",
            input_tokens=1840, output_tokens=212, cost_usd=0.00073, latency_ms=4210.5,
            sources=("app.py:41",),
        ),
    )  # fmt: skip
    await wait_handled(redis, names)
    res = await swarm("findings", "t-f")
    assert res.code == 0, res.err
    lines = res.out.splitlines()
    assert lines[0] == "task t-f: 2 finding(s), newest last"
    failed = next(i for i, ln in enumerate(lines) if "  failed  gemini/gemini-2.5-flash" in ln)
    ok = next(i for i, ln in enumerate(lines) if "  ok      deepseek/deepseek-chat" in ln)
    assert failed < ok
    assert "unpriced" in lines[failed]
    assert lines[failed + 1] == "    error: context window exceeded"
    assert "2,052 tokens (1,840 in, 212 out, 0 cached)  $0.000730  4.21 s  attempt 1" in lines[ok]
    assert lines[ok + 1] == "    The counter is only touched under the lock."
    assert lines[ok + 2] == "    sources: app.py:41"

    res = await swarm("findings", "t-f", "--json")
    assert res.code == 0, res.err
    data = json.loads(res.out)
    assert data["summary"]["status"] == "ok" and data["summary"]["cost_usd"] == 0.00073
    assert [f["status"] for f in data["findings"]] == ["failed", "ok"]


async def test_a_task_without_findings_says_where_it_is(
    swarm: Swarm, redis: Redis, names: Names
) -> None:
    await redis.hset(names.task("t-r"), mapping={"state": "routed", "vendor": "claude",
                                                 "model": "claude-haiku-4-5"})  # fmt: skip
    res = await swarm("findings", "t-r")
    assert res.code == 1
    assert (
        res.out.strip() == "no findings of task t-r yet (state: routed at claude/claude-haiku-4-5)"
    )


async def test_a_run_shows_progress_and_one_line_per_task(
    swarm: Swarm, redis: Redis, names: Names, start_collector: StartCollector
) -> None:
    await start_collector()
    await expect_run(redis, names, "nightly", 3)
    # One after the other: a run lists its tasks in the order they finished, and two
    # findings published together may be stored in either order.
    first = make_finding(task_id="n-1", run_id="nightly", summary="first answer", cost_usd=0.002)
    await publish(redis, names, first)
    await wait_handled(redis, names)
    await publish(
        redis,
        names,
        make_finding(task_id="n-2", run_id="nightly", status="failed", error="quota exhausted",
                     summary=""),
    )  # fmt: skip
    await wait_handled(redis, names)
    res = await swarm("findings", "--run", "nightly")
    assert res.code == 0, res.err
    lines = res.out.splitlines()
    assert lines[0] == "run nightly: 2 of 3 finished (1 ok, 1 failed), 1 pending"
    assert lines[1].split()[:3] == ["TASK", "STATUS", "VENDOR/MODEL"]
    assert lines[2].split()[:3] == ["n-1", "ok", "deepseek/deepseek-chat"]
    assert lines[2].endswith("first answer")
    assert lines[3].split()[:2] == ["n-2", "failed"] and lines[3].endswith("quota exhausted")
    assert lines[4].startswith("total: 2 tasks, 1 ok, 1 failed;")

    res = await swarm("findings", "--run", "nightly", "--json")
    data = json.loads(res.out)
    assert (data["expected"], data["finished"], data["pending"], data["complete"]) == (
        3,
        2,
        1,
        False,
    )
    assert [(t["task_id"], t["status"], t["answer"]) for t in data["tasks"]] == [
        ("n-1", "ok", "first answer"),
        ("n-2", "failed", "quota exhausted"),
    ]


async def test_task_and_run_are_one_or_the_other(swarm: Swarm) -> None:
    res = await swarm("findings")
    assert res.code == 2
    assert res.err.strip() == "swarm: error: give a TASK_ID or --run RUN (one of them)"


async def test_help_for_every_new_command(swarm: Swarm) -> None:
    for args in (("post",), ("findings",), ("dlq",), ("dlq", "list"), ("dlq", "replay")):
        res = await swarm(*args, "--help")
        assert res.code == 0, args
        assert res.out.startswith(f"usage: swarm {' '.join(args)}")
    res = await swarm("dlq", "replay", "--help")
    assert "still malformed simply lands in the rejected stream again" in " ".join(res.out.split())
