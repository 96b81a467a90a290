"""examples/node-worker, the Node.js worker written from docs/protocol.md, on a real Redis:
beside the Python deepseek workers on one vendor stream (every task done once, its findings
accepted by the collector, the worker listed by `swarm status`), and alone, dead-lettering
what the doc says it must, with the documented record.

Skipped when `node` or `npm` is missing, or `npm install` fails (no registry to reach)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from shared.bus.findings import expect_run, task_view
from shared.bus.membership import live_members
from shared.bus.streamids import text
from shared.protocol import Names, decode, decode_rejection
from shared.protocol.messages import Finding
from tests.chaos.checks import audit, post, sim_config, simple_tier_policy, tasks
from tests.swarm_procs import FAST_BUS, SwarmProcs
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
WORKER_DIR = ROOT / "examples" / "node-worker"
NODE_CONSUMER = "node-worker-1"


@pytest.fixture(scope="module")
def node_worker() -> Iterator[Path]:
    """examples/node-worker with its dependencies installed (into its node_modules)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not installed (.ci/run installs Debian's nodejs and npm)")
    if not (WORKER_DIR / "node_modules" / "ioredis" / "package.json").exists():
        try:
            done = subprocess.run(
                [npm, "install", "--no-package-lock", "--no-audit", "--no-fund"],
                cwd=WORKER_DIR,
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.skip("npm install took over 180 s (no registry reachable?)")
        if done.returncode != 0:
            why = (done.stderr or done.stdout).strip()[-500:]
            pytest.skip(f"npm install failed (no registry reachable?): {why}")
    yield WORKER_DIR / "worker.js"


@dataclass
class NodeProc:
    process: asyncio.subprocess.Process
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def events(self, event: str) -> list[dict[str, object]]:
        lines = self.log.read_text(errors="replace").splitlines()
        found = []
        for line in lines:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("event") == event:
                    found.append(record)
        return found


@contextlib.asynccontextmanager
async def run_node(
    script: Path, redis_url: str, names: Names, logs: Path, sim_url: str | None = None
) -> AsyncIterator[NodeProc]:
    """The Node worker as its own process, as a user starts it; SIGTERMed at the end, and
    it must then leave cleanly (exit 0)."""
    await asyncio.to_thread(logs.mkdir, parents=True, exist_ok=True)
    log = logs / f"{NODE_CONSUMER}.log"
    env = {
        "PATH": os.environ["PATH"],
        "REDIS_URL": redis_url,
        "SWARM_NAMESPACE": names.namespace,
        "CONSUMER_NAME": NODE_CONSUMER,
        "SWARM_MAX_IN_FLIGHT": "8",
        **FAST_BUS,
        **({"SWARM_SIMULATOR_URL": sim_url} if sim_url else {}),
    }
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            "node", str(script), cwd=script.parent, env=env, stdout=out, stderr=out
        )
    proc = NodeProc(process, log)
    try:
        yield proc
        assert process.returncode is None, f"the node worker exited early:\n{proc.tail()}"
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 15)
        assert code == 0, f"the node worker exited with {code} on SIGTERM:\n{proc.tail()}"
        assert proc.events("worker.left"), proc.tail()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def node_is_live(redis: Redis, names: Names) -> bool:
    return any(m.get("member_id") == NODE_CONSUMER for m in await live_members(redis, names))


async def swarm_cli(redis_url: str, names: Names, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "swarm"),
        *args,
        env={**os.environ, "REDIS_URL": redis_url, "SWARM_NAMESPACE": names.namespace},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    return out.decode()


