"""Cancel from the console's task page, against the real fleet (simulator, dispatcher,
collector, a worker; tests/cli/typed_fleet.py): a task whose vendor call is in flight is
cancelled by a click, with the token, and the page itself turns to `cancelled`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright.async_api import Browser

from shared.bus.findings import task_view
from shared.protocol import Status, Task, encode
from tests.cli.typed_fleet import typed_fleet
from tests.console.conftest import open_live, running_console

pytestmark = pytest.mark.skipif(shutil.which("redis-cli") is None, reason="needs redis-cli")

TOKEN = "console-cancel-token-77"


@pytest.mark.timeout(180)
async def test_a_cancel_from_the_task_page_cancels_the_task(
    browser: Browser, tmp_path: Path
) -> None:
    async with typed_fleet(tmp_path / "logs", latency_s=30.0) as fleet:
        task = Task(task_id="slow", prompt="Summarise the 2021 contracts.", complexity="simple")
        await fleet.redis.xadd(fleet.names.intake, encode(task))  # type: ignore[arg-type]

        async def calling() -> bool:
            return int((await fleet.swarm.sim_stats())["in_flight"]) >= 1

        await fleet.swarm.wait_for(calling, timeout=30, what="the vendor call in flight")
        async with running_console(
            fleet.env["REDIS_URL"], "swarm", tmp_path / "logs", token=TOKEN
        ) as console:
            overview = await open_live(browser, console.url)
            worker = overview.locator("#fleet tr", has_text="worker-deepseek").locator("td")
            # service, vendor, models, live, in flight, capacity
            assert await worker.nth(1).inner_text() == "deepseek"
            assert await worker.nth(3).inner_text() == "1"
            assert await worker.nth(4).inner_text() == "1"  # the slow call
            page = await open_live(browser, f"{console.url}/task/slow")
            assert await page.inner_text("#task-state") in ("routed", "running")
            await page.fill("#token", TOKEN)
            await page.click("#token-form button")
            await page.click("button.cancel")
            await page.wait_for_selector("#flash.ok", timeout=30_000)
            posted = await page.inner_text("#flash")
            # The vendor would answer after 30 s: the finding comes from the cancel.
            await page.wait_for_function(
                "document.getElementById('task-state').textContent === 'cancelled'",
                timeout=20_000,
            )
            findings = await page.inner_text("#task table.findings")
            assert await page.locator("button.cancel").count() == 0  # finished: no button
        view = await task_view(fleet.redis, fleet.names, "slow")
        stats = await fleet.swarm.sim_stats()
    assert posted.startswith("cancel of task slow posted (swarm:cancel ")
    assert "cancelled during its vendor call (closed)" in findings
    assert view is not None and view.summary.status == Status.CANCELLED.value
    assert int(stats["in_flight"]) == 0
