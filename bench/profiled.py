"""`swarm ARGV...` with cProfile switched on and off by signals, for bench/cpu_profile.py:

    python bench/profiled.py OUT run worker --vendor deepseek

SIGUSR1 starts profiling, SIGUSR2 stops it and writes the stats to OUT, so start-up,
imports and shutdown stay out of the figures. Only the main thread is profiled: the event
loop, where a service does its work (the heartbeat thread is left out).
"""

from __future__ import annotations

import cProfile
import signal
import sys
from types import FrameType

from services.cli.main import main


def run(out: str, argv: list[str]) -> int:
    profile = cProfile.Profile()

    def start(_signum: int, _frame: FrameType | None) -> None:
        profile.enable()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        profile.disable()
        profile.dump_stats(out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    return main(argv)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1], sys.argv[2:]))
