"""`swarm run megashard --shard ID`: settings built once here, then the service runs."""

from __future__ import annotations

import argparse
import asyncio
import os

from services.megashard.service import run_megashard
from services.megashard.settings import ShardSettings
from shared.llm.settings import VendorSettings
from shared.runtime.config_errors import load_all
from shared.runtime.lifecycle import Main, run_service
from shared.runtime.logging import configure_logging
from shared.runtime.settings import BusSettings, SwarmSettings


def run(args: argparse.Namespace) -> int:
    if getattr(args, "shard", None):
        os.environ["SWARM_SHARD_ID"] = args.shard

    def setup() -> Main:
        swarm, settings, bus, vendors = load_all(
            SwarmSettings, ShardSettings, BusSettings, VendorSettings
        )
        configure_logging(swarm.log_level, swarm.log_json)

        async def main(stop: asyncio.Event) -> int:
            return await run_megashard(stop, swarm, bus, settings, vendors)

        return main

    return run_service(setup)
