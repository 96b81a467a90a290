"""The collector on a real Redis: every finding is stored once and counted once, whatever
the bus redelivers or the workers duplicate; runs tell when they are complete; a malformed
finding is parked with its reason and the service goes on."""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from services.collector.store import FindingStore
from shared.bus import ensure_group
from shared.bus.findings import (
    ModelTotals,
    RunProgress,
    expect_run,
    run_progress,
    run_task_statuses,
    task_list_id,
    task_view,
    totals_by_model,
    type_run_id,
    wait_for_run,
)
from shared.protocol import Names, Status, decode_rejection, encode
from tests.collector.conftest import StartCollector, make_finding, publish, wait_handled


def _row(rows: list[ModelTotals], vendor: str, model: str) -> ModelTotals:
    [row] = [r for r in rows if (r.vendor, r.model) == (vendor, model)]
    return row


def _sample(registry: CollectorRegistry, name: str, labels: dict[str, str]) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_the_same_finding_delivered_twice_is_stored_and_counted_once(
    redis: Redis, names: Names, start_collector: StartCollector
) -> None:
    collector = await start_collector()
    f = make_finding(run_id="run-a", input_tokens=1000, output_tokens=200, cost_usd=0.25)
    await publish(redis, names, f)
    await wait_handled(redis, names)
    await publish(redis, names, f)  # the worker published it again
    await wait_handled(redis, names)

    view = await task_view(redis, names, f.task_id)
    assert view is not None
    assert [x.finding_id for x in view.findings] == [f.finding_id]
    assert view.findings[0] == f
    s = view.summary
    assert (s.status, s.finding_id, s.cost_usd, s.input_tokens) == ("ok", f.finding_id, 0.25, 1000)
    assert s.duplicate_findings == 0

    [row] = await totals_by_model(redis, names)
    assert (row.vendor, row.model, row.tasks, row.failed) == ("deepseek", "deepseek-chat", 1, 0)
    assert (row.input_tokens, row.output_tokens, row.cost_usd) == (1000, 200, 0.25)
    assert row.duplicate_findings == 0
    assert await run_progress(redis, names, "run-a") == RunProgress("run-a", None, 1, 1, 0)
    assert [x.finding_id for x in collector.export_lines()] == [f.finding_id]

    reg = collector.metrics.registry
    model = {"vendor": "deepseek", "model": "deepseek-chat"}
    assert _sample(reg, "swarm_collector_tasks_total", {**model, "status": "ok"}) == 1
    assert _sample(reg, "swarm_collector_cost_usd_total", model) == pytest.approx(0.25)
    assert _sample(reg, "swarm_collector_tokens_total", {**model, "kind": "input"}) == 1000
    assert _sample(reg, "swarm_collector_findings_total", {"outcome": "stored"}) == 1
    assert _sample(reg, "swarm_collector_findings_total", {"outcome": "redelivered"}) == 1


async def test_a_collector_killed_after_storing_before_its_ack_does_not_count_twice(
    redis: Redis, names: Names, start_collector: StartCollector
) -> None:
    f = make_finding(run_id="run-crash", cost_usd=0.5)
    await ensure_group(redis, names.findings, Names.COLLECTOR_GROUP)
    await publish(redis, names, f)
    # The victim reads the finding and stores it, then dies before acking it.
    got = await redis.xreadgroup(Names.COLLECTOR_GROUP, "victim", {names.findings: ">"}, count=10)
    assert len(got[0][1]) == 1
    assert await FindingStore(redis, names, retention_s=3600).add(f) == "stored"

    collector = await start_collector(consumer="survivor")  # reclaims the dead victim's entry
    await wait_handled(redis, names)

    view = await task_view(redis, names, f.task_id)
    assert view is not None and len(view.findings) == 1
    [row] = await totals_by_model(redis, names)
    assert (row.tasks, row.cost_usd, row.duplicate_findings) == (1, 0.5, 0)
    assert await run_progress(redis, names, "run-crash") == RunProgress("run-crash", None, 1, 1, 0)
    reg = collector.metrics.registry
    assert _sample(reg, "swarm_collector_findings_total", {"outcome": "redelivered"}) == 1
    assert _sample(reg, "swarm_collector_findings_total", {"outcome": "stored"}) == 0


