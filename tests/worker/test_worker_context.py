"""A task that asks a shard for context gets it into its prompt, and the finding cites it."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from shared.bus import Bus, Heartbeat
from shared.protocol import Names
from shared.runtime.metrics import Metrics
from shared.runtime.settings import BusSettings
from tests.static_shard import serve_static_context
from tests.worker.conftest import StartWorker, post, wait_findings


async def test_worker_asks_the_shard_and_cites_its_sources(
    redis: Redis, names: Names, start_worker: StartWorker
) -> None:
    settings = BusSettings(block_ms=200)
    shard_bus = Bus(redis, names, settings, Metrics.create())
    stop = asyncio.Event()
    beat = Heartbeat(
        redis,
        names,
        "history-shard",
        service="megashard",
        interval_s=0.5,
        ttl_s=5,
        info={"shard_id": "history", "specialty": "supplier-history"},
    )
    await beat.beat()
    responder = asyncio.create_task(
        serve_static_context(
            shard_bus,
            shard_id="history",
            stop=stop,
            consumer="history-shard",
            documents={
                "contracts_2020.txt": "Supplier Dupont payment terms were net 60 in 2020.",
                "weather.txt": "It rained a lot in March.",
            },
        )
    )
    try:
        await start_worker("claude")
        await post(
            redis,
            names,
            "claude",
            task_id="ctx-1",
            prompt="What were Dupont supplier payment terms?",
            parent_shard="supplier-history",
        )
        [finding] = await wait_findings(redis, names, 1)
    finally:
        stop.set()
        await responder
        await beat.leave()
    assert finding.task_id == "ctx-1"
    assert finding.sources == ("history:contracts_2020.txt",)
    # The shard's answer went into the prompt: more input tokens than the prompt alone.
    assert finding.input_tokens + finding.cache_read_tokens + finding.cache_write_tokens > 20
