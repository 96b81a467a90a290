"""`swarm run dispatcher`: settings built once here, then the service runs."""

from __future__ import annotations

import argparse
import asyncio

from services.dispatcher.service import run_dispatcher
from services.dispatcher.settings import DispatcherSettings
from shared.llm.settings import VendorSettings
from shared.runtime.lifecycle import run as run_service
from shared.runtime.logging import configure_logging
from shared.runtime.settings import BusSettings, SwarmSettings


def run(_args: argparse.Namespace) -> int:
    swarm = SwarmSettings()
    configure_logging(swarm.log_level, swarm.log_json)
    settings, bus, vendors = DispatcherSettings(), BusSettings(), VendorSettings()

    async def main(stop: asyncio.Event) -> int:
        return await run_dispatcher(stop, swarm, bus, settings, vendors)

    return run_service(main)
