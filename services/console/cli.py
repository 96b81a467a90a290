"""`swarm console`: the live web console in the foreground (uvicorn), until Ctrl-C or
SIGTERM. The parser is built without importing the web stack, so `swarm` works in images
that do not carry the `console` extra."""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "console",
        help="the live web console: fleet, backlog, cost, tasks, dead letters; cancel, replay",
        description="Serve the web console (default http://127.0.0.1:8300): live members, "
        "streams and backlog per group, cost and tokens per vendor and model over the last "
        "hour, recent tasks with their route and findings, one task's page, dead-letter and "
        "rejected entries. Replay and cancel need SWARM_CONSOLE_TOKEN (or "
        "SWARM_CONSOLE_TOKEN_FILE); without it the console is read-only. Uses REDIS_URL and "
        "SWARM_NAMESPACE; give it the Redis user `console` (deploy/redis/users.acl).",
    )
    p.add_argument("--host", help="address to listen on (SWARM_CONSOLE_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (SWARM_CONSOLE_PORT, default 8300)")
    p.add_argument("--redis-url", help="overrides REDIS_URL")
    p.add_argument("--namespace", help="overrides SWARM_NAMESPACE")


def run(args: argparse.Namespace) -> int:
    # Flags become the environment the settings are built from, once (as `swarm run` does).
    for flag, env in (
        ("host", "SWARM_CONSOLE_HOST"),
        ("port", "SWARM_CONSOLE_PORT"),
        ("redis_url", "REDIS_URL"),
        ("namespace", "SWARM_NAMESPACE"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            os.environ[env] = str(value)
    from services.console.settings import ConsoleSettings  # noqa: PLC0415
    from shared.runtime.config_errors import ConfigError, load_all  # noqa: PLC0415
    from shared.runtime.lifecycle import refuse  # noqa: PLC0415
    from shared.runtime.logging import configure_logging  # noqa: PLC0415
    from shared.runtime.settings import BusSettings, SwarmSettings  # noqa: PLC0415

    try:
        swarm, bus, settings = load_all(SwarmSettings, BusSettings, ConsoleSettings)
    except ConfigError as exc:
        return refuse(exc)
    configure_logging(swarm.log_level, swarm.log_json)
    from services.console.server import serve  # noqa: PLC0415

    try:
        return asyncio.run(serve(swarm, bus, settings))
    except KeyboardInterrupt:
        return 130