@pytest.mark.timeout(300)
async def test_node_worker_serves_one_stream_beside_python_workers(
    node_worker: Path, redis_url: str, redis: Redis, names: Names, tmp_path: Path
) -> None:
    run_id, n = "run-node", 200
    logs = tmp_path / "logs"
    python_env = {"SWARM_MAX_IN_FLIGHT": "8"}  # so the Node worker gets a share of the work
    async with SwarmProcs(redis_url, names, logs) as swarm:
        sim_url = await swarm.simulator(sim_config(0.1))
        policy = simple_tier_policy(logs / "policy.toml", "deepseek-flash")
        await swarm.start("dispatcher", "dispatcher", env=policy)
        await swarm.start("collector", "collector")
        for i in (1, 2):
            await swarm.start(
                f"worker-deepseek-{i}", "worker", "--vendor", "deepseek", env=python_env
            )
        async with run_node(node_worker, redis_url, names, logs, sim_url) as node:
            await swarm.wait_live(redis, names, {"worker-deepseek": 3, "collector": 1})
            assert await node_is_live(redis, names), node.tail()

            # `swarm status`, as a user runs it, counts the Node worker among deepseek's (a
            # heartbeat late on a loaded machine may hide a member for a moment: run it again).
            row = re.compile(r"^worker-deepseek\s+deepseek\s+3\s", re.MULTILINE)

            async def status_lists_three() -> str | None:
                text = await swarm_cli(redis_url, names, "status")
                return text if row.search(text) else None

            await swarm.wait_for(status_lists_three, timeout=20, what="3 deepseek workers listed")
            data = json.loads(await swarm_cli(redis_url, names, "status", "--json"))
            rows = [r for r in data["live"] if NODE_CONSUMER in r["members"]]
            assert [(r["service"], r["name"]) for r in rows] == [("worker-deepseek", "deepseek")]
            assert "deepseek-flash" in rows[0]["models"]

            batch = tasks(run_id, n)
            await expect_run(redis, names, run_id, n)
            await post(redis, names, batch)

            async def finished() -> bool:
                report = await audit(redis, names, run_id, [t.task_id for t in batch])
                return report.finished >= n

            await swarm.wait_for(finished, timeout=180, what=f"{n} tasks finished")
            report = await audit(redis, names, run_id, [t.task_id for t in batch])
            report.assert_each_task_counted_once()
            assert report.ok == n, report
            assert report.duplicates == 0, report

            by_node: list[Finding] = []
            for task in batch:
                view = await task_view(redis, names, task.task_id)
                assert view is not None, task.task_id
                assert len(view.findings) == 1, (task.task_id, view.findings)
                assert view.summary.duplicate_findings == 0, view.summary
                if view.summary.worker == NODE_CONSUMER:
                    by_node.append(view.findings[0])
            assert by_node, f"the Node worker did none of the {n} tasks:\n{node.tail()}"
            for f in by_node:  # real tokens from the simulator, the task's fields copied
                assert f.vendor == "deepseek" and f.model == "deepseek-flash", f
                assert f.input_tokens + f.cache_read_tokens > 0 and f.output_tokens > 0, f
                assert f.run_id == run_id and f.intake_id and f.summary, f
                assert f.cost_usd is None, f  # it knows no prices: unpriced, never $0
            assert len(node.events("task.done")) == len(by_node)
        # Left cleanly: its member hash and its entry in the fleet set are gone at once.
        assert not await redis.exists(names.member(NODE_CONSUMER))
        assert await redis.zscore(names.members, NODE_CONSUMER) is None


@pytest.mark.timeout(120)
async def test_node_worker_dead_letters_with_the_documented_record(
    node_worker: Path, redis_url: str, redis: Redis, names: Names, tmp_path: Path
) -> None:
    stream, group = names.vendor_tasks("deepseek"), Names.worker_group("deepseek")
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    # A valid task already delivered 5 times, to a consumer that is gone (no member key).
    tired = {"task_id": "task-tired", "prompt": "Delivered too often."}
    tired_id = text(await redis.xadd(stream, tired))  # type: ignore[arg-type]
    await redis.xreadgroup(group, "ghost", {stream: ">"}, count=1)
    for _ in range(4):  # XCLAIM without JUSTID raises the delivery count
        await redis.xclaim(stream, group, "ghost", min_idle_time=0, message_ids=[tired_id])
    # Undecodable: a value that is not UTF-8, and a field Task does not have.
    bad = {b"prompt": b"caf\xe9 \xff", b"complexty": b"simple"}
    bad_id = text(await redis.xadd(stream, bad))  # type: ignore[arg-type]

    async with run_node(node_worker, redis_url, names, tmp_path / "logs") as node:

        async def records() -> list[tuple[bytes, dict[bytes, bytes]]]:
            got: Any = await redis.xrange(names.dead_letter)
            return list(got) if len(got) >= 2 else []

        dead = await eventually(records, timeout=20, what="two dead-letter records")
        by_source = {r[b"source_id"].decode(): r for _, r in dead}
        assert set(by_source) == {bad_id, tired_id}, (by_source, node.tail())

        rec = by_source[bad_id]
        assert rec[b"schema_version"] == b"1"
        assert rec[b"reason"].startswith(b"not a valid task: "), rec
        assert rec[b"field"] == b"prompt", rec  # the first offending field
        assert rec[b"source_stream"] == stream.encode()
        assert rec[b"deliveries"] == b"1"
        assert rec[b"consumer"] == NODE_CONSUMER.encode()
        assert rec[b"group"] == group.encode()
        datetime.fromisoformat(rec[b"timestamp"].decode().replace("Z", "+00:00"))
        assert rec[b"orig:prompt"] == bad[b"prompt"]  # byte-exact
        assert rec[b"orig:complexty"] == b"simple"
        assert set(rec) == {
            b"schema_version", b"reason", b"field", b"source_stream", b"source_id",
            b"deliveries", b"consumer", b"group", b"timestamp", b"orig:prompt",
            b"orig:complexty",
        }  # fmt: skip
        rejection = decode_rejection(rec)
        assert rejection.original.keys() == {"prompt", "complexty"}

        rec = by_source[tired_id]
        assert rec[b"reason"] == (
            b"delivered 6 times without being acknowledged (max_deliveries=5)"
        ), rec
        assert rec[b"field"] == b"" and rec[b"deliveries"] == b"6"
        assert rec[b"consumer"] == NODE_CONSUMER.encode()
        assert decode_rejection(rec).deliveries == 6
        assert rec[b"orig:task_id"] == b"task-tired"

        # Both were acked, and neither was answered.
        assert (await redis.xpending(stream, group))["pending"] == 0
        assert await redis.xlen(names.findings) == 0


