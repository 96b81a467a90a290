"""The console in a real browser: a task posted with redis-cli shows up on the open page
by itself; replay and cancel are refused, saying why, without the token, and a replay with
it puts the record back; the health endpoints answer as every service's do; a console
nobody has open reads nothing from Redis."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser
from redis.asyncio import Redis

from services.cli.redis_finder import private_redis_server
from shared.protocol import Names, Task, encode
from shared.runtime.redis import connect
from shared.runtime.settings import BusSettings
from tests.console.conftest import open_live, running_console

pytestmark = pytest.mark.skipif(shutil.which("redis-cli") is None, reason="needs redis-cli")

TOKEN = "console-test-token-5e1f"


async def redis_cli(redis_url: str, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "redis-cli", "-u", redis_url, *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0
    return out.decode().strip()


async def test_a_task_posted_with_redis_cli_appears_on_the_open_page_within_2s(
    browser: Browser, redis_url: str, names: Names, tmp_path: Path
) -> None:
    async with running_console(redis_url, names.namespace, tmp_path) as console:
        page = await open_live(browser, console.url)
        assert "No tasks in the intake stream." in await page.inner_text("#tasks")
        await page.evaluate("window.notReloaded = true")
        entry_id = await redis_cli(
            redis_url, "XADD", names.intake, "*", "prompt", "Research supplier terms"
        )
        posted = time.monotonic()
        row = page.locator("#tasks tr", has_text=entry_id)
        await row.wait_for(timeout=2000)
        seen_after = time.monotonic() - posted
        text = await row.inner_text()
        assert await page.evaluate("window.notReloaded") is True  # updated live, not reloaded
        assert "Research supplier terms" in text and "posted" in text
        # The stream is listed with its length too.
        assert names.intake in await page.inner_text("#streams")
    assert seen_after < 2.0


async def test_each_urgency_queue_shows_its_backlog_per_group(
    browser: Browser, redis: Redis, redis_url: str, names: Names, tmp_path: Path
) -> None:
    high = names.vendor_tasks("deepseek", "high")
    await redis.xgroup_create(high, Names.worker_group("deepseek"), id="0", mkstream=True)
    for n in range(3):
        await redis.xadd(high, {"prompt": f"Urgent {n}", "urgency": "high"})
    await redis.xreadgroup(Names.worker_group("deepseek"), "w-1", {high: ">"}, count=1)
    async with running_console(redis_url, names.namespace, tmp_path) as console:
        page = await open_live(browser, console.url)
        cells = page.locator("#streams tr", has_text=high).locator("td")
        assert await cells.nth(1).inner_text() == "3"
        assert await cells.nth(2).inner_text() == "worker-deepseek: 1 pending, lag 2, 1 consumer"


async def test_replay_and_cancel_are_refused_without_the_token_and_replay_works_with_it(
    browser: Browser, redis: Redis, redis_url: str, names: Names, tmp_path: Path
) -> None:
    await redis.xadd(names.intake, encode(Task(task_id="waiting", prompt="Summarise it.")))
    await redis.hset(names.task("waiting"), mapping={"state": "routed", "vendor": "deepseek"})
    record = (
        await redis.xadd(
            names.rejected,
            {
                "reason": "complexty: is not a field of Task",
                "field": "complexty",
                "source_stream": names.intake,
                "source_id": "1-0",
                "orig:prompt": "Replay me",
                "orig:complexity": "simple",
            },
        )
    ).decode()
    async with running_console(redis_url, names.namespace, tmp_path, token=TOKEN) as console:
        page = await open_live(browser, f"{console.url}/task/waiting")
        await page.click("button.cancel")
        await page.wait_for_selector("#flash.error")
        assert await page.inner_text("#flash") == "Refused: enter the console token to cancel."

        await page.goto(f"{console.url}/records/rejected")
        row = page.locator("#records tr", has_text=record)
        await row.locator("button.replay").click()
        await page.wait_for_selector("#flash.error")
        assert await page.inner_text("#flash") == "Refused: enter the console token to replay."
        await page.fill("#token", "not-the-token")
        await page.click("#token-form button")
        await row.locator("button.replay").click()
        await page.wait_for_function(
            "document.getElementById('flash').textContent.includes('wrong')"
        )
        assert await page.inner_text("#flash") == "Refused: wrong console token."
        assert await redis.xlen(names.cancels) == 0  # nothing was posted
        assert await redis.xlen(names.rejected) == 1  # nor replayed

        await page.fill("#token", TOKEN)
        await page.click("#token-form button")
        assert await page.inner_text("#token-state") == "token set for this tab"
        await row.locator("button.replay").click()
        await page.wait_for_selector("#flash.ok", timeout=30_000)
        message = await page.inner_text("#flash")
        assert message.startswith(f"replayed {record} to {names.intake} as ")
        assert await redis.xlen(names.rejected) == 0
        [(_, fields)] = await redis.xrevrange(names.intake, count=1)
        assert fields == {b"prompt": b"Replay me", b"complexity": b"simple"}
        log = console.log.read_text()
    assert TOKEN not in log and "not-the-token" not in log  # never logged


async def test_a_console_without_a_token_is_read_only_and_says_so(
    browser: Browser, redis: Redis, redis_url: str, names: Names, tmp_path: Path
) -> None:
    await redis.xadd(names.intake, encode(Task(task_id="waiting", prompt="Summarise it.")))
    await redis.hset(names.task("waiting"), mapping={"state": "routed", "vendor": "deepseek"})
    async with running_console(redis_url, names.namespace, tmp_path) as console:
        page = await open_live(browser, f"{console.url}/task/waiting")
        banner = await page.inner_text("#read-only")
        assert "Read-only" in banner and "SWARM_CONSOLE_TOKEN" in banner
        assert await page.is_disabled("button.cancel")
        answer = await page.evaluate(
            """async () => {
                const r = await fetch('/api/tasks/waiting/cancel', {method: 'POST',
                    headers: {Authorization: 'Bearer anything'}});
                return [r.status, (await r.json()).message];
            }"""
        )
    assert answer == [
        403,
        "Refused: this console is read-only (no SWARM_CONSOLE_TOKEN is set), so it cannot cancel.",
    ]
    assert await redis.xlen(names.cancels) == 0


async def test_metrics_livez_and_readyz_answer(
    redis_url: str, names: Names, tmp_path: Path
) -> None:
    async with (
        running_console(redis_url, names.namespace, tmp_path) as console,
        httpx.AsyncClient(base_url=console.url) as client,
    ):
        rebound = await client.get("/", headers={"Host": "attacker.example"})
        live = await client.get("/livez")
        ready = await client.get("/readyz")
        metrics = await client.get("/metrics")
    assert rebound.status_code == 400  # a rebound DNS name cannot read the pages
    assert (live.status_code, live.text) == (200, "ok\n")
    assert (ready.status_code, ready.text) == (200, "ok\n")
    assert metrics.status_code == 200 and "process_cpu_seconds_total" in metrics.text


async def test_a_console_nobody_watches_reads_nothing(tmp_path: Path) -> None:
    with private_redis_server() as (url, _):
        redis = connect(url, BusSettings())
        try:
            async with running_console(url, "idle", tmp_path) as console:
                await redis.config_resetstat()
                await asyncio.sleep(3)  # three refresh periods, no page open
                idle = await redis.info("commandstats")
                async with httpx.AsyncClient(base_url=console.url) as client:
                    assert (await client.get("/")).status_code == 200
                watched = await redis.info("commandstats")
        finally:
            await redis.aclose()
    assert not {"cmdstat_xrevrange", "cmdstat_xlen", "cmdstat_zrangebyscore"} & set(idle)
    assert watched["cmdstat_xrevrange"]["calls"] >= 1  # a page load reads at once
