"""`swarm run simulator [--host H] --port N [--latency S] [--error-rate R] [--config FILE]`.

Serves on 127.0.0.1 (or `--host` / SWARM_SIMULATOR_HOST, e.g. 0.0.0.0 in a container) until
SIGTERM/SIGINT and prints one line with the base URLs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource

import structlog
from pydantic import ValidationError

from services.simulator.config import SimulatorConfig
from services.simulator.server import Simulator
from shared.runtime import lifecycle
from shared.runtime.config_errors import ConfigError, load
from shared.runtime.logging import configure_logging
from shared.runtime.settings import SwarmSettings

log = structlog.get_logger("swarm.simulator")

DEFAULT_PORT = 8400
HOST = "127.0.0.1"


def load_config(args: argparse.Namespace) -> SimulatorConfig:
    path = getattr(args, "config", None)
    config = SimulatorConfig.from_toml(path) if path else SimulatorConfig()
    return config.with_overrides(
        latency_s=getattr(args, "latency", None), error_rate=getattr(args, "error_rate", None)
    )


def raise_open_file_limit() -> None:
    """Thousands of concurrent clients need thousands of sockets; 1024 is a common soft cap."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 65_536 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def run(args: argparse.Namespace) -> int:
    try:
        settings = load(SwarmSettings)
    except ConfigError as exc:
        return lifecycle.refuse(exc)
    configure_logging(settings.log_level, json=settings.log_json)
    raise_open_file_limit()
    try:
        config = load_config(args)
    except (OSError, ValueError, ValidationError) as exc:  # TOMLDecodeError is a ValueError
        log.error("simulator.bad_config", path=getattr(args, "config", None), error=str(exc))
        return 2
    port = getattr(args, "port", None)
    port = DEFAULT_PORT if port is None else int(port)
    host = getattr(args, "host", None) or os.environ.get("SWARM_SIMULATOR_HOST") or HOST

    async def main(stop: asyncio.Event) -> int:
        sim = Simulator(config)
        await sim.start(host, port)
        try:
            urls = " ".join(f"{vendor}={url}" for vendor, url in sim.vendor_urls().items())
            print(f"simulator on {sim.base_url} {urls}", flush=True)  # noqa: T201 - the CLI's answer
            log.info("simulator.started", base_url=sim.base_url, seed=config.seed)
            await stop.wait()
        finally:
            stats = sim.stats()
            await sim.stop()
        log.info("simulator.stopped", requests=stats.get("total"))
        return 0

    return lifecycle.run(main)