@pytest.mark.timeout(120)
async def test_node_worker_honours_cancels_and_done_markers(
    node_worker: Path, redis_url: str, redis: Redis, names: Names, tmp_path: Path
) -> None:
    stream = names.vendor_tasks("deepseek")
    # Marked before it is read: a done-marker (a peer answered it) and a cancel mark.
    await redis.set(names.task_done("deepseek", "task-done"), "finding_from_a_peer")
    await redis.set(names.task_cancelled("task-marked"), "not needed")
    await redis.xadd(stream, {"task_id": "task-done", "prompt": "Answered already."})
    await redis.xadd(stream, {"task_id": "task-marked", "prompt": "Cancelled while queued."})
    logs = tmp_path / "logs"
    async with SwarmProcs(redis_url, names, logs) as swarm:
        sim_url = await swarm.simulator(sim_config(30.0))  # every call outlives the test's wait
        async with run_node(node_worker, redis_url, names, logs, sim_url) as node:

            async def marked_done() -> bool:
                return bool(await redis.exists(names.task_done("deepseek", "task-marked")))

            await swarm.wait_for(marked_done, timeout=20, what="the queued cancel handled")
            await swarm.wait_for(
                lambda: asyncio.sleep(0, node.events("task.duplicate")),
                timeout=20,
                what="the done task acked",
            )
            stats = await swarm.sim_stats()
            assert (stats["total"], stats["in_flight"]) == (0, 0), "a vendor call was made"
            await redis.xadd(stream, {"task_id": "task-slow", "prompt": "A long answer."})

            async def calling() -> bool:
                return int((await swarm.sim_stats())["in_flight"]) >= 1

            await swarm.wait_for(calling, timeout=20, what="the Node worker's vendor call")
            await redis.xadd(names.cancels, {"task_id": "task-slow", "reason": "changed my mind"})

            async def findings() -> dict[str, Finding]:
                got: Any = await redis.xrange(names.findings)
                by_task = {f.task_id: f for f in (decode(Finding, e) for _, e in got)}
                return by_task if len(by_task) >= 2 else {}

            by_task = await swarm.wait_for(findings, timeout=20, what="two cancelled findings")
            queued, closed = by_task["task-marked"], by_task["task-slow"]
            assert queued.status == "cancelled" and queued.cost_usd == 0, queued
            assert queued.error == "cancelled before any vendor call: not needed", queued
            assert closed.status == "cancelled" and closed.cost_usd is None, closed
            assert closed.error == "cancelled during its vendor call (closed): changed my mind"
            assert "task-done" not in by_task  # acked without a call or a second finding
            assert (
                await redis.get(names.task_done("deepseek", "task-done")) == b"finding_from_a_peer"
            )
            assert (
                await redis.get(names.task_done("deepseek", "task-slow"))
                == closed.finding_id.encode()
            )
            group = Names.worker_group("deepseek")

            async def all_acked() -> bool:  # the XACK follows the finding's write
                return int((await redis.xpending(stream, group))["pending"]) == 0

            await swarm.wait_for(all_acked, timeout=10, what=f"every entry acked\n{node.tail()}")
            assert len(node.events("task.duplicate")) == 1


