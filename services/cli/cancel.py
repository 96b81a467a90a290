"""`swarm cancel TASK_ID`: stop a task. A task still queued is never sent to a vendor; a
task in flight has its vendor call closed; either way its finding says `cancelled`. A
finished task, or one this namespace has no trace of, is left alone and said so (exit 1).

On the wire it is one entry anyone can post (`XADD swarm:cancel '*' task_id T reason R`,
docs/protocol.md); this command posts it and waits for the task's finding.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from typing import Any

from redis.asyncio import Redis

from services.cli.status import connected, run_async
from shared.bus.findings import task_view
from shared.bus.streamids import text
from shared.protocol import KNOWN_VENDORS, Cancel, Names, Status, encode

_STREAM_ID = re.compile(r"\d+-\d+")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "cancel",
        help="cancel a task: never sent if still queued, its vendor call closed if in flight",
        description="Post a cancel request for TASK_ID and wait for the task's finding. A "
        "queued task is never sent to a vendor and gets a finding with status cancelled and "
        "$0 cost; a task in flight has its vendor call closed, and its finding says so (its "
        "cost is unknown: the vendor may bill what it had read). A finished task, or one "
        "with no record, is left alone and said so, with exit code 1. Uses REDIS_URL and "
        "SWARM_NAMESPACE.",
    )
    p.add_argument(
        "task_id",
        metavar="TASK_ID",
        help="the task's id (for a task posted with redis-cli without one: the id XADD printed)",
    )
    p.add_argument("--reason", default="", help="why; kept in the task's finding")
    p.add_argument(
        "--wait",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="how long to wait for the task's finding (default 15; 0: post and return)",
    )


def run(args: argparse.Namespace) -> int:
    return run_async(_cancel(args.task_id, args.reason, args.wait))


async def _known(redis: Redis, names: Names, task_id: str) -> bool:
    """The dispatcher or a worker has a record of it, or it is still in the intake."""
    done = [names.task_done(vendor, task_id) for vendor in KNOWN_VENDORS]
    if await redis.exists(names.task(task_id), *done):
        return True
    return bool(_STREAM_ID.fullmatch(task_id)) and bool(
        await redis.xrange(names.intake, task_id, task_id)
    )


async def _cancel(task_id: str, reason: str, wait_s: float) -> int:
    async with connected() as s:
        redis, names = s.redis, s.names
        view = await task_view(redis, names, task_id)
        if view is not None:
            print(
                f"task {task_id} has already finished ({view.summary.status}, finding "
                f"{view.summary.finding_id}): nothing to cancel"
            )
            return 1
        if not await _known(redis, names, task_id):
            print(
                f"no task {task_id!r} in namespace {names.namespace!r}: nothing to cancel "
                f"(a task posted straight to a vendor queue has no record: "
                f"XADD {names.cancels} '*' task_id {task_id} cancels it anyway)"
            )
            return 1
        request = encode(Cancel(task_id=task_id, reason=reason))
        entry = await redis.xadd(names.cancels, request)  # type: ignore[arg-type]
        print(f"cancel of task {task_id} posted ({names.cancels} {text(entry)})")
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            view = await task_view(redis, names, task_id)
            if view is not None:
                if view.summary.status == Status.CANCELLED.value:
                    why = next((f.error for f in view.findings if f.error), "")
                    print(f"task {task_id} cancelled: {why}")
                    return 0
                print(
                    f"task {task_id} finished before the cancel reached it "
                    f"({view.summary.status}, finding {view.summary.finding_id})"
                )
                return 1
            await asyncio.sleep(0.2)
        if wait_s > 0:
            print(
                f"task {task_id} has no finding yet after {wait_s:g}s; it is cancelled when a "
                "worker takes it (its vendor has no live worker?)"
            )
        return 0
