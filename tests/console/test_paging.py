"""The console with 100,000 tasks in Redis (and 100,000 findings, 20,000 dead letters):
every page answers fast and shows one page of rows, the "Older" link leads to the next
page, and the console never walks the keyspace (a private Redis counts the commands)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser
from redis.asyncio import Redis

from services.cli.redis_finder import private_redis_server
from shared.protocol import Names
from shared.runtime.redis import connect
from shared.runtime.settings import BusSettings
from tests.console.conftest import open_live, running_console

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")

TASKS = 100_000
DEAD = 20_000
BATCH = 5_000
PAGE = 50


def tid(i: int) -> str:
    return f"task_{i:06d}"


async def fill(redis: Redis, names: Names) -> None:
    """The tasks, their records and findings, and the dead letters: pipelined batches."""
    route = {"state": "done", "vendor": "deepseek", "model": "deepseek-chat"}
    usage = {"worker_id": "w", "vendor": "deepseek", "model": "deepseek-chat",
             "input_tokens": "100", "output_tokens": "20", "cost_usd": "0.0001"}  # fmt: skip
    for start in range(0, TASKS, BATCH):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(start, start + BATCH):
                t, prompt = tid(i), f"Research item {i}"
                pipe.xadd(names.intake, {"task_id": t, "prompt": prompt})
                pipe.hset(names.task(t), mapping=route)
                pipe.hset(names.task_summary(t), mapping={"status": "ok", "cost_usd": "0.0001"})
                pipe.xadd(names.findings, {"task_id": t, **usage})
                if i < DEAD:
                    record = {
                        "reason": "delivered 5 times",
                        "source_stream": names.vendor_tasks("deepseek"),
                        "source_id": f"{i + 1}-0",
                        "orig:task_id": t,
                        "orig:prompt": prompt,
                    }
                    pipe.xadd(names.dead_letter, record)  # type: ignore[arg-type]
            await pipe.execute()


@pytest.mark.timeout(300)
async def test_pages_stay_paged_and_fast_with_100k_tasks(browser: Browser, tmp_path: Path) -> None:
    names = Names("big")
    with private_redis_server() as (url, _):
        redis = connect(url, BusSettings())
        try:
            await fill(redis, names)
            await redis.config_resetstat()
            async with running_console(url, names.namespace, tmp_path) as console:
                page = await open_live(browser, console.url)
                assert await page.locator("#tasks tbody tr").count() == PAGE
                assert "100,000" in await page.inner_text("#streams")

                started = time.monotonic()
                await page.goto(f"{console.url}/tasks")
                first_load_s = time.monotonic() - started
                rows = page.locator("#tasks tbody tr")
                assert await rows.count() == PAGE
                assert tid(TASKS - 1) in await rows.first.inner_text()
                assert tid(TASKS - PAGE) in await rows.last.inner_text()

                await page.click("a.older")
                await page.wait_for_url("**/tasks?before=*")
                assert await rows.count() == PAGE
                assert tid(TASKS - PAGE - 1) in await rows.first.inner_text()
                assert tid(TASKS - 2 * PAGE) in await rows.last.inner_text()
                assert await page.locator("a.newest").count() == 1

                await page.goto(f"{console.url}/records/dlq")
                assert "20,000 record(s)" in await page.inner_text("#records")
                records = page.locator("#records tbody tr")
                assert await records.count() == PAGE
                await page.click("a.older")
                assert await records.count() == PAGE
                assert tid(DEAD - PAGE - 1) in await records.first.inner_text()

                async with httpx.AsyncClient(base_url=console.url, timeout=10) as client:
                    timings = {}
                    for path in ("/", "/tasks", f"/task/{tid(5)}", "/records/dlq"):
                        t0 = time.monotonic()
                        reply = await client.get(path)
                        timings[path] = time.monotonic() - t0
                        assert reply.status_code == 200, path
            stats = await redis.info("commandstats")
        finally:
            await redis.aclose()
    assert first_load_s < 2.0
    assert max(timings.values()) < 1.0, timings
    # Paged reads only: no keyspace walk, no whole-stream read.
    assert not {"cmdstat_scan", "cmdstat_keys", "cmdstat_xinfo|stream"} & set(stats)
    assert stats["cmdstat_xrevrange"]["calls"] > 0