# -- versions (docs/protocol.md section 10) --------------------------------------------------
TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
HEADERS = {"traceparent": TRACE, "tracestate": "congo=t61rcWkgMzE"}
# The Node worker reads 1.1: what its reason for another major says it knows.
READS = "this swarm reads 1.x (it knows 1.0 to 1.1)"


async def fates(
    redis: Redis, names: Names, posted: dict[str, str]
) -> dict[str, tuple[str, dict[bytes, bytes]]]:
    """Once every posted task (entry id -> task id) has one: each task's fate, `("finding",
    its fields on the findings stream)` or `("dead", its dead-letter record)`."""
    got: dict[str, tuple[str, dict[bytes, bytes]]] = {}
    findings: Any = await redis.xrange(names.findings)
    dead: Any = await redis.xrange(names.dead_letter)
    for _, fields in findings:
        got[fields[b"task_id"].decode()] = ("finding", fields)
    for _, record in dead:
        entry_id = record[b"source_id"].decode()
        if entry_id in posted:
            got[posted[entry_id]] = ("dead", record)
    return got if set(posted.values()) <= got.keys() else {}


def finding_of(fate: tuple[str, dict[bytes, bytes]], log: str) -> dict[bytes, bytes]:
    """The finding of a task that must have been answered; its reason when it was not."""
    kind, fields = fate
    assert kind == "finding", f"dead-lettered: {fields.get(b'reason')!r}\n{log}"
    decode(Finding, fields)  # as the collector reads it
    return fields


