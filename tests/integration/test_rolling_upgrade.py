"""Rolling upgrades (docs/protocol.md section 10), with every service a real process on a
real Redis: a task of a newer minor (an unknown field, headers) passes dispatcher, worker
and collector, its headers reaching the finding; a task of another major is rejected with a
reason; and a worker of the code before the minor existed (a `git archive` export of the
commit this branch started from) serves beside the new dispatcher and collector."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from redis.asyncio import Redis

from shared.bus.findings import TaskView, task_view
from shared.bus.streamids import text
from shared.protocol import Finding, Names, Rejection, Task, decode, decode_rejection
from shared.protocol.tracecontext import trace_of
from tests.chaos.checks import sim_config, simple_tier_policy
from tests.swarm_procs import SwarmProcs, deepseek_fleet

ROOT = Path(__file__).resolve().parents[2]
# The last commit before `schema_version` had a minor: its readers take exactly `1`.
BEFORE_MINOR = "0033e3139f8efe1084e92c7606c132cd2b104e7a"
TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
HEADERS = {"traceparent": TRACE, "tracestate": "congo=t61rcWkgMzE"}


def _export(ref: str, into: Path) -> Path:
    """The tree of `ref`, as `git archive` writes it; skip when the history is not here."""
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed: cannot export the older code")
    known = subprocess.run(
        [git, "cat-file", "-e", f"{ref}^{{commit}}"], cwd=ROOT, capture_output=True, check=False
    )
    if known.returncode != 0:
        pytest.skip(f"commit {ref[:12]} is not in this clone (shallow?): no older code to run")
    archive = subprocess.run([git, "archive", ref], cwd=ROOT, capture_output=True, check=True)
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def _same_trace(carried: dict[str, str]) -> None:
    """The posted trace, carried on: same trace id and tracestate, a later hop's span."""
    posted, now = trace_of(HEADERS), trace_of(carried)
    assert posted is not None and now is not None, carried
    assert (now.trace_id, now.state) == (posted.trace_id, posted.state)
    assert now.span_id != posted.span_id and set(carried) == set(HEADERS)


async def _finding_of(swarm: SwarmProcs, redis: Redis, names: Names, task_id: str) -> Finding:
    async def stored() -> TaskView | None:
        view = await task_view(redis, names, task_id)
        return view if view is not None and view.findings else None

    view = await swarm.wait_for(stored, timeout=40, what=f"the finding of {task_id}")
    assert len(view.findings) == 1, view.findings
    return view.findings[0]


