"""The console as a user runs it (`swarm console`, a subprocess) and a real headless
Chromium (Debian's `chromium`, driven by Playwright's Python API) looking at it.

The browser tests skip, saying so, only where no `chromium` is installed; `.ci/run`
installs it, so CI runs them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright

from shared.runtime.net import free_port

NO_CHROMIUM = "needs a headless Chromium: apt-get install chromium (.ci/run installs it)"


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Console:
    url: str
    process: asyncio.subprocess.Process
    log: Path

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


@contextlib.asynccontextmanager
async def running_console(
    redis_url: str,
    namespace: str,
    logs: Path,
    *,
    token: str | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[Console]:
    """`swarm console` on a free port, answering /livez; stopped with SIGTERM after.
    `logs` must exist."""
    port = free_port()
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("SWARM_CONSOLE_")}
    child_env.update(
        {"REDIS_URL": redis_url, "SWARM_NAMESPACE": namespace, "LOG_JSON": "true", **(env or {})}
    )
    if token is not None:
        child_env["SWARM_CONSOLE_TOKEN"] = token
    log = logs / f"console-{port}.log"
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli.main", "console", "--port", str(port),
            env=child_env, stdin=asyncio.subprocess.DEVNULL, stdout=out,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    console = Console(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient() as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{console.url}/livez", timeout=2)).status_code == 200:
                        break
                assert process.returncode is None, f"the console exited:\n{console.tail()}"
                assert time.monotonic() < deadline, f"the console did not answer:\n{console.tail()}"
                await asyncio.sleep(0.1)
        yield console
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    path = chromium_path()
    if path is None:
        pytest.skip(NO_CHROMIUM)
    async with async_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        b = await p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield b
        finally:
            await b.close()


async def open_live(browser: Browser, url: str) -> Page:
    """A new page at `url`, once its live stream has delivered a first update."""
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    await page.goto(url)
    await page.wait_for_function(
        "document.getElementById('live').textContent.startsWith('live')", timeout=10_000
    )
    return page
