"""docs/protocol.md's "follow a task" walkthrough, run as printed: a redis-cli user posts a
task without a task_id and follows it by the id XADD printed, with redis-cli and with
`swarm status` / `swarm findings`, against the real fleet (CLI processes, namespace
`swarm`) on a private redis-server, so the printed key names are the real ones."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from services.cli.redis_finder import private_redis_server
from shared.protocol import Finding, Names
from shared.runtime.redis import connect
from shared.runtime.settings import BusSettings
from tests.chaos.checks import sim_config, simple_tier_policy
from tests.swarm_procs import SwarmProcs

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
STREAM_ID = re.compile(r"\d+-\d+")

pytestmark = pytest.mark.skipif(shutil.which("redis-cli") is None, reason="needs redis-cli")


def walkthrough(title: str) -> list[str]:
    """The lines of the sh block under `<!-- walkthrough: title -->`."""
    text = DOC.read_text()
    start = text.index(f"<!-- walkthrough: {title} -->")
    block = text[start:].split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


async def _bash(script: str, env: dict[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-euo",
        "pipefail",
        "-c",
        script,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, f"{script}\n{err.decode()}"
    return out.decode()


async def test_a_task_posted_with_redis_cli_is_followed_by_the_id_xadd_printed(
    tmp_path: Path,
) -> None:
    lines = walkthrough("follow a task")
    assert lines[0].startswith("ID=$(redis-cli XADD swarm:tasks")
    names = Names("swarm")
    with private_redis_server() as (url, _):
        port = url.rsplit(":", 1)[1].split("/")[0]
        # The lines as printed; `redis-cli` reaches this test's server, `swarm` is this venv's.
        prelude = f'redis-cli() {{ command redis-cli -p {port} "$@"; }}\n'
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "REDIS_URL": url,
            "SWARM_NAMESPACE": "swarm",
            "COLUMNS": "200",
        }
        redis = connect(url, BusSettings())
        try:
            async with SwarmProcs(url, names, tmp_path / "logs") as swarm:
                await swarm.simulator(sim_config(0.05))
                policy = simple_tier_policy(swarm.logs / "policy.toml", "deepseek-flash")
                await swarm.start("dispatcher", "dispatcher", env=policy)
                await swarm.start("collector", "collector")
                await swarm.start("worker-deepseek-1", "worker", "--vendor", "deepseek")
                await swarm.wait_live(redis, names, {"worker-deepseek": 1, "collector": 1})

                entry_id = (await _bash(prelude + lines[0] + '\necho "$ID"', env)).strip()
                assert STREAM_ID.fullmatch(entry_id), entry_id

                async def finished() -> bool:
                    return bool(await redis.exists(names.task_summary(entry_id)))

                await swarm.wait_for(finished, timeout=30, what="the task's finding")
                out = await _bash(prelude + f"ID={entry_id}\n" + "\n".join(lines[1:]), env)
                calls = (await swarm.sim_stats())["total"]
        finally:
            await redis.aclose()

    # The dispatcher's record and the collector's summary, under the entry id.
    assert "routed" in out or "done" in out
    assert "deepseek" in out
    finding_lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert len(finding_lines) == 1, out  # HVALS: exactly one finding
    finding = Finding.model_validate(json.loads(finding_lines[0]))
    assert (finding.task_id, finding.intake_id) == (entry_id, entry_id)
    assert finding.summary
    # `swarm status ID` and `swarm findings ID` found it (no "no record of task").
    assert "no record" not in out and "no findings" not in out
    assert out.count(entry_id) >= 2
    assert calls == 1
