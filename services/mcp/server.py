"""The MCP tools and resources (official `mcp` SDK, MCPServer), served over stdio or
streamable HTTP. Each tool is a thin wrapper of `SwarmTools`: its failures become tool
errors with one line for the agent (never a traceback, never the Redis URL).

No `from __future__ import annotations` here: the SDK reads each tool's signature for its
input schema, and the descriptions name limits from the settings, bound at definition.
"""

import json
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from pydantic import Field
from redis.exceptions import RedisError

from services.mcp.swarm import COMPLEXITIES, URGENCIES, SwarmToolError, SwarmTools
from shared.runtime.logging import scrub_text

T = TypeVar("T")

INSTRUCTIONS = (
    "A swarm of LLM workers from many vendors. post_task puts a task on the swarm and "
    "returns its task_id; wait_for_finding waits for its finding (call it again while it "
    "says still running); task_status shows a task's route and every finding; "
    "recent_findings lists the newest; ask_shard asks a mega-shard that holds a large "
    "context; swarm_status shows live workers and backlog; spend shows cost per vendor. "
    "Resources: swarm://findings (recent) and swarm://findings/{task_id}."
)


async def _run(call: Awaitable[T]) -> T:
    try:
        return await call
    except SwarmToolError as exc:
        raise ToolError(str(exc)) from None
    except RedisError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ToolError(f"Redis: {scrub_text(first)}") from None


def build_server(tools: SwarmTools) -> MCPServer[Any]:
    server: MCPServer[Any] = MCPServer("swarmbus", instructions=INSTRUCTIONS)
    limits = tools.settings

    @server.tool(description="Post a task to the swarm; returns its task_id.")
    async def post_task(
        prompt: Annotated[str, Field(description="what the model is asked")],
        *,
        vendor: Annotated[str | None, Field(description="pin a vendor, e.g. claude")] = None,
        model: Annotated[str | None, Field(description="pin a model")] = None,
        budget_usd: Annotated[float | None, Field(description="spending cap in USD")] = None,
        urgency: Annotated[str | None, Field(description=f"one of {', '.join(URGENCIES)}")] = None,
        task_type: Annotated[str | None, Field(description="e.g. research, code_review")] = None,
        complexity: Annotated[
            str | None, Field(description=f"routing hint: one of {', '.join(COMPLEXITIES)}")
        ] = None,
        context: Annotated[str | None, Field(description="text the prompt is about")] = None,
        shard: Annotated[str | None, Field(description="mega-shard to ask first")] = None,
    ) -> dict[str, Any]:
        return await _run(
            tools.post_task(
                prompt,
                vendor=vendor,
                model=model,
                budget_usd=budget_usd,
                urgency=urgency,
                task_type=task_type,
                complexity=complexity,
                context=context,
                parent_shard=shard,
            )
        )

    @server.tool(
        description="Wait up to timeout_s for a task's finding: its status, vendor/model, "
        "answer and cost, or done=false with where it stands."
    )
    async def wait_for_finding(
        task_id: str,
        timeout_s: Annotated[
            float, Field(description=f"seconds to wait, at most {limits.max_wait_s:g}")
        ] = 30.0,
    ) -> dict[str, Any]:
        return await _run(tools.wait_for_finding(task_id, timeout_s))

    @server.tool(description="A task's route (the dispatcher's record), summary and findings.")
    async def task_status(task_id: str) -> dict[str, Any]:
        return await _run(tools.task_status(task_id))

    @server.tool(description="The newest findings of the swarm, newest first.")
    async def recent_findings(
        limit: Annotated[int, Field(description=f"how many, 1 to {limits.max_recent}")] = 10,
    ) -> dict[str, Any]:
        return await _run(tools.recent_findings(limit))

    @server.tool(description="Ask a mega-shard (by id or specialty) a question about its context.")
    async def ask_shard(
        shard: str,
        question: str,
        timeout_s: Annotated[
            float, Field(description=f"seconds to wait, at most {limits.max_shard_wait_s:g}")
        ] = 60.0,
        max_tokens: Annotated[int, Field(description="answer length cap")] = 1024,
    ) -> dict[str, Any]:
        return await _run(
            tools.ask_shard(shard, question, timeout_s=timeout_s, max_tokens=max_tokens)
        )

    @server.tool(
        description="The fleet: live services per vendor with capacity and in-flight work, "
        "every stream's length and backlog, dead-letter and rejected counts, cost, shards."
    )
    async def swarm_status() -> dict[str, Any]:
        return await _run(tools.status())

    @server.tool(description="Cost, tasks and tokens per vendor and model, and the total.")
    async def spend() -> dict[str, Any]:
        return await _run(tools.spend())

    @server.resource(
        "swarm://findings",
        name="recent findings",
        description="the newest findings of the swarm",
        mime_type="application/json",
    )
    async def recent() -> str:
        return json.dumps(await _read(tools.recent_findings(limits.max_recent)))

    @server.resource(
        "swarm://findings/{task_id}",
        name="a task's findings",
        description="a task's summary and every finding",
        mime_type="application/json",
    )
    async def findings_of(task_id: str) -> str:
        return json.dumps(await _read(tools.task_status(task_id)))

    return server


async def _read(call: Awaitable[T]) -> T:
    try:
        return await _run(call)
    except ToolError as exc:
        raise ResourceError(str(exc)) from None
