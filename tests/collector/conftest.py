"""The collector on a real Redis, started in this process with a stop event."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from services.collector.service import run_collector
from services.collector.settings import CollectorSettings
from shared.protocol import Finding, Names, encode
from shared.runtime.metrics import Metrics
from shared.runtime.settings import BusSettings, SwarmSettings
from tests.waiting import eventually


@dataclass
class RunningCollector:
    task: asyncio.Task[int]
    stop: asyncio.Event
    export_path: Path
    metrics: Metrics

    def export_lines(self) -> list[Finding]:
        if not self.export_path.exists():
            return []
        text = self.export_path.read_text(encoding="utf-8")
        return [Finding.model_validate_json(line) for line in text.splitlines()]


StartCollector = Callable[..., Awaitable[RunningCollector]]


@pytest.fixture
async def start_collector(
    redis_url: str, names: Names, tmp_path: Path
) -> AsyncIterator[StartCollector]:
    running: list[RunningCollector] = []

    async def start(consumer: str = "collector-test", **settings: Any) -> RunningCollector:
        stop = asyncio.Event()
        swarm = SwarmSettings(
            REDIS_URL=redis_url,
            SWARM_NAMESPACE=names.namespace,
            METRICS_PORT=0,
            CONSUMER_NAME=consumer,
        )
        bus = BusSettings(
            block_ms=200,
            reclaim_interval_s=0.2,
            heartbeat_interval_s=0.2,
            heartbeat_ttl_s=1.0,
            drain_timeout_s=3,
        )
        settings.setdefault("export_path", str(tmp_path / f"{consumer}.jsonl"))
        collector_settings = CollectorSettings(**settings)
        metrics = Metrics.create()
        task = asyncio.create_task(
            run_collector(stop, swarm, bus, collector_settings, metrics=metrics)
        )
        collector = RunningCollector(task, stop, Path(settings["export_path"]), metrics)
        running.append(collector)
        return collector

    yield start
    for c in running:
        c.stop.set()
    for c in running:
        assert await asyncio.wait_for(c.task, 20) == 0


_ids = itertools.count()


def make_finding(**fields: Any) -> Finding:
    """A finding with plausible defaults; any field can be given."""
    n = next(_ids)
    values: dict[str, Any] = {
        "task_id": f"task-{n}",
        "worker_id": "worker-deepseek-1",
        "vendor": "deepseek",
        "model": "deepseek-chat",
        "summary": f"finding {n}",
        "input_tokens": 100,
        "output_tokens": 20,
        "cost_usd": 0.001,
        "latency_ms": 250.0,
    }
    values.update(fields)
    return Finding(**values)


async def publish(redis: Redis, names: Names, *findings: Finding) -> None:
    for f in findings:
        await redis.xadd(names.findings, encode(f))  # type: ignore[arg-type]


async def wait_handled(redis: Redis, names: Names, timeout: float = 20) -> None:
    """Until the collector group has read every entry of the stream and acked them all."""

    async def done() -> bool:
        length = await redis.xlen(names.findings)
        try:
            groups = await redis.xinfo_groups(names.findings)
        except Exception:  # no stream or group yet
            return False
        for g in groups:
            if g["name"] == Names.COLLECTOR_GROUP.encode():
                return bool(g["entries-read"] == length and g["pending"] == 0)
        return False

    await eventually(done, timeout=timeout, what="the collector to handle every finding")
