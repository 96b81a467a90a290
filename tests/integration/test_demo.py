"""`swarm demo` (what `make demo` runs) sends tasks through the bus and back."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid


def test_demo_round_trip(redis_url: str) -> None:
    ns = f"demo{uuid.uuid4().hex[:8]}"
    res = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "demo", "--namespace", ns],
        env={**os.environ, "REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "'echo: Research supplier terms'" in out
    assert "'echo: Summarise 2020-2022 payment terms'" in out
    assert "prompt: must not be empty; complexty: is not a field of Task" in out
    assert out.strip().endswith("demo ok")
