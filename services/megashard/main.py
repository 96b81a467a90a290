"""`swarm run megashard --shard ID`: settings built once here, then the service runs."""

from __future__ import annotations

import argparse
import asyncio
import os

from services.megashard.service import run_megashard
from services.megashard.settings import ShardSettings
from shared.llm.settings import VendorSettings
from shared.runtime.lifecycle import run as run_service
from shared.runtime.logging import configure_logging
from shared.runtime.settings import BusSettings, SwarmSettings


def run(args: argparse.Namespace) -> int:
    if getattr(args, "shard", None):
        os.environ["SWARM_SHARD_ID"] = args.shard
    swarm = SwarmSettings()
    configure_logging(swarm.log_level, swarm.log_json)
    settings, bus, vendors = ShardSettings(), BusSettings(), VendorSettings()

    async def main(stop: asyncio.Event) -> int:
        return await run_megashard(stop, swarm, bus, settings, vendors)

    return run_service(main)