async def test_two_findings_of_one_task_count_it_once_and_show_the_duplicate_cost(
    redis: Redis, names: Names, start_collector: StartCollector
) -> None:
    await start_collector()
    first = make_finding(task_id="dup-task", run_id="run-d", cost_usd=0.10, input_tokens=500)
    second = make_finding(
        task_id="dup-task", run_id="run-d", vendor="claude", model="claude-x", cost_usd=0.30
    )
    await publish(redis, names, first)
    await wait_handled(redis, names)
    await publish(redis, names, second)
    await wait_handled(redis, names)

    view = await task_view(redis, names, "dup-task")
    assert view is not None
    assert {x.finding_id for x in view.findings} == {first.finding_id, second.finding_id}
    s = view.summary
    assert (s.finding_id, s.vendor, s.cost_usd) == (first.finding_id, "deepseek", 0.10)
    assert (s.duplicate_findings, s.duplicate_cost_usd) == (1, pytest.approx(0.30))

    rows = await totals_by_model(redis, names)
    ds, cl = _row(rows, "deepseek", "deepseek-chat"), _row(rows, "claude", "claude-x")
    assert (ds.tasks, ds.cost_usd, ds.input_tokens) == (1, 0.10, 500)
    assert (cl.tasks, cl.cost_usd, cl.input_tokens) == (0, 0.0, 0)
    assert (cl.duplicate_findings, cl.duplicate_cost_usd) == (1, pytest.approx(0.30))
    assert await run_progress(redis, names, "run-d") == RunProgress("run-d", None, 1, 1, 0)


async def test_an_ok_finding_supersedes_a_failed_one_without_counting_the_task_twice(
    redis: Redis, names: Names, start_collector: StartCollector
) -> None:
    await start_collector()
    await expect_run(redis, names, "run-s", 1)
    failed = make_finding(
        task_id="s-task",
        run_id="run-s",
        status="failed",
        error="context too long",
        model="deepseek-chat",
        cost_usd=0.01,
    )
    ok = make_finding(task_id="s-task", run_id="run-s", vendor="gemini", model="gemini-pro")
    await publish(redis, names, failed)
    await wait_handled(redis, names)
    assert await run_progress(redis, names, "run-s") == RunProgress("run-s", 1, 1, 0, 1)
    assert await run_task_statuses(redis, names, "run-s") == {"s-task": "failed"}

    await publish(redis, names, ok)
    await wait_handled(redis, names)
    progress = await run_progress(redis, names, "run-s")
    assert progress == RunProgress("run-s", 1, 1, 1, 0) and progress.complete
    assert await run_task_statuses(redis, names, "run-s") == {"s-task": "ok"}
    view = await task_view(redis, names, "s-task")
    assert view is not None
    assert (view.summary.status, view.summary.finding_id) == ("ok", ok.finding_id)
    assert view.summary.vendor == "gemini" and view.summary.duplicate_findings == 0

    rows = await totals_by_model(redis, names)
    ds, gm = _row(rows, "deepseek", "deepseek-chat"), _row(rows, "gemini", "gemini-pro")
    assert (ds.tasks, ds.failed) == (0, 0)
    assert ds.cost_usd == pytest.approx(0.01)  # the failed call was paid for all the same
    assert (gm.tasks, gm.failed, gm.cost_usd) == (1, 0, pytest.approx(0.001))
    # A later failed finding of the now-ok task is duplicate work, not a status change.
    late = make_finding(task_id="s-task", run_id="run-s", status="failed", error="timeout")
    await publish(redis, names, late)
    await wait_handled(redis, names)
    assert await run_task_statuses(redis, names, "run-s") == {"s-task": "ok"}
    assert await run_progress(redis, names, "run-s") == RunProgress("run-s", 1, 1, 1, 0)