@pytest.mark.timeout(180)
async def test_a_newer_minor_passes_every_service_and_another_major_is_rejected(
    redis_url: str, redis: Redis, names: Names, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    async with deepseek_fleet(redis_url, names, logs) as swarm:
        await swarm.wait_live(redis, names, {"worker-deepseek": 1, "collector": 1})

        # As a poster of a later 1.x writes it with redis-cli: flat, a field of 1.3.
        newer = {
            "schema_version": "1.3",
            "task_id": "task-newer-minor",
            "prompt": "Summarise RFC 9110 section 9.",
            "complexity": "simple",
            "headers": json.dumps(HEADERS),
            "deadline_v2": "2030-01-01T00:00:00Z",
        }
        await redis.xadd(names.intake, newer)  # type: ignore[arg-type]
        # The same in data form, under its own id.
        doc = {**newer, "task_id": "task-newer-minor-data", "headers": HEADERS}
        await redis.xadd(names.intake, {"data": json.dumps(doc)})
        # Major 2: refused at the intake, whatever it holds.
        major = {"schema_version": "2.0", "prompt": "Summarise.", "complexity": "simple"}
        major_id = text(await redis.xadd(names.intake, major))  # type: ignore[arg-type]

        for task_id in ("task-newer-minor", "task-newer-minor-data"):
            finding = await _finding_of(swarm, redis, names, task_id)
            assert finding.status == "ok" and finding.summary, finding
            assert finding.vendor == "deepseek" and finding.worker_id == "worker-deepseek-1"
            _same_trace(finding.headers)
            assert finding.schema_version == "1.1"

        # The routed task kept the headers, lost the field of 1.3, and says 1.1.
        routed = [
            fields
            for _, fields in await redis.xrange(names.vendor_tasks("deepseek", "normal"))
            if fields[b"task_id"] == b"task-newer-minor"
        ]
        assert len(routed) == 1
        assert routed[0][b"schema_version"] == b"1.1"
        assert b"deadline_v2" not in routed[0]
        _same_trace(decode(Task, routed[0]).headers)
        # The finding on the findings stream says 1.1 and carries them too.
        on_stream = [
            fields
            for _, fields in await redis.xrange(names.findings)
            if fields[b"task_id"] == b"task-newer-minor"
        ]
        assert [f[b"schema_version"] for f in on_stream] == [b"1.1"]
        _same_trace(json.loads(on_stream[0][b"headers"]))

        async def rejected() -> list[Rejection]:
            return [
                decode_rejection(fields)
                for _, fields in await redis.xrange(names.rejected)
                if decode_rejection(fields).source_id == major_id
            ]

        [record] = await swarm.wait_for(rejected, timeout=20, what="the major-2 task rejected")
        assert record.field == "schema_version"
        assert "major 2 is not read here" in record.reason
        assert "reads 1.x" in record.reason
        assert record.original["schema_version"] == "2.0"


@pytest.mark.timeout(240)
async def test_an_older_worker_serves_beside_a_newer_dispatcher_and_collector(
    redis_url: str, redis: Redis, names: Names, tmp_path: Path
) -> None:
    older = _export(BEFORE_MINOR, tmp_path / "older")
    assert "SCHEMA_MINOR" not in (older / "shared" / "protocol" / "messages.py").read_text()
    logs = tmp_path / "logs"
    async with SwarmProcs(redis_url, names, logs) as swarm:
        sim_url = await swarm.simulator(sim_config(0.05))
        policy = simple_tier_policy(logs / "policy.toml", "deepseek-flash")
        # While 1.0 workers serve, the dispatcher starts no trace of its own (section 10.1):
        # a traceparent it added would make every routed task 1.1.
        await swarm.start("dispatcher", "dispatcher", env={**policy, "SWARM_TRACE_START": "false"})
        await swarm.start("collector", "collector")
        # The older worker runs its own code: its tree first on the path, and its cwd.
        old = SwarmProcs(
            redis_url, names, logs / "older", cwd=older, env={"PYTHONPATH": str(older)}
        )
        old.sim_url = sim_url
        async with old:
            await old.start("worker-deepseek-old", "worker", "--vendor", "deepseek")
            await swarm.wait_live(redis, names, {"worker-deepseek": 1, "collector": 1})

            # Posted as 1.0 (none), 1 and 1.1 without 1.1 fields, and 1.3 with a field of
            # 1.3: the new dispatcher writes each routed task as `1`, which the older reads.
            posted = []
            for i, version in enumerate([None, "1", "1.1", "1.3", "1.3"]):
                fields = {
                    "task_id": f"task-old-{i}",
                    "prompt": f"Summarise supplier note {i}.",
                    "complexity": "simple",
                }
                if version is not None:
                    fields["schema_version"] = version
                if version == "1.3":
                    fields["deadline_v2"] = "2030-01-01T00:00:00Z"
                await redis.xadd(names.intake, fields)  # type: ignore[arg-type]
                posted.append(fields["task_id"])

            for task_id in posted:
                finding = await _finding_of(old, redis, names, task_id)
                assert finding.status == "ok" and finding.summary, finding
                assert finding.worker_id == "worker-deepseek-old"
                old.check()
            # The older worker wrote its findings as `1`, and dead-lettered nothing.
            written = {
                fields[b"schema_version"] for _, fields in await redis.xrange(names.findings)
            }
            assert written == {b"1"}
            assert await redis.xlen(names.dead_letter) == 0
            routed = await redis.xrange(names.vendor_tasks("deepseek", "normal"))
            assert {f[b"schema_version"] for _, f in routed} == {b"1"}
            assert all(b"headers" not in f for _, f in routed)
