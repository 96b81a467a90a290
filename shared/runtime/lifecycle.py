"""Process lifecycle: build a service's settings, then run its main coroutine until
SIGTERM/SIGINT.

The first signal sets the `stop` event (stop reading, drain in-flight work up to the
deadline); a second one cancels at once. A `ConfigError` (a bad variable, a missing key,
Redis refusing or not answering; see shared.runtime.config_errors), raised while building
settings or by the service, is one error line per problem, with no traceback.

Exit codes: 0 clean, 1 crashed, 2 bad configuration (a variable to fix, named in the log),
3 Redis never answered within SWARM_CONNECT_TIMEOUT_S, 130 cancelled.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable

import structlog

from shared.runtime.config_errors import ConfigError
from shared.runtime.logging import configure_logging

log = structlog.get_logger("swarm.lifecycle")

Main = Callable[[asyncio.Event], Awaitable[int | None]]


def run_service(setup: Callable[[], Main]) -> int:
    """`setup()` reads the settings (and configures logging) and returns the main coroutine
    function, which then runs; a ConfigError from either is logged and is the exit code."""
    try:
        main = setup()
    except ConfigError as exc:
        return refuse(exc)
    return run(main)


def run(main: Main) -> int:
    try:
        return asyncio.run(_run(main))
    except KeyboardInterrupt:
        return 130


def refuse(exc: ConfigError) -> int:
    """Log each problem of `exc` as one line and return its exit code."""
    if not structlog.is_configured():  # the settings that say how to log were the problem
        configure_logging(os.environ.get("LOG_LEVEL", "info"), _flag(os.environ.get("LOG_JSON")))
    for problem in exc.problems:
        named = {"variable": problem.variable} if problem.variable else {}
        log.error(exc.event, message=problem.message, **named)
    return exc.exit_code


def _flag(raw: str | None) -> bool | None:
    value = (raw or "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return None


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
    except ConfigError as exc:
        return refuse(exc)
    except Exception:
        log.exception("service.crashed")
        return 1
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
