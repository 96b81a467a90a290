"""`swarm status` (the fleet, streams, backlog, cost) and `swarm status TASK_ID`."""

from __future__ import annotations

import json

from redis.asyncio import Redis

from services.cli.redis_finder import private_redis_server
from shared.bus import Heartbeat
from shared.protocol import Names, Rejection, encode_rejection
from tests.cli.conftest import Swarm
from tests.collector.conftest import StartCollector, make_finding, publish, wait_handled


def _line(out: str, first: str) -> list[str]:
    [line] = [ln for ln in out.splitlines() if ln.startswith(first + " ")]
    return line.split()


async def _fleet(redis: Redis, names: Names, start_collector: StartCollector) -> None:
    """A worker with 3 calls in flight, a queue with a backlog, dead letters, findings."""
    await Heartbeat(
        redis,
        names,
        "worker-deepseek-t",
        service="worker-deepseek",
        interval_s=1,
        ttl_s=60,
        info={"vendor": "deepseek", "capacity": "256"},
        live_info=lambda: {"in_flight": "3"},
    ).beat()
    queue = names.vendor_tasks("deepseek")
    for n in range(3):
        await redis.xadd(queue, {"prompt": f"task {n}"})
    await redis.xgroup_create(queue, "worker-deepseek", id="0")
    await redis.xreadgroup("worker-deepseek", "worker-deepseek-t", {queue: ">"}, count=1)
    gave_up = Rejection(reason="handler gave up", source_stream=queue, source_id="1-0")
    await redis.xadd(names.dead_letter, encode_rejection(gave_up, {"prompt": "x"}))  # type: ignore[arg-type]
    for field in ("complexty", "urgency"):
        bad = Rejection(reason=f"{field}: bad", field=field, source_stream=names.intake,
                        source_id="2-0")  # fmt: skip
        await redis.xadd(names.rejected, encode_rejection(bad, {field: "x"}))  # type: ignore[arg-type]
    await start_collector()
    await publish(
        redis,
        names,
        make_finding(cost_usd=0.002),
        make_finding(cost_usd=0.001),
        make_finding(vendor="claude", model="claude-sonnet-4-5", cost_usd=0.01),
    )
    await wait_handled(redis, names)


async def test_fleet_shows_members_streams_backlog_dead_letters_and_cost(
    swarm: Swarm, redis: Redis, names: Names, start_collector: StartCollector
) -> None:
    await _fleet(redis, names, start_collector)
    res = await swarm("status")
    assert res.code == 0, res.err
    out = res.out
    assert _line(out, "worker-deepseek") == ["worker-deepseek", "deepseek", "1", "3", "256"]
    assert _line(out, names.vendor_tasks("deepseek")) == [
        names.vendor_tasks("deepseek"), "3", "worker-deepseek", "(1", "pending,", "lag", "2)"
    ]  # fmt: skip
    assert _line(out, names.findings)[:3] == [names.findings, "3", "collector"]
    assert _line(out, names.rejected) == [names.rejected, "2", "-"]
    assert "dead-letter: 1   rejected: 2   (see them: swarm dlq list)" in out
    assert _line(out, "deepseek/deepseek-chat") == [
        "deepseek/deepseek-chat", "2", "0", "200", "40", "$0.003000"
    ]  # fmt: skip
    assert _line(out, "claude/claude-sonnet-4-5")[:2] == ["claude/claude-sonnet-4-5", "1"]
    assert "cost so far: $0.013000" in out
    assert "no shards hold context" in out


async def test_fleet_as_json(
    swarm: Swarm, redis: Redis, names: Names, start_collector: StartCollector
) -> None:
    await _fleet(redis, names, start_collector)
    res = await swarm("status", "--json")
    assert res.code == 0, res.err
    data = json.loads(res.out)
    [worker] = [r for r in data["live"] if r["service"] == "worker-deepseek"]
    assert (worker["replicas"], worker["in_flight"], worker["capacity"]) == (1, 3, 256)
    streams = {s["stream"]: s for s in data["streams"]}
    assert streams[names.vendor_tasks("deepseek")]["groups"] == [
        {"group": "worker-deepseek", "consumers": 1, "pending": 1, "lag": 2}
    ]
    assert streams[names.intake]["exists"] is False
    assert (data["dead_letter"], data["rejected"]) == (1, 2)
    assert {(t["vendor"], t["tasks"]) for t in data["totals"]} == {
        ("deepseek", 2),
        ("claude", 1),
    }
    assert round(data["cost_usd"], 6) == 0.013
    assert data["shards"] == []


async def test_one_task_merges_the_record_the_summary_and_every_finding(
    swarm: Swarm, redis: Redis, names: Names, start_collector: StartCollector
) -> None:
    await redis.hset(
        names.task("t-s"),
        mapping={
            "task_id": "t-s",
            "state": "done",
            "vendor": "deepseek",
            "model": "deepseek-chat",
            "complexity": "simple",
            "reason": "cheapest live model for simple",
            "estimated_cost_usd": "0.00010000",
            "updated_at": "1764093607.25",
            "worker": "worker-deepseek-1",
            "entry:1": "1-0",
        },
    )
    await start_collector()
    await publish(
        redis,
        names,
        make_finding(task_id="t-s", status="failed", error="429 rate limited", summary=""),
        make_finding(task_id="t-s", summary="Net 30 for every supplier."),
    )
    await wait_handled(redis, names)
    res = await swarm("status", "t-s")
    assert res.code == 0, res.err
    out = res.out
    assert "  state        done (at 2025-11-25 18:00:07 UTC)" in out
    assert "  routed to    deepseek/deepseek-chat (simple, est. $0.000100)" in out
    assert "  why          cheapest live model for simple" in out
    assert "  result       ok  deepseek/deepseek-chat  by worker-deepseek-1" in out
    assert "findings (2, newest last):" in out
    assert out.index("error: 429 rate limited") < out.index("Net 30 for every supplier.")
    assert "entry:1" not in out

    res = await swarm("status", "t-s", "--json")
    assert res.code == 0, res.err
    data = json.loads(res.out)
    assert data["record"]["state"] == "done" and "entry:1" not in data["record"]
    assert data["summary"]["status"] == "ok"
    assert [f["status"] for f in data["findings"]] == ["failed", "ok"]


async def test_an_unknown_task_is_one_line(swarm: Swarm, names: Names) -> None:
    res = await swarm("status", "t-nobody")
    assert res.code == 2
    assert res.err.strip() == (
        f"swarm: error: no record of task 't-nobody' in namespace {names.namespace!r} "
        "(unknown, expired, or posted straight to a vendor stream)"
    )


async def test_redis_down_or_a_wrong_password_is_one_line(swarm: Swarm) -> None:
    with private_redis_server(
        config="requirepass s3cret\n", probe_url="redis://:s3cret@127.0.0.1:{port}/0"
    ) as (url, _proc):
        port = url.rsplit(":", 1)[1].split("/")[0]
        wrong = f"redis://:nope@127.0.0.1:{port}/0"
        for args in (("status",), ("post", "hello"), ("findings", "t-1"), ("dlq", "list")):
            res = await swarm(*args, REDIS_URL=wrong)
            assert res.code == 2, args
            [line] = res.err.strip().splitlines()
            assert line.startswith(f"swarm: error: Redis at redis://:***@127.0.0.1:{port}/0 ")
            assert "refused the credentials" in line and "nope" not in line
    res = await swarm("status", REDIS_URL=url)  # the server has stopped: nobody answers
    assert res.code == 2
    [line] = res.err.strip().splitlines()
    assert "did not answer within 5s" in line and "Traceback" not in res.err
