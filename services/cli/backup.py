"""`swarm export` and `swarm import`: the findings Redis holds, out to JSON lines and back.

Export writes how many tasks each run expects (`{"run_id": ..., "expected": N}`, what
`swarm post --run` recorded), then every finding the collector stored (one `Finding` as
JSON per line, oldest first), the form of the collector's own export file
(SWARM_COLLECTOR_EXPORT_PATH). Import stores each finding of either through the
collector's own script, so a task's summary, its run and the per-model totals are rebuilt
exactly as the collector builds them; a finding already stored changes nothing, so
importing twice is harmless. A line that is not a finding is reported with its line
number and reason and skipped (exit code 1), never half-stored.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError
from redis.asyncio import Redis

from services.cli.errors import CliError
from services.cli.status import connected, run_async
from services.collector.settings import CollectorSettings
from services.collector.store import FindingStore, Outcome
from shared.bus.findings import expect_run
from shared.bus.streamids import text
from shared.protocol import Finding, Names
from shared.runtime.config_errors import load

_SCAN = 500  # keys per SCAN, and hashes read per pipeline
_PROGRESS_EVERY = 10_000


def add_parser(sub: Any) -> None:
    out = sub.add_parser(
        "export",
        help="every stored finding as JSON lines (a backup swarm import restores)",
        description="Writes every finding the collector stored in Redis, one JSON object per "
        "line, oldest first: the form of the collector's export file. Uses REDIS_URL and "
        "SWARM_NAMESPACE.",
    )
    out.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    into = sub.add_parser(
        "import",
        help="store findings from JSON lines (swarm export, the collector's export file)",
        description="Stores each finding as the collector does: task summaries, runs and "
        "totals are rebuilt; findings already stored are left as they are. A bad line is "
        "reported with its number and skipped (exit code 1).",
    )
    into.add_argument("files", metavar="FILE", nargs="+", help="JSON lines; - for stdin")


def run_export(args: argparse.Namespace) -> int:
    with _opened_for_writing(args.output) as out:
        count = run_async(_export(out))
    print(f"exported {count:,} findings", file=sys.stderr)
    return 0


def run_import(args: argparse.Namespace) -> int:
    settings = load(CollectorSettings)
    stored, present, bad = run_async(_import(args.files, settings.retention_s))
    print(
        f"imported {stored:,} findings; {present:,} were stored already; {bad:,} bad lines",
        file=sys.stderr,
    )
    return 1 if bad else 0


async def _export(out: TextIO) -> int:
    async with connected() as s:
        runs = await expected_runs(s.redis, s.names)
        findings = [f async for f in stored_findings(s.redis, s.names)]
    findings.sort(key=lambda f: (f.timestamp, f.task_id, f.finding_id))
    for run_id, expected in sorted(runs.items()):
        out.write(json.dumps({"run_id": run_id, "expected": expected}) + "\n")
    for f in findings:
        out.write(f.model_dump_json(exclude_none=True) + "\n")
    return len(findings)


async def stored_findings(redis: Redis, names: Names) -> AsyncIterator[Finding]:
    """Every finding filed under a task (`<ns>:findings:<task_id>` hashes)."""
    prefix = names.task_findings("")
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=f"{prefix}*", count=_SCAN, _type="HASH"):
        batch.append(key)
        if len(batch) >= _SCAN:
            for f in await _read(redis, batch):
                yield f
            batch.clear()
    for f in await _read(redis, batch):
        yield f


async def expected_runs(redis: Redis, names: Names) -> dict[str, int]:
    """Run id -> the task count its poster said it has, for every run that has one."""
    prefix = names.run_info("")
    keys = [k async for k in redis.scan_iter(match=f"{prefix}*", count=_SCAN, _type="HASH")]
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hget(key, "expected")
        values = await pipe.execute()
    return {
        text(k)[len(prefix) :]: int(v) for k, v in zip(keys, values, strict=True) if v is not None
    }


async def _read(redis: Redis, keys: list[bytes]) -> list[Finding]:
    if not keys:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hvals(key)
        values = await pipe.execute()
    return [Finding.model_validate_json(text(v)) for vals in values for v in vals]


async def _import(files: list[str], retention_s: float) -> tuple[int, int, int]:
    stored = present = bad = 0
    async with connected() as s:
        store = FindingStore(s.redis, s.names, retention_s=retention_s)
        for name, number, line in _lines(files):
            run = _run_line(line)
            if run is not None:
                await expect_run(s.redis, s.names, *run, ttl_s=retention_s)
                continue
            try:
                finding = Finding.model_validate_json(line)
            except ValidationError as exc:
                problem = exc.errors()[0]
                where = ".".join(str(p) for p in problem["loc"]) or "line"
                print(f"{name}:{number}: {where}: {problem['msg']}", file=sys.stderr)
                bad += 1
                continue
            # Filed at the time it was found: a task-type run's day, and the order in
            # which a run's tasks finished, are the original ones.
            outcome = await store.add(finding, now=finding.timestamp.timestamp())
            if outcome is Outcome.REDELIVERED:
                present += 1
            else:
                stored += 1
            if (stored + present) % _PROGRESS_EVERY == 0:
                print(f"... {stored + present:,} findings read", file=sys.stderr)
    return stored, present, bad


def _run_line(line: str) -> tuple[str, int] | None:
    """(run id, expected) for a run's line of `swarm export`, else None."""
    if '"expected"' not in line:
        return None
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict) or set(data) != {"run_id", "expected"}:
        return None
    run_id, expected = data["run_id"], data["expected"]
    if isinstance(run_id, str) and isinstance(expected, int) and expected >= 0:
        return run_id, expected
    return None


def _lines(files: list[str]) -> Iterator[tuple[str, int, str]]:
    for name in files:
        try:
            handle = sys.stdin if name == "-" else Path(name).open(encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise CliError(f"{name}: {exc.strerror}") from None
        with handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    yield ("<stdin>" if name == "-" else name), number, line


@contextmanager
def _opened_for_writing(path: str | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    try:
        handle = Path(path).open("w", encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror}") from None
    with handle:
        yield handle
