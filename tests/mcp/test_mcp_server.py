"""`swarm mcp` driven by the MCP SDK's own client, as Claude Code or Cursor would drive it:
over stdio (the client starts `swarm mcp` itself) and over streamable HTTP, against a real
Redis and a real fleet (simulator, dispatcher, collector, a deepseek worker as processes)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, TextContent, TextResourceContents
from redis.asyncio import Redis

from services.mcp.cli import parse_http
from shared.bus.findings import task_view, totals_by_model
from shared.protocol import Names, Task, decode
from shared.runtime.net import free_port
from tests.chaos.checks import sim_config
from tests.swarm_procs import SwarmProcs
from tests.swarm_procs import deepseek_fleet as fleet

ROOT = Path(__file__).resolve().parents[2]
SWARM = Path(sys.executable).parent / "swarm"  # the installed `swarm` command


def _env(redis_url: str, names: Names) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "SWARM_NAMESPACE": names.namespace,
        "LOG_LEVEL": "warning",
        "PATH": os.environ["PATH"],
    }


@contextlib.asynccontextmanager
async def mcp_stdio(redis_url: str, names: Names, logs: Path) -> AsyncIterator[ClientSession]:
    """`swarm mcp` started by the SDK's stdio client, as an MCP client starts it."""
    params = StdioServerParameters(
        command=str(SWARM), args=["mcp"], env=_env(redis_url, names), cwd=logs
    )
    with (logs / "mcp.stderr").open("w") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


def _data(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, _text(result)
    assert result.structured_content is not None
    return result.structured_content


def _text(result: CallToolResult) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, TextContent))


@pytest.mark.timeout(90)
async def test_an_agent_posts_a_task_and_reads_its_finding_status_and_spend(
    redis_url: str, names: Names, redis: Redis, tmp_path: Path
) -> None:
    async with fleet(redis_url, names, tmp_path) as swarm:
        await swarm.wait_live(redis, names, {"worker-deepseek": 1, "collector": 1, "dispatcher": 1})
        async with mcp_stdio(redis_url, names, tmp_path) as mcp:
            tools = {t.name: t for t in (await mcp.list_tools()).tools}
            assert {"post_task", "wait_for_finding", "task_status", "recent_findings"} <= set(tools)
            assert {"ask_shard", "swarm_status", "spend"} <= set(tools)
            assert "urgency" in tools["post_task"].input_schema["properties"]

            posted = _data(
                await mcp.call_tool(
                    "post_task",
                    {"prompt": "Summarise our supplier terms", "urgency": "high",
                     "complexity": "simple", "budget_usd": 0.5},
                )
            )  # fmt: skip
            task_id = posted["task_id"]
            assert posted["stream"] == names.intake
            result = _data(
                await mcp.call_tool("wait_for_finding", {"task_id": task_id, "timeout_s": 30})
            )
            # What the collector stored is what the agent is told.
            view = await task_view(redis, names, task_id)
            assert view is not None
            finding = view.findings[-1]
            assert result["done"] is True
            assert (result["status"], result["vendor"], result["model"]) == (
                "ok",
                "deepseek",
                finding.model,
            )
            assert result["answer"] == finding.summary and finding.summary
            assert result["cost_usd"] == pytest.approx(view.summary.cost_usd)
            assert result["record"]["state"] == "done"

            status = _data(await mcp.call_tool("task_status", {"task_id": task_id}))
            assert [f["finding_id"] for f in status["findings"]] == [finding.finding_id]
            assert status["record"]["vendor"] == "deepseek"

            fleet_now = _data(await mcp.call_tool("swarm_status", {}))
            live = {(r["service"], r["name"]): r for r in fleet_now["live"]}
            assert live[("worker-deepseek", "deepseek")]["replicas"] == 1
            assert ("collector", "") in live
            assert names.intake in {s["stream"] for s in fleet_now["streams"]}
            assert [(t["vendor"], t["tasks"]) for t in fleet_now["totals"]] == [("deepseek", 1)]

            spent = _data(await mcp.call_tool("spend", {}))
            totals = await totals_by_model(redis, names)
            assert [(v["vendor"], v["tasks"]) for v in spent["vendors"]] == [("deepseek", 1)]
            assert spent["cost_usd"] == pytest.approx(sum(t.cost_usd for t in totals))
            assert spent["cost_usd"] == pytest.approx(view.summary.cost_usd)

            recent = _data(await mcp.call_tool("recent_findings", {"limit": 5}))
            assert [f["task_id"] for f in recent["findings"]] == [task_id]

            read = await mcp.read_resource(f"swarm://findings/{task_id}")
            content = read.contents[0]
            assert isinstance(content, TextResourceContents)
            assert content.mime_type == "application/json"
            doc = json.loads(content.text)
            assert doc["findings"][0]["summary"] == finding.summary
            assert doc["status"] == "ok"
            listed = await mcp.read_resource("swarm://findings")
            assert isinstance(listed.contents[0], TextResourceContents)
            assert task_id in listed.contents[0].text
            for text in (json.dumps(fleet_now), json.dumps(result), json.dumps(spent)):
                assert redis_url not in text


