"""`swarm run collector`: settings built once here, then the service runs."""

from __future__ import annotations

import argparse
import asyncio

from services.collector.service import run_collector
from services.collector.settings import CollectorSettings
from shared.runtime.config_errors import load_all
from shared.runtime.lifecycle import Main, run_service
from shared.runtime.logging import configure_logging
from shared.runtime.settings import BusSettings, SwarmSettings


def run(_args: argparse.Namespace) -> int:
    def setup() -> Main:
        swarm, settings, bus = load_all(SwarmSettings, CollectorSettings, BusSettings)
        configure_logging(swarm.log_level, swarm.log_json)

        async def main(stop: asyncio.Event) -> int:
            return await run_collector(stop, swarm, bus, settings)

        return main

    return run_service(setup)
