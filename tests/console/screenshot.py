"""The README's picture of the console, taken from a running demo-like fleet:

    .venv/bin/python -m tests.console.screenshot docs/console.png

A private redis-server, the simulator (every vendor, 2-12 s per call), the dispatcher with
the shipped routing policy, a worker per vendor (two for DeepSeek), the collector; 80
research tasks of mixed complexity from the demo's workload and one malformed task; then
`swarm console` with a token, and headless Chromium's screenshot of the overview while
tasks are still running.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

from playwright.async_api import async_playwright

from services.cli.demo_workload import research_tasks
from services.cli.redis_finder import private_redis_server
from shared.protocol import Names, encode
from shared.runtime.redis import connect
from shared.runtime.settings import BusSettings
from tests.console.conftest import chromium_path, open_live, running_console
from tests.swarm_procs import SwarmProcs

SIMULATOR = "seed = 7\n[defaults]\nlatency = { kind = 'uniform', low_s = 2.0, high_s = 12.0 }\n"
WORKERS = {"deepseek": 2, "claude": 1, "gemini": 1, "openai": 1}


async def take(out: Path) -> None:
    chromium = chromium_path()
    if chromium is None:
        raise SystemExit("needs chromium (apt-get install chromium)")
    names = Names("swarm")
    logs = Path(tempfile.mkdtemp(prefix="console-shot-"))
    with private_redis_server() as (url, _):
        redis = connect(url, BusSettings())
        try:
            async with SwarmProcs(url, names, logs) as swarm:
                await swarm.simulator(SIMULATOR)
                await swarm.start("dispatcher", "dispatcher")
                await swarm.start("collector", "collector")
                for vendor, n in WORKERS.items():
                    for i in range(1, n + 1):
                        await swarm.start(f"worker-{vendor}-{i}", "worker", "--vendor", vendor)
                await swarm.wait_live(redis, names, {f"worker-{v}": n for v, n in WORKERS.items()})
                for task in research_tasks(80, "console-demo"):
                    if task.parent_shard is None:  # no shard in this fleet
                        await redis.xadd(names.intake, encode(task))  # type: ignore[arg-type]
                await redis.xadd(names.intake, {"prompt": "Classify it.", "complexty": "simple"})
                async with (
                    running_console(
                        url,
                        "swarm",
                        logs,
                        token="screenshot",
                        env={"SWARM_CONSOLE_PAGE_SIZE": "15"},
                    ) as console,
                    async_playwright() as p,
                ):
                    browser = await p.chromium.launch(
                        executable_path=chromium, args=["--no-sandbox"]
                    )
                    page = await open_live(browser, console.url)
                    await asyncio.sleep(5)  # some findings in, some calls in flight
                    await page.screenshot(path=str(out), full_page=True)
                    await browser.close()
        finally:
            await redis.aclose()
    shutil.rmtree(logs, ignore_errors=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(take(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/console.png")))