async def test_totals_add_up_across_vendors_and_models(
    redis: Redis, names: Names, start_collector: StartCollector
) -> None:
    await start_collector()
    rnd = random.Random(7)
    models = [("deepseek", "deepseek-chat"), ("claude", "claude-sonnet"), ("openai", "local-x")]
    findings = []
    for i in range(50):
        vendor, model = models[i % 3]
        failed = rnd.random() < 0.2
        findings.append(
            make_finding(
                task_id=f"tot-{i}",
                vendor=vendor,
                model=model,
                status="failed" if failed else "ok",
                error="quota" if failed else None,
                input_tokens=rnd.randint(0, 5000),
                output_tokens=rnd.randint(0, 900),
                cache_read_tokens=rnd.randint(0, 3000),
                cache_write_tokens=rnd.randint(0, 400),
                cost_usd=None if model == "local-x" else round(rnd.uniform(0, 0.2), 6),
                latency_ms=rnd.uniform(10, 3000),
            )
        )
    await publish(redis, names, *findings)
    await publish(redis, names, *findings[:10])  # republished: must change nothing
    await wait_handled(redis, names)

    rows = await totals_by_model(redis, names)
    assert [(r.vendor, r.model) for r in rows] == sorted(models)
    for vendor, model in models:
        mine = [f for f in findings if (f.vendor, f.model) == (vendor, model)]
        row = _row(rows, vendor, model)
        assert row.tasks == len(mine)
        assert row.failed == sum(f.status is Status.FAILED for f in mine)
        assert row.input_tokens == sum(f.input_tokens for f in mine)
        assert row.output_tokens == sum(f.output_tokens for f in mine)
        assert row.cache_read_tokens == sum(f.cache_read_tokens for f in mine)
        assert row.cache_write_tokens == sum(f.cache_write_tokens for f in mine)
        assert row.cost_usd == pytest.approx(sum(f.cost_usd or 0.0 for f in mine))
        assert row.unpriced == sum(f.cost_usd is None for f in mine)
        assert row.latency_ms == pytest.approx(sum(f.latency_ms for f in mine))
        assert row.duplicate_findings == 0
    unpriced = _row(rows, "openai", "local-x")
    assert unpriced.unpriced == unpriced.tasks and unpriced.cost_usd == 0.0
    view = await task_view(redis, names, "tot-2")
    assert view is not None and view.summary.cost_usd is None  # unpriced, not $0
    # Without a run id, tasks are grouped by type.
    progress = await run_progress(redis, names, type_run_id("general"))
    assert (progress.finished, progress.ok + progress.failed) == (50, 50)


async def test_a_run_completes_when_its_expected_tasks_have_finished(
    redis: Redis, names: Names, start_collector: StartCollector
) -> None:
    await start_collector()
    await expect_run(redis, names, "run-c", 4)
    first = [make_finding(task_id=f"c-{i}", run_id="run-c") for i in range(3)]
    await publish(redis, names, *first)
    await wait_handled(redis, names)
    timed_out = await wait_for_run(redis, names, "run-c", timeout_s=0.3, poll_s=0.05)
    assert timed_out == RunProgress("run-c", 4, 3, 3, 0) and not timed_out.complete

    seen: list[RunProgress] = []
    waiting = asyncio.create_task(
        wait_for_run(redis, names, "run-c", timeout_s=20, poll_s=0.05, on_progress=seen.append)
    )
    await asyncio.sleep(0.2)
    last = make_finding(task_id="c-3", run_id="run-c", status="failed", error="quota")
    await publish(redis, names, last, first[0])  # and one redelivered, which must not count
    done = await waiting
    assert done == RunProgress("run-c", 4, 4, 3, 1) and done.complete
    assert seen[0] == timed_out and seen[-1] == done
    await wait_handled(redis, names)
    assert await run_progress(redis, names, "run-c") == done
    assert await run_task_statuses(redis, names, "run-c") == {
        "c-0": "ok",
        "c-1": "ok",
        "c-2": "ok",
        "c-3": "failed",
    }


async def test_a_run_can_be_awaited_by_task_type(
    redis: Redis, names: Names, start_collector: StartCollector
) -> None:
    await start_collector()
    research = type_run_id("research")
    await expect_run(redis, names, research, 5)
    await publish(
        redis,
        names,
        *(make_finding(task_id=f"r-{i}", task_type="research") for i in range(5)),
        *(make_finding(task_id=f"w-{i}", task_type="writing") for i in range(2)),
        make_finding(task_id="r-run", task_type="research", run_id="other-run"),
    )
    done = await wait_for_run(redis, names, research, timeout_s=20, poll_s=0.05)
    assert done == RunProgress(research, 5, 5, 5, 0) and done.complete
    assert sorted(await run_task_statuses(redis, names, research)) == [f"r-{i}" for i in range(5)]
    writing = await run_progress(redis, names, type_run_id("writing"))
    assert (writing.expected, writing.finished, writing.complete) == (None, 2, False)


