"""`swarm run worker --vendor V`: settings built once here, then the service runs.

A bad setting, an unknown vendor or (unless SWARM_WORKER_UNCONFIGURED=idle) a missing key
is one log line naming the variable, and exit code 2 (shared.runtime.lifecycle).
"""

from __future__ import annotations

import argparse
import asyncio
import os

from services.worker.service import run_worker
from services.worker.settings import WorkerSettings
from shared.llm.settings import VendorSettings
from shared.runtime.config_errors import load_all
from shared.runtime.lifecycle import Main, run_service
from shared.runtime.logging import configure_logging
from shared.runtime.settings import BusSettings, SwarmSettings


def run(args: argparse.Namespace) -> int:
    if getattr(args, "vendor", None):
        os.environ["SWARM_WORKER_VENDOR"] = args.vendor

    def setup() -> Main:
        swarm, settings, bus, vendors = load_all(
            SwarmSettings, WorkerSettings, BusSettings, VendorSettings
        )
        configure_logging(swarm.log_level, swarm.log_json)

        async def main(stop: asyncio.Event) -> int:
            return await run_worker(stop, swarm, bus, settings, vendors)

        return main

    return run_service(setup)