@pytest.mark.timeout(90)
async def test_an_agent_asks_a_mega_shard(
    redis_url: str, names: Names, redis: Redis, tmp_path: Path
) -> None:
    docs = tmp_path / "ops"
    docs.mkdir()
    (docs / "retries.md").write_text("Our 429 retry policy: backoff with jitter. " * 200)
    (docs / "printers.md").write_text("Printer jams on floor 3 are fixed by facilities. " * 50)
    async with SwarmProcs(redis_url, names, tmp_path / "logs") as swarm:
        sim_url = await swarm.simulator(sim_config(0.05))
        load = await asyncio.create_subprocess_exec(
            str(SWARM), "shard", "load", "ops", str(docs), "--vendor", "claude",
            "--specialty", "operations",
            env={**_env(redis_url, names), "SWARM_SIMULATOR_URL": sim_url},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(load.communicate(), 60)
        assert load.returncode == 0, out.decode()
        await swarm.start("megashard-ops", "megashard", "--shard", "ops")
        await swarm.wait_live(redis, names, {"megashard": 1})
        async with mcp_stdio(redis_url, names, tmp_path) as mcp:
            reply = _data(
                await mcp.call_tool(
                    "ask_shard",
                    {"shard": "operations", "question": "What is the retry policy?",
                     "timeout_s": 30},
                )
            )  # fmt: skip
            assert reply["status"] == "ok" and reply["shard_id"] == "ops"
            assert [s for s in reply["sources"] if s.startswith("ops/retries.md")]
            assert reply["answer"] and reply["context_tokens_searched"] > 0
            assert reply["vendor"] == "claude"

            nobody = await mcp.call_tool(
                "ask_shard", {"shard": "nobody", "question": "hello?", "timeout_s": 1}
            )
            assert nobody.is_error and "nobody" in _text(nobody)


@pytest.mark.timeout(60)
async def test_bad_arguments_are_tool_errors_that_say_what_is_allowed(
    redis_url: str, names: Names, redis: Redis, tmp_path: Path
) -> None:
    async with mcp_stdio(redis_url, names, tmp_path) as mcp:
        bad = await mcp.call_tool("post_task", {"prompt": "hello", "urgency": "asap"})
        assert bad.is_error
        assert "urgency" in _text(bad)
        assert "'low', 'normal', 'high' or 'critical'" in _text(bad)
        assert "nothing posted" in _text(bad)
        assert await redis.xlen(names.intake) == 0  # nothing posted

        over = await mcp.call_tool("post_task", {"prompt": "hello", "budget_usd": -1})
        assert over.is_error and "budget_usd" in _text(over)
        wait = await mcp.call_tool("wait_for_finding", {"task_id": "t1", "timeout_s": -5})
        assert wait.is_error and "timeout_s must be between 0 and 300" in _text(wait)
        unknown = await mcp.call_tool("task_status", {"task_id": "no-such-task"})
        assert unknown.is_error and "no record of task 'no-such-task'" in _text(unknown)
        missing = await mcp.call_tool("post_task", {"urgency": "high"})
        assert missing.is_error and "prompt" in _text(missing)
        with pytest.raises(MCPError, match="no record of task 'nope'"):
            await mcp.read_resource("swarm://findings/nope")

        # A task nobody routes yet: the wait says so instead of hanging or failing.
        posted = _data(await mcp.call_tool("post_task", {"prompt": "hello"}))
        waited = _data(
            await mcp.call_tool(
                "wait_for_finding", {"task_id": posted["task_id"], "timeout_s": 0.2}
            )
        )
        assert waited["done"] is False
        assert "still running" in waited["message"]
        assert "dispatcher" in waited["message"]
        # The server is still serving after every error.
        assert (await mcp.list_tools()).tools


@pytest.mark.timeout(60)
async def test_streamable_http_serves_the_same_tools(
    redis_url: str, names: Names, redis: Redis, tmp_path: Path
) -> None:
    port = free_port()
    log = (tmp_path / "mcp-http.log").open("w")
    proc = await asyncio.create_subprocess_exec(
        str(SWARM), "mcp", "--http", str(port),
        env=_env(redis_url, names), cwd=tmp_path, stdout=log, stderr=log,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/mcp"
        for _ in range(100):  # until it listens
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            assert proc.returncode is None, (tmp_path / "mcp-http.log").read_text()
            await asyncio.sleep(0.1)
        async with (
            streamable_http_client(url) as (read, write),
            ClientSession(read, write) as mcp,
        ):
            await mcp.initialize()
            assert "post_task" in {t.name for t in (await mcp.list_tools()).tools}
            posted = _data(
                await mcp.call_tool("post_task", {"prompt": "over http", "urgency": "critical"})
            )
        entries = await redis.xrange(names.intake)
        assert len(entries) == 1
        task = decode(Task, entries[0][1])
        assert (task.task_id, task.prompt, task.urgency.value) == (
            posted["task_id"],
            "over http",
            "critical",
        )
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
        log.close()


def test_http_binds_loopback_unless_told() -> None:
    assert parse_http("8765") == ("127.0.0.1", 8765)
    assert parse_http(":8765") == ("127.0.0.1", 8765)
    assert parse_http("0.0.0.0:80") == ("0.0.0.0", 80)
    assert parse_http("[::1]:9000") == ("::1", 9000)
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_http("localhost:http")


def test_the_readme_snippet_is_valid_json_naming_a_command_that_exists() -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- mcp client config -->\n```json\n(.*?)```", readme, re.S)
    assert match, "README.md lost its MCP client config snippet"
    server = json.loads(match.group(1))["mcpServers"]["swarm"]
    assert server["command"] == "swarm"
    assert "REDIS_URL" in server["env"]
    # The snippet's command line, as the client would run it, is a real command.
    done = subprocess.run(
        [str(SWARM.parent / server["command"]), *server["args"], "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "usage: swarm mcp" in done.stdout