async def test_a_malformed_finding_is_dead_lettered_and_the_good_ones_around_it_are_stored(
    redis: Redis, names: Names, start_collector: StartCollector
) -> None:
    collector = await start_collector()
    before, after = make_finding(task_id="good-1"), make_finding(task_id="good-2")
    await publish(redis, names, before)
    bad = {**encode(make_finding(task_id="bad-1")), "input_tokens": "-5"}
    bad_id = await redis.xadd(names.findings, bad)  # type: ignore[arg-type]
    await redis.xadd(names.findings, {"data": "{not json"})
    await publish(redis, names, after)
    await wait_handled(redis, names)

    for f in (before, after):
        view = await task_view(redis, names, f.task_id)
        assert view is not None and view.summary.finding_id == f.finding_id
    assert await task_view(redis, names, "bad-1") is None
    dead = [decode_rejection(fields) for _id, fields in await redis.xrange(names.dead_letter)]
    assert len(dead) == 2
    assert dead[0].source_id == bad_id.decode() and dead[0].field == "input_tokens"
    assert "not a valid finding" in dead[0].reason and "input_tokens" in dead[0].reason
    assert dead[0].original["task_id"] == "bad-1" and dead[0].original["input_tokens"] == "-5"
    assert dead[1].field == "data" and "not valid JSON" in dead[1].reason
    [row] = await totals_by_model(redis, names)
    assert row.tasks == 2
    assert {f.finding_id for f in collector.export_lines()} == {before.finding_id, after.finding_id}
    assert not collector.task.done()  # still serving


async def test_the_export_file_has_one_line_per_stored_finding(
    redis: Redis, names: Names, start_collector: StartCollector
) -> None:
    collector = await start_collector()
    findings = [make_finding(task_id=f"e-{i % 15}", run_id="run-e") for i in range(20)]
    await publish(redis, names, *findings)
    await wait_handled(redis, names)
    await publish(redis, names, *findings[:5])  # redelivered after they were stored
    await wait_handled(redis, names)

    lines = collector.export_lines()
    assert len(lines) == 20
    assert sorted(lines, key=lambda f: f.finding_id) == sorted(findings, key=lambda f: f.finding_id)
    stored = set()
    for task_id in {f.task_id for f in findings}:
        view = await task_view(redis, names, task_id)
        assert view is not None
        stored |= {f.finding_id for f in view.findings}
    assert stored == {f.finding_id for f in lines}
    assert (await run_progress(redis, names, "run-e")).finished == 15


async def test_an_empty_export_path_writes_no_file(
    redis: Redis, names: Names, start_collector: StartCollector, tmp_path: Path
) -> None:
    await start_collector(export_path="")
    f = make_finding()
    await publish(redis, names, f)
    await wait_handled(redis, names)
    assert await task_view(redis, names, f.task_id) is not None
    assert os.listdir(tmp_path) == []


async def test_a_finding_posted_without_an_id_is_named_after_its_entry(
    redis: Redis, names: Names, start_collector: StartCollector
) -> None:
    await ensure_group(redis, names.findings, Names.COLLECTOR_GROUP)
    fields = {"task_id": "hand-1", "worker_id": "me", "vendor": "openai", "model": "m"}
    entry_id = (await redis.xadd(names.findings, fields)).decode()  # type: ignore[arg-type]
    # A collector that dies after storing it: its redelivery must be recognised.
    await redis.xreadgroup(Names.COLLECTOR_GROUP, "victim", {names.findings: ">"})
    f = make_finding(**fields, finding_id=f"entry-{entry_id}", cost_usd=None, input_tokens=0)
    f = f.model_copy(update={"output_tokens": 0, "latency_ms": 0.0, "summary": ""})
    await FindingStore(redis, names, retention_s=3600).add(f)

    await start_collector(consumer="survivor")
    await wait_handled(redis, names)
    view = await task_view(redis, names, "hand-1")
    assert view is not None
    assert [x.finding_id for x in view.findings] == [f"entry-{entry_id}"]
    assert view.summary.duplicate_findings == 0


