"""`swarm post PROMPT | --file FILE`: put tasks on the intake stream, as the dispatcher reads
them, and optionally wait for their findings."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from services.cli.errors import CliError
from services.cli.findings import (
    format_run,
    format_task,
    format_tasks,
    progress_text,
    run_json,
    run_views,
    task_json,
    task_record,
    task_views,
    tasks_json,
)
from services.cli.progress import WaitProgress
from services.cli.status import Session, connected, run_async
from shared.bus.findings import expect_run, run_progress, task_view, wait_for_run
from shared.protocol import DecodeError, Names, Task, decode_json, encode_data

# Task field -> the flag that sets it, so an invalid value is reported under both names.
FLAGS = {
    "task_type": "--type",
    "complexity": "--complexity",
    "urgency": "--urgency",
    "vendor": "--vendor",
    "model": "--model",
    "parent_shard": "--shard",
    "run_id": "--run",
    "budget_usd": "--budget",
    "task_id": "--task-id",
    "context": "--context-file",
}
_POST_CHUNK = 500  # entries per pipelined round trip
_POLL_S = 0.5
_SHOW_PENDING = 10


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "post",
        help="post a task (or a file of tasks) to the swarm and optionally wait for findings",
        description="Post one task (PROMPT) or a file of tasks (--file: JSON lines, one task "
        "object per line, or one JSON array; the format `swarm plan` reads) to the intake "
        "stream, as one `data` JSON field each. Every task is checked first: an invalid "
        "flag value posts nothing; a malformed line of a file is reported with its line "
        "number and skipped (exit code 1). Flags given with --file apply to every task of "
        "the file. --run RUN gives every task that run id and adds their number to the "
        "run's expected count, so `swarm findings --run RUN` can tell when it is complete. "
        "--wait waits for the findings the collector has stored (swarm run collector): "
        "exit code 1 if a task failed or the wait timed out. Uses REDIS_URL and "
        "SWARM_NAMESPACE.",
    )
    p.add_argument("prompt", metavar="PROMPT", nargs="?", help="what the model is asked")
    p.add_argument("--file", metavar="FILE", help="a file of tasks ('-' reads standard input)")
    p.add_argument("--type", dest="task_type", metavar="T", help="task type, e.g. code_review")
    p.add_argument(
        "--complexity",
        metavar="C",
        help="routing hint: simple, medium, complex, ultra_context or strategic",
    )
    p.add_argument("--urgency", metavar="U", help="low, normal, high or critical")
    p.add_argument("--vendor", metavar="V", help="pin a vendor (else the dispatcher chooses)")
    p.add_argument("--model", metavar="M", help="pin a model")
    p.add_argument("--shard", metavar="S", help="the mega-shard (id or specialty) to ask first")
    p.add_argument("--run", metavar="RUN", help="run id for every task posted")
    p.add_argument("--budget", type=float, metavar="USD", help="spending cap for each task")
    p.add_argument("--task-id", metavar="ID", help="the task's id (default: a fresh one)")
    p.add_argument("--context-file", metavar="PATH", help="file whose text is the context")
    p.add_argument("--wait", action="store_true", help="wait for the finding(s) and print them")
    p.add_argument(
        "--timeout", type=float, default=300.0, metavar="S", help="--wait: seconds (default 300)"
    )
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")


def run(args: argparse.Namespace) -> int:
    if (args.prompt is None) == (args.file is None):
        raise CliError("give a PROMPT or --file FILE (one of them)")
    if args.timeout <= 0:
        raise CliError("--timeout must be > 0")
    overrides = _overrides(args)
    if args.file is None:
        tasks = [("", _validated({"prompt": args.prompt, **overrides}))]
        problems: list[str] = []
    else:
        if args.task_id is not None:
            raise CliError("--task-id names one task; it cannot go with --file")
        _validated({"prompt": "-", **overrides})  # flag errors before reading the file
        tasks, problems = _read_file(args.file, overrides)
        for problem in problems:
            print(f"swarm: skipped {problem}", file=sys.stderr)
        if not tasks:
            raise CliError(f"nothing posted: no valid task in {args.file}")
    code = run_async(_post(args, [t for _, t in tasks], [w for w, _ in tasks]))
    return max(code, 1 if problems else 0)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The task fields the flags set."""
    dests = {"budget_usd": "budget", "run_id": "run", "parent_shard": "shard"}
    values: dict[str, Any] = {}
    for field in FLAGS.keys() - {"context"}:
        value = getattr(args, dests.get(field, field))
        if value is not None:
            values[field] = value
    if args.context_file is not None:
        try:
            values["context"] = Path(args.context_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read --context-file {args.context_file}: {exc}") from None
    return values


def _validated(values: dict[str, Any]) -> Task:
    """The task, checked by the protocol's own model; one line naming each bad field."""
    try:
        return decode_json(Task, json.dumps(values))
    except (DecodeError, ValueError) as exc:
        problems = getattr(exc, "problems", None)
        if not problems:
            raise CliError(f"invalid task, nothing posted: {exc}") from None
        parts = []
        for p in problems:
            flag = FLAGS.get(p.field.split(".")[0])
            name = f"{p.field} ({flag})" if flag else p.field
            parts.append(f"{name}: {p.problem}")
        raise CliError("invalid task, nothing posted: " + "; ".join(parts)) from None


def _read_file(path: str, overrides: dict[str, Any]) -> tuple[list[tuple[str, Task]], list[str]]:
    from services.cli.plan import parse_workload  # noqa: PLC0415 - loads the router

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    parsed, bad = parse_workload(text)
    problems = [str(p) for p in bad]
    tasks: list[tuple[str, Task]] = []
    seen: dict[str, str] = {}
    for where, parsed_task in parsed:
        task = parsed_task
        if overrides:
            task = _validated({**task.model_dump(mode="json", exclude_none=True), **overrides})
        if task.task_id in seen:
            problems.append(f"{where}: task_id: {task.task_id} is already in this file "
                            f"({seen[task.task_id]})")  # fmt: skip
            continue
        seen[task.task_id] = where
        tasks.append((where, task))
    return tasks, problems


async def _post(args: argparse.Namespace, tasks: list[Task], where: list[str]) -> int:
    async with connected() as s:
        entry_ids = await _xadd_all(s.redis, s.names.intake, tasks)
        expected = None
        if args.run is not None:
            before = (await run_progress(s.redis, s.names, args.run)).expected or 0
            expected = before + len(tasks)
            await expect_run(s.redis, s.names, args.run, expected)
        posted: dict[str, Any] = {
            "stream": s.names.intake,
            "tasks": [
                {"task_id": t.task_id, "entry_id": e, **({"where": w} if w else {})}
                for t, e, w in zip(tasks, entry_ids, where, strict=True)
            ],
            "run_id": args.run,
            "expected": expected,
        }
        if not args.json:
            for t, w in zip(tasks, where, strict=True):
                print(f"posted {t.task_id}" + (f" ({w})" if w else ""), flush=True)
            print(f"{len(tasks)} task(s) on {s.names.intake}", flush=True)
            if args.run is not None:
                print(f"run {args.run}: {expected} task(s) expected", flush=True)
        if not args.wait:
            if args.json:
                print(json.dumps(posted, indent=2))
            return 0
        ids = [t.task_id for t in tasks]
        if args.file is None:
            return await _wait_task(s, ids[0], args, posted)
        if args.run is not None:
            return await _wait_run(s, args.run, ids, args, posted)
        return await _wait_tasks(s, ids, args, posted)


async def _xadd_all(redis: Redis, stream: str, tasks: list[Task]) -> list[str]:
    ids: list[str] = []
    for i in range(0, len(tasks), _POST_CHUNK):
        async with redis.pipeline(transaction=False) as pipe:
            for task in tasks[i : i + _POST_CHUNK]:
                pipe.xadd(stream, encode_data(task))  # type: ignore[arg-type]
            ids += [x.decode() if isinstance(x, bytes) else str(x) for x in await pipe.execute()]
    return ids


async def _wait_task(
    s: Session, task_id: str, args: argparse.Namespace, posted: dict[str, Any]
) -> int:
    deadline = time.monotonic() + args.timeout
    with WaitProgress(1, f"waiting for {task_id}") as progress:
        while True:
            view = await task_view(s.redis, s.names, task_id)
            record = await task_record(s.redis, s.names, task_id)
            progress.update(0 if view is None else 1, _note(record))
            if view is not None or time.monotonic() >= deadline:
                break
            await asyncio.sleep(_POLL_S)
    if view is None:
        _timed_out(args, posted, [task_id], f"task {task_id}{_state(record)}")
        return 1
    if args.json:
        print(json.dumps({**posted, "result": task_json(task_id, record, view)}, indent=2))
    else:
        print()
        print("\n".join(format_task(task_id, record, view, all_findings=False)))
    return 0 if view.summary.status == "ok" else 1


async def _wait_run(
    s: Session, run_id: str, ids: list[str], args: argparse.Namespace, posted: dict[str, Any]
) -> int:
    expected = posted["expected"]
    with WaitProgress(expected, f"run {run_id}") as bar:
        progress = await wait_for_run(
            s.redis,
            s.names,
            run_id,
            timeout_s=args.timeout,
            poll_s=_POLL_S,
            on_progress=lambda p: bar.update(p.finished, f"{p.ok} ok, {p.failed} failed"),
        )
    progress, views = await run_views(s.redis, s.names, run_id)
    if not progress.complete:
        done = {v.summary.task_id for v in views}
        _timed_out(args, posted, [t for t in ids if t not in done], progress_text(progress))
        return 1
    if args.json:
        print(json.dumps({**posted, "result": run_json(progress, views)}, indent=2))
    else:
        print()
        print("\n".join(format_run(progress, views)))
    return 0 if progress.failed == 0 else 1


async def _wait_tasks(
    s: Session, ids: list[str], args: argparse.Namespace, posted: dict[str, Any]
) -> int:
    """Tasks without a run: poll the collector's summary of each until all have one."""
    deadline = time.monotonic() + args.timeout
    pending = list(ids)
    with WaitProgress(len(ids), "tasks") as bar:
        while True:
            pending = await _unfinished(s.redis, s.names, pending)
            bar.update(len(ids) - len(pending))
            if not pending or time.monotonic() >= deadline:
                break
            await asyncio.sleep(_POLL_S)
    views = await task_views(s.redis, s.names, ids)
    if pending:
        _timed_out(args, posted, pending, f"{len(views)} of {len(ids)} tasks finished")
        return 1
    ordered = sorted(views.values(), key=lambda v: (v.summary.updated_at, v.summary.task_id))
    if args.json:
        print(json.dumps({**posted, "result": {"tasks": tasks_json(ordered)}}, indent=2))
    else:
        print()
        print("\n".join(format_tasks(ordered)))
    return 0 if all(v.summary.status == "ok" for v in ordered) else 1


async def _unfinished(redis: Redis, names: Names, ids: list[str]) -> list[str]:
    out: list[str] = []
    for i in range(0, len(ids), _POST_CHUNK):
        chunk = ids[i : i + _POST_CHUNK]
        async with redis.pipeline(transaction=False) as pipe:
            for t in chunk:
                pipe.hexists(names.task_summary(t), "status")
            done = await pipe.execute()
        out += [t for t, d in zip(chunk, done, strict=True) if not d]
    return out


def _timed_out(
    args: argparse.Namespace, posted: dict[str, Any], pending: list[str], what: str
) -> None:
    if args.json:
        print(json.dumps({**posted, "timed_out": True, "pending": pending}, indent=2))
    shown = ", ".join(pending[:_SHOW_PENDING])
    more = f" and {len(pending) - _SHOW_PENDING} more" if len(pending) > _SHOW_PENDING else ""
    print(
        f"swarm: timed out after {args.timeout:g} s: {what}; still pending: {shown}{more}",
        file=sys.stderr,
    )


def _note(record: dict[str, str]) -> str:
    state = record.get("state")
    if not state:
        return "queued for the dispatcher"
    vendor = record.get("vendor")
    return f"{state} {vendor}/{record.get('model', '')}" if vendor else state


def _state(record: dict[str, str]) -> str:
    if not record:
        return " (not routed yet: is the dispatcher running? swarm run dispatcher)"
    if record.get("state") in ("done", "failed"):
        return (
            f" ({_note(record)}, but the collector has not stored its finding: "
            "is it running? swarm run collector)"
        )
    return f" ({_note(record)})"
