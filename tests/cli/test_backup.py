"""`swarm export` and `swarm import` as typed: the findings of one Redis written out, then
restored into a fresh Redis (a private redis-server, as after losing the first), where
`swarm findings` and the totals read exactly as before; importing again changes nothing;
a bad line is named and skipped."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from redis.asyncio import Redis

from services.cli.redis_finder import private_redis_server
from shared.bus.findings import expect_run, totals_by_model
from shared.protocol import Finding, Names
from shared.runtime.redis import connect
from shared.runtime.settings import BusSettings
from tests.cli.conftest import Result, Swarm
from tests.cli.test_urgency import readme_line
from tests.collector.conftest import StartCollector, make_finding, publish, wait_handled


async def _stored(swarm: Swarm, redis: Redis, names: Names, start: StartCollector) -> None:
    """A run of three tasks (one failed, one answered twice) and a task of no run."""
    collector = await start()
    await expect_run(redis, names, "nightly", 3)
    for finding in (
        make_finding(task_id="n-1", run_id="nightly", summary="first", cost_usd=0.002),
        make_finding(task_id="n-2", run_id="nightly", status="failed", error="quota", summary=""),
        make_finding(task_id="n-2", run_id="nightly", summary="second go", cost_usd=0.001),
        make_finding(task_id="n-1", run_id="nightly", summary="again", worker_id="w-2"),
        make_finding(task_id="solo", task_type="research", cost_usd=None, model="my-llama"),
    ):
        await publish(redis, names, finding)
        await wait_handled(redis, names)  # one by one: the run lists tasks as they finished
    assert collector.export_path.exists()


async def _bash(swarm: Swarm, line: str, cwd: Path) -> Result:
    """`line` run by bash in `cwd`, `swarm` being this venv's, on `swarm`'s Redis."""
    env = {**swarm.env(), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        line,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return await Swarm.finish(proc)


def _filed(out: str) -> object:
    """`swarm findings --json` without the collector's filing times (`updated_at`): a
    restored task is filed at its finding's own time, milliseconds before."""

    def strip(value: object) -> object:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "updated_at"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(json.loads(out))


async def test_export_then_import_into_a_fresh_redis_restores_what_users_read(
    swarm: Swarm, redis: Redis, names: Names, start_collector: StartCollector, tmp_path: Path
) -> None:
    await _stored(swarm, redis, names, start_collector)
    backup = tmp_path / "findings.jsonl"
    # README "Operations", as printed, in a shell whose `swarm` is this checkout's.
    res = await _bash(swarm, readme_line(r"^swarm export -o findings.jsonl "), tmp_path)
    assert res.code == 0, res.err
    assert res.err.strip() == "exported 5 findings"
    run_line, *lines = backup.read_text().splitlines()
    assert json.loads(run_line) == {"run_id": "nightly", "expected": 3}
    exported = [Finding.model_validate_json(line) for line in lines]
    assert len({f.finding_id for f in exported}) == 5
    assert [f.timestamp for f in exported] == sorted(f.timestamp for f in exported)
    before = await swarm("findings", "--run", "nightly", "--json")
    solo_before = await swarm("findings", "solo", "--json")
    totals_before = await totals_by_model(redis, names)

    with private_redis_server() as (fresh_url, _):
        fresh = Swarm(fresh_url, Names(names.namespace))
        res = await _bash(fresh, readme_line(r"^swarm import findings.jsonl "), tmp_path)
        assert res.code == 0, res.err
        assert "imported 5 findings; 0 were stored already; 0 bad lines" in res.err
        after = await fresh("findings", "--run", "nightly", "--json")
        assert _filed(after.out) == _filed(before.out)
        assert _filed((await fresh("findings", "solo", "--json")).out) == _filed(solo_before.out)
        client = connect(fresh_url, BusSettings())
        try:
            assert await totals_by_model(client, names) == totals_before
            again = await fresh("import", str(backup))
            assert again.code == 0, again.err
            assert "imported 0 findings; 5 were stored already" in again.err
            assert await totals_by_model(client, names) == totals_before
        finally:
            await client.aclose()


async def test_the_collectors_own_export_file_imports_too_and_bad_lines_are_named(
    swarm: Swarm, redis: Redis, names: Names, start_collector: StartCollector, tmp_path: Path
) -> None:
    collector = await start_collector()
    await publish(redis, names, make_finding(task_id="kept", summary="kept answer"))
    await wait_handled(redis, names)
    mixed = tmp_path / "mixed.jsonl"
    good = collector.export_path.read_text().splitlines()
    assert len(good) == 1
    mixed.write_text(good[0] + "\n" + '{"task_id": "x"}\n' + "not json\n")
    with private_redis_server() as (fresh_url, _):
        fresh = Swarm(fresh_url, Names(names.namespace))
        res = await fresh("import", str(mixed))
        assert res.code == 1
        lines = res.err.splitlines()
        assert lines[0].startswith(f"{mixed}:2: worker_id: ")
        assert lines[1].startswith(f"{mixed}:3: ")
        assert "imported 1 findings; 0 were stored already; 2 bad lines" in res.err
        shown = await fresh("findings", "kept")
        assert shown.code == 0 and "kept answer" in shown.out
        missing = await fresh("import", str(tmp_path / "nope.jsonl"))
        assert missing.code == 2
        assert missing.err.strip() == (
            f"swarm: error: {tmp_path / 'nope.jsonl'}: No such file or directory"
        )
