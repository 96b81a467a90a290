"""Process lifecycle: run a service's main coroutine until SIGTERM/SIGINT.

The first signal sets the `stop` event (stop reading, drain in-flight work up to the
deadline); a second one cancels at once. Exit codes: 0 clean, 1 crashed, 130 cancelled.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("swarm.lifecycle")

Main = Callable[[asyncio.Event], Awaitable[int | None]]


def run(main: Main) -> int:
    try:
        return asyncio.run(_run(main))
    except KeyboardInterrupt:
        return 130


async def _run(main: Main) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    me = asyncio.current_task()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning("shutdown.forced", signal=sig.name)
            if me is not None:
                me.cancel()
            return
        log.info("shutdown.requested", signal=sig.name, note="draining; signal again to force")
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return (await main(stop)) or 0
    except asyncio.CancelledError:
        return 130
    except Exception:
        log.exception("service.crashed")
        return 1
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