async def test_a_tasks_and_a_runs_keys_expire_after_the_retention_but_totals_stay(
    redis: Redis, names: Names, start_collector: StartCollector
) -> None:
    await start_collector(retention_s=600)
    await expect_run(redis, names, "run-ttl", 2, ttl_s=3600)
    first = make_finding(task_id="ttl-1", run_id="run-ttl", status="failed", error="quota")
    second = make_finding(task_id="ttl-1", run_id="run-ttl")  # supersedes the failed one
    await publish(redis, names, first, second, make_finding(task_id="ttl-2"))  # by type
    await wait_handled(redis, names)
    keys = [
        names.task_findings("ttl-1"),
        names.task_summary("ttl-1"),
        names.run_tasks("run-ttl"),
        names.run_info("run-ttl"),  # the poster's hour gave way to the collector's retention
        names.task_findings("ttl-2"),
        names.task_summary("ttl-2"),
        names.run_tasks(task_list_id(make_finding(task_id="ttl-2"), time.time())),  # today's
        names.run_info(type_run_id("general")),
    ]
    ttls = {k: await redis.pttl(k) for k in keys}
    assert all(590_000 < ms <= 600_000 for ms in ttls.values()), list(ttls.items())
    assert await redis.pttl(names.totals) == -1  # cumulative by design: no TTL
    assert await run_progress(redis, names, "run-ttl") == RunProgress("run-ttl", 2, 1, 1, 0)


async def test_a_run_expected_before_any_finding_does_not_stay_forever(
    redis: Redis, names: Names
) -> None:
    await expect_run(redis, names, "never-run", 3)
    assert 0 < await redis.pttl(names.run_info("never-run")) <= 7 * 86400 * 1000


async def test_a_task_types_list_is_kept_per_day_so_an_endless_stream_of_tasks_stays_bounded(
    redis: Redis, names: Names
) -> None:
    """Tasks without a run are listed under their type, one hash per UTC day: a type that
    gets tasks all the time does not keep one hash that never expires (each write moves its
    expiry on). Its counts stay whole; its list shows the days within retention."""
    store = FindingStore(redis, names, retention_s=2 * 86400)
    today = time.time()
    for age_days in (0, 1, 2, 5):  # 5 days ago is past the 2-day retention
        when = today - age_days * 86400
        await store.add(make_finding(task_id=f"q-{age_days}", task_type="qa"), now=when)
    lists = {task_list_id(make_finding(task_type="qa"), today - d * 86400) for d in (0, 1, 2, 5)}
    assert len(lists) == 4  # four days, four hashes
    for list_id in lists:
        assert await redis.hlen(names.run_tasks(list_id)) == 1
        assert 0 < await redis.pttl(names.run_tasks(list_id)) <= 2 * 86400 * 1000
    statuses = await run_task_statuses(
        redis, names, type_run_id("qa"), retention_s=2 * 86400, now=today
    )
    assert sorted(statuses) == ["q-0", "q-1", "q-2"]  # the retention's days and one more
    assert (await run_progress(redis, names, type_run_id("qa"))).finished == 4


async def test_a_cancelled_task_finishes_its_run_and_is_counted_apart(
    redis: Redis, names: Names
) -> None:
    store = FindingStore(redis, names, retention_s=600)
    await expect_run(redis, names, "run-x", 2)
    cancelled = make_finding(
        task_id="x-1", run_id="run-x", status="cancelled", error="cancelled: no", cost_usd=0.0
    )
    assert await store.add(cancelled) == "stored"
    assert await store.add(make_finding(task_id="x-2", run_id="run-x")) == "stored"
    # A late finding of the cancelled task (a call that answered anyway) is a duplicate.
    assert (
        await store.add(make_finding(task_id="x-1", run_id="run-x", status="failed", error="late"))
        == "duplicate"
    )
    progress = await run_progress(redis, names, "run-x")
    assert (progress.finished, progress.ok, progress.failed, progress.cancelled) == (2, 1, 0, 1)
    assert progress.complete
    [row] = await totals_by_model(redis, names)
    assert (row.tasks, row.failed, row.cancelled) == (2, 0, 1)
