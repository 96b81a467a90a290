"""`swarm shard load|ask|list` and `swarm status`, run as a user runs them (subprocesses)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from services.simulator.server import Simulator
from shared.protocol import Names
from tests.megashard.conftest import StartShard


async def swarm(*args: str, redis_url: str, names: Names, sim: Simulator) -> tuple[int, str, str]:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "SWARM_NAMESPACE": names.namespace,
        "SWARM_SIMULATOR_URL": sim.base_url,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli.main",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


def corpus(root: Path) -> Path:
    folder = root / "ops"
    folder.mkdir()
    (folder / "retries.md").write_text("Our 429 retry policy: backoff with jitter. " * 200)
    (folder / "tickets.jsonl").write_text(
        "\n".join(
            json.dumps({"id": f"T-{i}", "text": f"Ticket {i}: printer jam on floor {i}."})
            for i in range(3)
        )
    )
    (folder / "diagram.png").write_bytes(b"\x89PNG")
    return folder


async def test_load_list_ask_and_status(
    tmp_path: Path,
    redis_url: str,
    names: Names,
    simulator: Simulator,
    start_shard: StartShard,
) -> None:
    run = {"redis_url": redis_url, "names": names, "sim": simulator}
    code, out, err = await swarm(
        "shard", "load", "ops", str(corpus(tmp_path)), "--vendor", "claude",
        "--specialty", "operations", **run,
    )  # fmt: skip
    assert code == 0, err
    assert "skipped" in out and "diagram.png" in out
    assert "shard ops v1: 4 documents" in out
    assert "(anthropic.count_tokens) of 200,000" in out

    code, out, err = await swarm("shard", "list", "--json", **run)
    assert code == 0, err
    [row] = json.loads(out)
    assert (row["shard"], row["version"], row["documents"], row["replicas"]) == ("ops", 1, 4, 0)
    assert row["specialty"] == "operations" and row["tokens"] > 2000

    await start_shard("ops")
    code, out, err = await swarm("shard", "ask", "operations", "What is the retry policy?", **run)
    assert code == 0, err
    assert "sources:  ops/retries.md" in out
    assert "tokens searched" in out and "cost:     $" in out

    code, out, err = await swarm("status", **run)
    assert code == 0, err
    assert "megashard" in out and "ops" in out
    assert f"context held by the swarm: {row['tokens']:,} tokens" in out


async def test_errors_are_one_clear_line(
    tmp_path: Path, redis_url: str, names: Names, simulator: Simulator
) -> None:
    run = {"redis_url": redis_url, "names": names, "sim": simulator}
    big = tmp_path / "big.txt"
    big.write_text("x" * 820_000)  # ~205K tokens: more than Claude's 200K window
    code, _, err = await swarm("shard", "load", "legal", str(big), "--vendor", "claude", **run)
    assert code == 2
    assert "Traceback" not in err
    assert err.startswith("swarm: error: shard 'legal': the context is ")
    assert "200,000 input tokens" in err and "big.txt" in err

    code, _, err = await swarm("shard", "load", "Bad Name", str(big), **run)
    assert code == 2 and "shard id 'Bad Name' must be" in err

    code, _, err = await swarm("shard", "load", "legal", str(tmp_path / "missing"), **run)
    assert code == 2 and "no such file or folder" in err

    code, _, err = await swarm("shard", "ask", "nobody", "hello?", "--timeout", "1", **run)
    assert code == 2 and "no reply from shard 'nobody'" in err
