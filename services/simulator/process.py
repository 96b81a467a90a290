"""Start `swarm run simulator` as its own process and wait until it answers (for tests,
benchmarks and the demo, which must not count the simulator's CPU as their own)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence

from shared.runtime.net import free_port


def spawn_simulator(
    *, port: int | None = None, args: Sequence[str] = (), timeout_s: float = 30.0
) -> tuple[subprocess.Popen[bytes], str]:
    """(process, base URL) of a simulator serving on 127.0.0.1; stop it with SIGTERM."""
    port = port or free_port()
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "services.cli.main", "run", "simulator", "--port", str(port), *args],
        env={**os.environ, "LOG_LEVEL": os.environ.get("LOG_LEVEL", "warning")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_sim/health", timeout=1):  # noqa: S310
                return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"the simulator did not start on port {port}") from None
            time.sleep(0.1)