@pytest.mark.timeout(120)
async def test_node_worker_copies_a_tasks_headers_from_the_intake_to_its_finding(
    node_worker: Path, redis_url: str, redis: Redis, names: Names, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    async with SwarmProcs(redis_url, names, logs) as swarm:
        policy = simple_tier_policy(logs / "policy.toml", "deepseek-flash")
        await swarm.start("dispatcher", "dispatcher", env=policy)
        await swarm.start("collector", "collector")
        async with run_node(node_worker, redis_url, names, logs) as node:
            await swarm.wait_live(redis, names, {"worker-deepseek": 1, "collector": 1})
            [task] = tasks("run-headers", 1, headers=HEADERS)
            [intake_id] = await post(redis, names, [task])

            # The dispatcher routes it as 1.1, with the headers (section 10): the poster's
            # trace, which it may continue with a span of its own.
            stream = names.vendor_tasks("deepseek")
            [(entry_id, routed)] = await swarm.wait_for(
                lambda: redis.xrange(stream), timeout=20, what="the routed task"
            )
            assert routed[b"schema_version"] == b"1.1"
            headers = json.loads(routed[b"headers"])
            assert headers["traceparent"].split("-")[1] == TRACE.split("-")[1], headers

            async def fate() -> dict[str, tuple[str, dict[bytes, bytes]]]:
                return await fates(redis, names, {text(entry_id): task.task_id})

            outcome = await swarm.wait_for(fate, timeout=20, what="the Node worker's answer")
            fields = finding_of(outcome[task.task_id], node.tail())
            assert fields[b"worker_id"] == NODE_CONSUMER.encode()
            assert fields[b"schema_version"] == b"1.1"  # the lowest version with headers
            assert json.loads(fields[b"headers"]) == headers  # copied unchanged
            assert fields[b"intake_id"] == intake_id.encode()

            async def collected() -> Any:
                view = await task_view(redis, names, task.task_id)
                return view if view is not None and view.findings else None

            view = await swarm.wait_for(collected, timeout=20, what="the collector's record")
            assert [f.headers for f in view.findings] == [headers]
            assert view.summary.worker == NODE_CONSUMER


@pytest.mark.timeout(120)
async def test_node_worker_reads_a_newer_minor_and_writes_the_lowest_version(
    node_worker: Path, redis_url: str, redis: Redis, names: Names, tmp_path: Path
) -> None:
    stream = names.vendor_tasks("deepseek")
    history = [{"vendor": "gemini", "error": "429", "retryable": True, "region_v3": "eu"}]
    # 1.3, flat, with headers, a field of 1.3 and one in a history entry: both dropped.
    flat = {
        "schema_version": "1.3",
        "task_id": "task-newer-flat",
        "prompt": "Summarise RFC 9110 section 9.",
        "headers": json.dumps(HEADERS),
        "trace_flags_v3": "sampled",
        "history": json.dumps(history),
    }
    # 1.3 in data form without headers: its finding is written `1`, with no headers.
    doc = {"schema_version": "1.3", "task_id": "task-newer-data", "prompt": "Summarise."}
    data = {"data": json.dumps({**doc, "deadline_v3": "2030-01-01T00:00:00Z"})}
    # Cancelled while queued: the cancelled finding carries the headers too.
    marked = {"schema_version": "1.1", "task_id": "task-marked", "prompt": "Cancelled."}
    marked["headers"] = json.dumps(HEADERS)
    await redis.set(names.task_cancelled("task-marked"), "not needed")
    posted = {}
    for entry in (flat, data, marked):
        entry_id = text(await redis.xadd(stream, entry))  # type: ignore[arg-type]
        posted[entry_id] = entry.get("task_id") or doc["task_id"]

    async with run_node(node_worker, redis_url, names, tmp_path / "logs") as node:

        async def fate() -> dict[str, tuple[str, dict[bytes, bytes]]]:
            return await fates(redis, names, posted)

        outcome = await eventually(fate, timeout=20, what="the three tasks answered")
        got = {task_id: finding_of(f, node.tail()) for task_id, f in outcome.items()}

        newer = got["task-newer-flat"]
        assert newer[b"status"] == b"ok" and newer[b"schema_version"] == b"1.1", newer
        assert json.loads(newer[b"headers"]) == HEADERS
        assert b"trace_flags_v3" not in newer

        plain = got["task-newer-data"]
        assert plain[b"status"] == b"ok" and plain[b"schema_version"] == b"1", plain
        assert b"headers" not in plain  # empty headers are left out

        cancelled = got["task-marked"]
        assert cancelled[b"status"] == b"cancelled", cancelled
        assert cancelled[b"schema_version"] == b"1.1"
        assert json.loads(cancelled[b"headers"]) == HEADERS
        assert await redis.xlen(names.dead_letter) == 0


@pytest.mark.parametrize(
    ("entry", "field", "reason"),
    [
        pytest.param(  # an unknown field in a version the reader knows is a typo
            {"schema_version": "1.1", "prompt": "p", "trace_flags_v3": "sampled"},
            "trace_flags_v3",
            "trace_flags_v3: is not a field of Task",
            id="unknown-field-of-1.1",
        ),
        pytest.param(
            {"schema_version": "2.0", "prompt": "p"},
            "schema_version",
            f"schema_version: unsupported version 2.0: major 2 is not read here; {READS}",
            id="major-2",
        ),
        pytest.param(
            {"schema_version": "1.1.1", "prompt": "p"},
            "schema_version",
            'schema_version: must be MAJOR or MAJOR.MINOR, e.g. 1 or "1.1" (a string in JSON)',
            id="not-a-version",
        ),
        pytest.param(  # a newer minor's unknown fields are dropped, its known ones checked
            {"schema_version": "1.3", "prompt": "p", "urgency": "asap", "x_v3": "y"},
            "urgency",
            "urgency: must be one of low, normal, high, critical",
            id="newer-minor-bad-known-field",
        ),
        pytest.param(
            {"schema_version": "1.1", "prompt": "p", "headers": '{"-x": "1"}'},
            "headers",
            "headers: header name \"-x\" must be 1-128 letters, digits, '_', '.' or '-', "
            "first a letter or digit",
            id="bad-header-name",
        ),
        pytest.param(
            {"prompt": "p", "headers": json.dumps({"big": "x" * 4097})},
            "headers.big",
            "headers.big: must be at most 4096 characters",
            id="header-value-too-long",
        ),
    ],
)
@pytest.mark.timeout(60)
async def test_node_worker_rejects_what_its_version_does_not_allow(
    node_worker: Path,
    redis_url: str,
    redis: Redis,
    names: Names,
    tmp_path: Path,
    entry: dict[str, str],
    field: str,
    reason: str,
) -> None:
    entry_id = text(await redis.xadd(names.vendor_tasks("deepseek"), entry))  # type: ignore[arg-type]
    async with run_node(node_worker, redis_url, names, tmp_path / "logs") as node:

        async def fate() -> dict[str, tuple[str, dict[bytes, bytes]]]:
            return await fates(redis, names, {entry_id: "the task"})

        [(kind, record)] = (await eventually(fate, timeout=20, what="its fate")).values()
        assert kind == "dead", f"answered: {record}\n{node.tail()}"
        assert record[b"reason"].decode() == f"not a valid task: {reason}"
        assert record[b"field"].decode() == field
        assert record[b"schema_version"] == b"1"  # a dead-letter record is always 1
        assert decode_rejection(record).original == entry
