"""The swarm CLI with its event loop starved: `python -m tests.chaos.starved_proc run ...`.

Every STARVE_EVERY_S seconds of loop time, a callback on the loop burns the CPU for
STARVE_FOR_S seconds (pure Python, so it also contends for the GIL), as a CPU-bound
handler or a flood of ready tasks would: the process is alive and its work goes on, its
loop just gets no turn. Each starvation prints one JSON line `test.starved` to the log.
"""

from __future__ import annotations

import asyncio
import json
import os
import runpy
import time

FOR_S = float(os.environ.get("STARVE_FOR_S", "5"))
EVERY_S = float(os.environ.get("STARVE_EVERY_S", "2"))


def _starve(loop: asyncio.AbstractEventLoop) -> None:
    started = time.monotonic()
    spins = 0
    while time.monotonic() - started < FOR_S:
        spins += 1
    print(json.dumps({"event": "test.starved", "for_s": FOR_S, "spins": spins}), flush=True)
    loop.call_later(EVERY_S, _starve, loop)


class _StarvedPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = super().new_event_loop()
        loop.call_later(EVERY_S, _starve, loop)
        return loop


if __name__ == "__main__":
    asyncio.set_event_loop_policy(_StarvedPolicy())
    runpy.run_module("services.cli.main", run_name="__main__", alter_sys=True)
