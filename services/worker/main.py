"""`swarm run worker --vendor V`: settings built once here, then the service runs."""

from __future__ import annotations

import argparse
import asyncio
import os

from services.worker.service import run_worker
from services.worker.settings import WorkerSettings
from shared.llm.settings import VendorSettings
from shared.runtime.lifecycle import run as run_service
from shared.runtime.logging import configure_logging
from shared.runtime.settings import BusSettings, SwarmSettings


def run(args: argparse.Namespace) -> int:
    if getattr(args, "vendor", None):
        os.environ["SWARM_WORKER_VENDOR"] = args.vendor
    swarm = SwarmSettings()
    configure_logging(swarm.log_level, swarm.log_json)
    settings, bus, vendors = WorkerSettings(), BusSettings(), VendorSettings()
    try:
        vendors.endpoint(settings.vendor)
    except ValueError as exc:  # unknown vendor, or its key/URL missing
        raise SystemExit(f"swarm: error: {exc}") from None

    async def main(stop: asyncio.Event) -> int:
        return await run_worker(stop, swarm, bus, settings, vendors)

    return run_service(main)
