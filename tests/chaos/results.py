"""Fault and load tests' figures, saved for docs/benchmarks.md when CHAOS_RESULTS is set
(`make chaos-long` sets it): `bench/results/<name>.json`, in the benchmarks' record format
(bench/benchlib.py: the result, the machine and its load, the commit), so bench/report.py
renders them like any benchmark. Without it nothing is written: a test run leaves the
results a developer committed alone."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def save(name: str, rows: list[dict[str, Any]], *, redis_url: str | None = None) -> None:
    if not os.environ.get("CHAOS_RESULTS"):
        return
    spec = importlib.util.spec_from_file_location("benchlib", ROOT / "bench" / "benchlib.py")
    assert spec is not None and spec.loader is not None
    benchlib = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchlib)
    path: Path = benchlib.emit({"bench": name, "rows": rows}, redis_url=redis_url, echo=False)
    record = json.loads(path.read_text())
    record["run"]["command"] = "make chaos-long"
    path.write_text(json.dumps(record, indent=2) + "\n")
