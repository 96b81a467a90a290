"""What every peer script shares: its arguments, the clock, and its one JSON line.

The rule, the same for every system (see docs/benchmarks.md, generated from run.py):

* the N messages are pre-filled through the system's own publish API before its worker
  starts (the fill is timed too, but only reported, never compared);
* one worker process then drains them; the clock starts at the first handler call and
  stops when the handler has run N times and Redis shows every message acknowledged
  (polled every millisecond from then on, on a connection of its own);
* the handler is a no-op (mode `noop`) or sleeps SLEEP_S without blocking (mode `io`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

SLEEP_S = 0.05
FILL_CONCURRENCY = 100  # publishes at once while pre-filling (the asyncio peers)
POLL_S = 0.001
DONE_TIMEOUT_S = 120.0


def parse_args(description: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--mode", choices=("noop", "io"), default="noop")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, default=256, help="handlers at once, at most")
    parser.add_argument("--variant", default="", help="a system's own option (pool, client)")
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    return parser.parse_args()


def namespace(system: str) -> str:
    """A key prefix of this run alone; every key it leaves is deleted by prefix at the end."""
    return f"benchpeers-{system}-{uuid.uuid4().hex[:10]}"


@dataclass
class Clock:
    """First handler call -> n handler calls returned (thread-safe, for pools of threads).

    A handler calls `begin()` on entry and `done()` on its way out.
    """

    n: int
    count: int = 0
    first: float | None = None
    first_cpu: float = 0.0
    last: float | None = None
    end: float | None = None
    end_cpu: float = 0.0
    reached: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def begin(self) -> None:
        if self.first is None:
            now = time.perf_counter()
            with self._lock:
                if self.first is None:
                    self.first = now
                    self.first_cpu = time.process_time()

    def done(self) -> None:
        now = time.perf_counter()
        with self._lock:
            self.count += 1
            if self.count == self.n:
                self.last = now
                self.reached.set()

    def finish(self) -> float:
        """Every message is acked: stop the clock (wall and this process's CPU)."""
        self.end = time.perf_counter()
        self.end_cpu = time.process_time()
        return self.end


def wait_acked(clock: Clock, all_acked: Callable[[], bool]) -> float:
    """Block (a thread or a process with nothing else to do) until done; the end time."""
    if not clock.reached.wait(DONE_TIMEOUT_S):
        raise TimeoutError(f"handler ran {clock.count} of {clock.n} times")
    deadline = time.monotonic() + DONE_TIMEOUT_S
    while not all_acked():
        if time.monotonic() > deadline:
            raise TimeoutError("the handler ran n times, but not every message was acked")
        time.sleep(POLL_S)
    return clock.finish()


async def wait_acked_async(clock: Clock, all_acked: Callable[[], Any]) -> float:
    """The same inside an event loop: `all_acked` is a coroutine function."""
    import asyncio  # noqa: PLC0415 (only the asyncio peers need it)

    deadline = time.monotonic() + DONE_TIMEOUT_S
    while not clock.reached.is_set():
        if time.monotonic() > deadline:
            raise TimeoutError(f"handler ran {clock.count} of {clock.n} times")
        await asyncio.sleep(POLL_S)
    while not await all_acked():
        if time.monotonic() > deadline:
            raise TimeoutError("the handler ran n times, but not every message was acked")
        await asyncio.sleep(POLL_S)
    return clock.finish()


async def handle(clock: Clock, mode: str) -> None:
    """The handler every asyncio peer runs: a no-op, or a non-blocking SLEEP_S in `io`."""
    import asyncio  # noqa: PLC0415 (only the asyncio peers need it)

    clock.begin()
    if mode == "io":
        await asyncio.sleep(SLEEP_S)
    clock.done()


async def fill(publish: Callable[[int], Awaitable[Any]], n: int) -> float:
    """Publish 0..n-1 through a system's own API, FILL_CONCURRENCY at once; the seconds."""
    import asyncio  # noqa: PLC0415

    t0 = time.perf_counter()
    for start in range(0, n, FILL_CONCURRENCY):
        await asyncio.gather(*(publish(i) for i in range(start, min(start + FILL_CONCURRENCY, n))))
    return time.perf_counter() - t0


def group_drained(redis: Any, stream: str, group: str) -> Callable[[], Awaitable[bool]]:
    """For `wait_acked_async`: has the group no pending entry left (asyncio redis-py)?"""

    async def drained() -> bool:
        pending: Any = await redis.xpending(stream, group)
        return int(pending["pending"]) == 0

    return drained


async def drop_keys(redis: Any, match: str) -> None:
    """Delete the keys a run left (`match`: its own prefix) on an asyncio redis-py client."""
    keys = [k async for k in redis.scan_iter(match=match, count=1000)]
    if keys:
        await redis.delete(*keys)


def versions(*packages: str) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def report(
    *,
    system: str,
    args: argparse.Namespace,
    clock: Clock,
    end: float,
    fill_s: float,
    config: dict[str, Any],
    packages: tuple[str, ...],
) -> None:
    """The one JSON line the driver reads (last line of stdout)."""
    assert clock.first is not None
    if clock.count != args.n:
        raise AssertionError(f"handler ran {clock.count} times for {args.n} messages")
    seconds = end - clock.first
    cpu_s = clock.end_cpu - clock.first_cpu
    print(
        json.dumps(
            {
                "system": system,
                "variant": args.variant,
                "mode": args.mode,
                "n": args.n,
                "in_flight": args.in_flight,
                "seconds": round(seconds, 4),
                "msgs_per_s": round(args.n / seconds, 1),
                "cpu_us_per_msg": round(cpu_s * 1e6 / args.n, 2),
                "fill_s": round(fill_s, 3),
                "config": config,
                "versions": versions(*packages),
                "executable": sys.executable,
            }
        ),
        flush=True,
    )
