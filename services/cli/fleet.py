"""The swarm as local processes, for `swarm up` and `swarm demo`: each service started the way
a container starts it (`python -m services.cli.main run SERVICE ...`), in its own session,
with its own log file; stopped together, once, by SIGTERM (each drains), then SIGKILL after
a grace.

Ctrl-C (SIGINT), SIGTERM (kill, a supervisor) and SIGHUP (the terminal closed) all stop the
command the same way. Its services run in their own sessions, so no signal reaches them but
the SIGTERM the command sends: without this they would outlive it, reparented to init.

    def body() -> int:
        return asyncio.run(until_stopped(main()))    # main() runs `async with Fleet(...)`
    return stoppable(body)                           # 128 + signal number when stopped
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
import urllib.request
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from redis.asyncio import Redis

from services.cli.errors import CliError
from shared.bus.membership import live_members
from shared.protocol import Names
from shared.runtime.net import free_port

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_RETRY_CANCEL_S = 0.5  # a library may swallow a cancel (google-genai's countTokens does)
START_TIMEOUT_S = 45.0
T = TypeVar("T")
_FLEETS: list[Fleet] = []  # the fleets running now, for a stop signal to stop


class Stopped(BaseException):
    """A stop signal reached the command. A BaseException, as KeyboardInterrupt is, so no
    `except Exception` swallows it on its way out; raised once every service has stopped."""

    def __init__(self, signum: int) -> None:
        super().__init__("Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum: int, _frame: object) -> None:
    raise Stopped(signum)


def stoppable(body: Callable[[], int]) -> int:
    """Run `body` with the stop signals raising Stopped outside the event loop (finding
    Redis, starting or stopping a private redis-server), so every `with` unwinds. A stop
    signal ends it with 128 + the signal's number, said in one line."""
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in _STOP_SIGNALS}
    try:
        return body()
    except Stopped as exc:
        _stopped_note(str(exc))
        return 128 + exc.signum
    except KeyboardInterrupt:  # Ctrl-C before the handlers are in place
        _stopped_note("Ctrl-C")
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def until_stopped(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` until it ends or a stop signal comes. On the first signal, every
    running fleet is stopped (SIGTERM, drain, SIGKILL after the grace) whatever `main` is
    doing, `main` is cancelled (again, should a library swallow the cancel), and Stopped
    names the signal. Later signals change nothing: the stop is already bounded."""
    loop = asyncio.get_running_loop()
    work = asyncio.ensure_future(main)
    requested = asyncio.Event()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        if not received:
            received.append(signum)
            requested.set()

    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        waiter = asyncio.ensure_future(requested.wait())
        await asyncio.wait({work, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not received:
            return work.result()
        work.cancel()
        await asyncio.gather(*(fleet.stop() for fleet in list(_FLEETS)))
        while not work.done():
            await asyncio.wait({work}, timeout=_RETRY_CANCEL_S)
            work.cancel()
        if not work.cancelled():
            work.exception()  # retrieved: whatever `main` died of, it was told to stop
        raise Stopped(received[0])
    finally:
        for sig in _STOP_SIGNALS:  # back to raising (the loop would reset them to default)
            loop.remove_signal_handler(sig)
            signal.signal(sig, _raise_stopped)


def _stopped_note(how: str) -> None:
    with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
        print(f"\nstopped ({how}): every service was sent SIGTERM and drained", file=sys.stderr)


@dataclass
class Fleet:
    """Service processes, each logging to `logs/<name>.log`. `async with` makes a stop
    signal (see `until_stopped`) stop them, and stops them on the way out."""

    env: dict[str, str]
    logs: Path
    grace_s: float = 15.0  # after SIGTERM; more than a service's drain
    procs: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    _stopping: asyncio.Future[None] | None = field(default=None, init=False, repr=False)

    async def __aenter__(self) -> Fleet:
        _FLEETS.append(self)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.stop()
        finally:
            _FLEETS.remove(self)

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    async def start(
        self, name: str, *argv: str, env: Mapping[str, str] | None = None
    ) -> asyncio.subprocess.Process:
        """`swarm ARGV...` as process `name`, in its own session (a Ctrl-C reaches only
        us; we stop every service, once, in order)."""
        if self._stopping is not None:
            raise CliError(f"stopping: {name} not started")
        with self.log(name).open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.cli.main",
                *argv,
                env={**self.env, **(env or {})},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[name] = proc
        if self._stopping is not None:  # stopped while this one was starting
            proc.kill()
            await proc.wait()
            raise CliError(f"stopping: {name} not started")
        return proc

    def check(self) -> None:
        """A CliError with the end of its log as soon as any process has exited."""
        for name, proc in self.procs.items():
            if proc.returncode is not None:
                tail = self.log(name).read_text(errors="replace")[-1500:]
                raise CliError(f"{name} exited with code {proc.returncode}; its log ends:\n{tail}")

    async def stop(self) -> None:
        """SIGTERM to every service, SIGKILL to any still running after the grace. Done
        once, however many ask (the `finally` and a stop signal both do)."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        waits = [p.wait() for p in self.procs.values()]
        _, late = await asyncio.wait(
            [asyncio.ensure_future(w) for w in waits], timeout=self.grace_s
        )
        for proc in self.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        if late:
            await asyncio.wait(late, timeout=5)


async def wait_live(
    redis: Redis,
    names: Names,
    fleet: Fleet,
    wanted: Mapping[str, int],
    *,
    ready: Callable[[list[dict[str, str]]], bool] = lambda _members: True,
    timeout_s: float = START_TIMEOUT_S,
) -> list[dict[str, str]]:
    """Until at least `wanted[service]` members of each service heartbeat and `ready`
    holds; the live members. A process that exits meanwhile, or the timeout, is a CliError
    naming what did not come up."""
    deadline = time.monotonic() + timeout_s
    while True:
        fleet.check()
        members = await live_members(redis, names)
        have = {s: sum(1 for m in members if m.get("service") == s) for s in wanted}
        if all(have[s] >= n for s, n in wanted.items()) and ready(members):
            return members
        if time.monotonic() > deadline:
            missing = [f"{s} ({have[s]} of {n})" for s, n in wanted.items() if have[s] < n]
            raise CliError(
                "these services did not come up in time: "
                f"{', '.join(missing) or 'all heartbeat, but not ready'} (logs in {fleet.logs}/)"
            )
        await asyncio.sleep(0.2)


async def start_simulator(fleet: Fleet, config_toml: str, name: str = "simulator") -> str:
    """Start the vendor simulator on a free loopback port with this config (written beside
    its log); its base URL (for SWARM_SIMULATOR_URL) once it answers."""
    port = free_port()
    config = fleet.logs / f"{name}.toml"
    config.write_text(config_toml)
    await fleet.start(name, "run", "simulator", "--port", str(port), "--config", str(config))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while not await asyncio.to_thread(_answers_200, f"{url}/_sim/health"):
        fleet.check()
        if time.monotonic() > deadline:
            raise CliError(f"the simulator did not answer at {url}")
        await asyncio.sleep(0.1)
    return url


# The standard library's client: our own HTTP needs no extra, and never a proxy.
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _answers_200(url: str) -> bool:
    try:
        with _LOOPBACK.open(url, timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:  # refused, reset, timed out, or an HTTP error status
        return False
