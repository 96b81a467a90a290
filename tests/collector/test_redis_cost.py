"""What storing a finding costs Redis, on a private redis-server (its counters are this
test's alone): the check and the store script of every finding handled at once go in one
pipeline, so round trips are a fraction of the findings, not two per finding."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis

from services.collector.service import run_collector
from services.collector.settings import CollectorSettings
from shared.bus.findings import run_progress
from shared.protocol import Finding, Names, encode
from shared.runtime.settings import BusSettings
from tests.redis_counters import cost_of, needs_redis_server, settings_for

FINDINGS = 2000

pytestmark = needs_redis_server


async def test_findings_are_stored_a_batch_at_a_time(
    private_url: str, names: Names, tmp_path: Path
) -> None:
    redis = Redis.from_url(private_url)
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(FINDINGS):
            finding = Finding(
                task_id=f"t{i}", worker_id="w", vendor="deepseek", model="deepseek-flash",
                summary="s", latency_ms=1, run_id="cost",
            )  # fmt: skip
            pipe.xadd(names.findings, encode(finding))  # type: ignore[arg-type]
        await pipe.execute()
    settings = CollectorSettings(export_path=str(tmp_path / "findings.jsonl"))
    swarm = settings_for(private_url, names, "collector-cost")

    async def stored() -> bool:
        return (await run_progress(redis, names, "cost")).finished == FINDINGS

    calls, reads = await cost_of(
        redis,
        lambda stop: run_collector(stop, swarm, BusSettings(), settings),
        stored,
        what=f"{FINDINGS} findings stored",
    )
    await redis.aclose()
    # Every finding checked and stored once: the HEXISTS and the store script (EVALSHA;
    # the bus's lease and reclaim scripts add a few more).
    assert FINDINGS <= calls.get("hexists", 0) <= FINDINGS * 1.02, calls
    assert calls.get("evalsha", 0) >= FINDINGS, calls
    # Round trips: Redis read a fraction of two requests per finding.
    assert reads < FINDINGS / 2, (reads, calls)
