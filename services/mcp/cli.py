"""`swarm mcp`: the swarm as an MCP server, over stdio (what an MCP client starts) or
streamable HTTP (`--http HOST:PORT`, 127.0.0.1 unless told otherwise). The parser is built
without importing the SDK, so `swarm` works where the `mcp` extra is not installed."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any

from redis.exceptions import RedisError

from services.mcp.settings import McpSettings
from shared.runtime.config_errors import load_all
from shared.runtime.logging import configure_logging, register_secret, scrub_text
from shared.runtime.redis import connect, wait_ready
from shared.runtime.settings import BusSettings, SwarmSettings

DEFAULT_HOST = "127.0.0.1"
_CONNECT_TIMEOUT_S = 10.0


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "mcp",
        help="serve the swarm to AI agents over MCP (stdio, or --http HOST:PORT)",
        description="An MCP server for Claude Code, Claude Desktop, Cursor or any MCP client: "
        "tools to post a task, wait for its finding, fetch a task's status and findings, "
        "list recent findings, ask a mega-shard, show the fleet's status and the spend; "
        "resources swarm://findings and swarm://findings/{task_id}. Speaks MCP on standard "
        "input and output unless --http is given. Uses REDIS_URL and SWARM_NAMESPACE; "
        "needs the `mcp` extra (pip install 'swarmbus[mcp]').",
    )
    p.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve streamable HTTP at http://HOST:PORT/mcp instead of stdio "
        f"(a bare PORT binds {DEFAULT_HOST})",
    )
    p.add_argument("--redis-url", help="overrides REDIS_URL")
    p.add_argument("--namespace", help="overrides SWARM_NAMESPACE")


def parse_http(value: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` or `PORT` (host 127.0.0.1); `[::1]:PORT` for IPv6."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "", value
    host = host.strip("[]") or DEFAULT_HOST
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--http wants HOST:PORT with a port from 1 to 65535, got {value!r}")
    return host, int(port)


def run(args: argparse.Namespace) -> int:
    # Flags become the environment the settings are built from, once (as `swarm run` does).
    for flag, env in (("redis_url", "REDIS_URL"), ("namespace", "SWARM_NAMESPACE")):
        value = getattr(args, flag, None)
        if value is not None:
            os.environ[env] = str(value)
    try:
        http = parse_http(args.http) if args.http else None
    except ValueError as exc:
        return _fail(str(exc))
    swarm, bus, settings = load_all(SwarmSettings, BusSettings, McpSettings)
    _log_to_stderr(swarm)
    try:
        from services.mcp.server import build_server  # noqa: PLC0415, F401 - the SDK
    except ImportError as exc:
        return _fail(f"swarm mcp needs the mcp extra: pip install 'swarmbus[mcp]' ({exc})")
    try:
        return asyncio.run(_serve(swarm, bus, settings, http))
    except KeyboardInterrupt:
        return 130
    except (ConnectionError, PermissionError) as exc:  # Redis down, credentials refused
        return _fail(str(exc).splitlines()[0])


async def _serve(
    swarm: SwarmSettings, bus: BusSettings, settings: McpSettings, http: tuple[str, int] | None
) -> int:
    from services.mcp.server import build_server  # noqa: PLC0415
    from services.mcp.swarm import SwarmTools  # noqa: PLC0415

    url = swarm.redis_url.get_secret_value()
    redis = connect(url, bus)
    try:
        await wait_ready(redis, url, min(bus.connect_timeout_s, _CONNECT_TIMEOUT_S))
        server = build_server(SwarmTools(redis, swarm, bus, settings))
        if http is None:
            await server.run_stdio_async()
        else:
            await server.run_streamable_http_async(host=http[0], port=http[1])
    except RedisError as exc:
        return _fail(f"Redis: {scrub_text(str(exc))}")
    finally:
        await redis.aclose()
    return 0


def _log_to_stderr(swarm: SwarmSettings) -> None:
    """The services' logging, but on stderr: on stdio, stdout carries the protocol."""
    import structlog  # noqa: PLC0415

    register_secret(swarm.redis_url.get_secret_value())
    configure_logging(swarm.log_level, swarm.log_json)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)


def _fail(message: str) -> int:
    sys.stderr.write(f"swarm mcp: error: {message}\n")
    return 2
