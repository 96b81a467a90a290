"""`swarm run dispatcher`: settings built once here, then the service runs."""

from __future__ import annotations

import argparse
import asyncio

from services.dispatcher.service import run_dispatcher
from services.dispatcher.settings import DispatcherSettings
from shared.llm.settings import VendorSettings
from shared.runtime.config_errors import load_all
from shared.runtime.lifecycle import Main, run_service
from shared.runtime.logging import configure_logging
from shared.runtime.settings import BusSettings, SwarmSettings


def run(_args: argparse.Namespace) -> int:
    def setup() -> Main:
        swarm, settings, bus, vendors = load_all(
            SwarmSettings, DispatcherSettings, BusSettings, VendorSettings
        )
        configure_logging(swarm.log_level, swarm.log_json)

        async def main(stop: asyncio.Event) -> int:
            return await run_dispatcher(stop, swarm, bus, settings, vendors)

        return main

    return run_service(setup)
