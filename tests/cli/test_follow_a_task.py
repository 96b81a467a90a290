"""docs/protocol.md's "follow a task" walkthrough, run as printed: a redis-cli user posts a
task without a task_id and follows it by the id XADD printed, with redis-cli and with
`swarm status` / `swarm findings`, against the real fleet (CLI processes, namespace
`swarm`) on a private redis-server, so the printed key names are the real ones."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from shared.protocol import Finding
from tests.cli.typed_fleet import typed_fleet

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
STREAM_ID = re.compile(r"\d+-\d+")

pytestmark = pytest.mark.skipif(shutil.which("redis-cli") is None, reason="needs redis-cli")


def walkthrough(title: str) -> list[str]:
    """The lines of the sh block under `<!-- walkthrough: title -->`."""
    text = DOC.read_text()
    start = text.index(f"<!-- walkthrough: {title} -->")
    block = text[start:].split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


async def test_a_task_posted_with_redis_cli_is_followed_by_the_id_xadd_printed(
    tmp_path: Path,
) -> None:
    lines = walkthrough("follow a task")
    assert lines[0].startswith("ID=$(redis-cli XADD swarm:tasks")
    async with typed_fleet(tmp_path / "logs") as fleet:
        _, out = await fleet.bash(lines[0] + '\necho "$ID"')
        entry_id = out.strip()
        assert STREAM_ID.fullmatch(entry_id), entry_id

        async def finished() -> bool:
            return bool(await fleet.redis.exists(fleet.names.task_summary(entry_id)))

        await fleet.swarm.wait_for(finished, timeout=30, what="the task's finding")
        _, out = await fleet.bash(f"ID={entry_id}\n" + "\n".join(lines[1:]))
        calls = (await fleet.swarm.sim_stats())["total"]

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
