"""`swarm dlq list | replay`: the entries the swarm set aside, and putting them back.

Two streams hold them (`docs/protocol.md`, section 5): the dead-letter stream (entries that
failed too many deliveries, or that a worker gave up on) and the rejected stream (intake
entries that did not decode or could not be routed). Each record keeps the original
entry's fields byte-exact as `orig:<name>`; `replay` posts exactly those back to the
record's source stream and deletes the record in the same atomic step, after the XADD. A
record of a task refused for its size kept only an excerpt, its size and SHA-256: `list`
shows them, `replay` refuses it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from services.cli.errors import CliError
from services.cli.status import Session, connected, run_async
from shared.protocol import DecodeError, Names, Rejection, Task, decode, decode_rejection
from shared.protocol.codec import ORIGINAL_PREFIX

_ORIG = ORIGINAL_PREFIX.encode()
_PAGE = 100

# KEYS: 1 the record's stream, 2 the source stream, 3 the task record, 4 the done marker
# ARGV: 1 record id, 2 claim field ('' = none), 3 claim owner, 4 '1' = release a failed
#       task's done marker, 5.. the original field/value pairs
# The XADD comes first: if it fails the script stops and the record stays.
_REPLAY = """
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then return false end
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 5))
redis.call('XDEL', KEYS[1], ARGV[1])
if ARGV[2] ~= '' and redis.call('HGET', KEYS[3], ARGV[2]) == ARGV[3] then
  redis.call('HDEL', KEYS[3], ARGV[2])
end
if ARGV[4] == '1' then
  local rec = redis.call('HMGET', KEYS[3], 'state', 'finding_id')
  if rec[1] == 'failed' and rec[2] and redis.call('GET', KEYS[4]) == rec[2] then
    redis.call('DEL', KEYS[4])
  end
end
return id
"""


def add_parser(sub: Any) -> None:
    dlq = sub.add_parser(
        "dlq",
        help="list dead-lettered and rejected entries, replay them to their stream",
        description="The dead-letter stream (--stream dlq, the default) holds entries that "
        "failed too many deliveries or that a worker gave up on; the rejected stream "
        "(--stream rejected) holds posted tasks that did not decode or could not be routed. "
        "Uses REDIS_URL and SWARM_NAMESPACE.",
    )
    dsub = dlq.add_subparsers(dest="dlq_command", metavar="SUBCOMMAND", required=True)
    ls = dsub.add_parser(
        "list",
        help="the newest entries: reason, field, source stream, deliveries, original fields",
    )
    _stream_flag(ls)
    ls.add_argument("--limit", type=int, default=20, metavar="N", help="newest N (default 20)")
    ls.add_argument("--json", action="store_true", help="print them as JSON (fields in full)")
    replay = dsub.add_parser(
        "replay",
        help="post entries' original fields back to their source stream",
        description="Post each record's original fields, exactly as they were, back to the "
        "stream they came from (a rejected task to the intake stream, a dead-lettered task "
        "to its vendor queue), then delete the record, in one atomic step after the XADD: "
        "a crash never loses it. A replayed task is checked anew: one that is still "
        "malformed simply lands in the rejected stream again. So that a replayed task is "
        "worked on again, the dispatcher's claim on its id (held by the rejected entry) and "
        "a worker's done-marker of a task it gave up on are released with it. Exit code 1 "
        "if any record could not be replayed.",
    )
    replay.add_argument("ids", metavar="ID", nargs="*", help="record ids (from swarm dlq list)")
    replay.add_argument("--all", action="store_true", help="every record of the stream")
    _stream_flag(replay)
    replay.add_argument("--dry-run", action="store_true", help="show what would be replayed")
    replay.add_argument("--json", action="store_true", help="print the outcome as JSON")


def _stream_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--stream",
        choices=("dlq", "rejected"),
        default="dlq",
        help="dlq: the dead-letter stream (default); rejected: rejected posted tasks",
    )


def run(args: argparse.Namespace) -> int:
    if args.dlq_command == "list":
        if args.limit < 1:
            raise CliError("--limit must be >= 1")
        return run_async(_list(args))
    if bool(args.ids) == args.all:
        raise CliError("give record IDs or --all (one of them)")
    return run_async(_replay(args))


def stream_of(names: Names, which: str) -> str:
    return names.rejected if which == "rejected" else names.dead_letter


@dataclass(frozen=True, slots=True)
class Record:
    id: str
    fields: dict[bytes, bytes]

    @property
    def original(self) -> dict[bytes, bytes]:
        """The original entry's fields, byte-exact."""
        return {k[len(_ORIG) :]: v for k, v in self.fields.items() if k.startswith(_ORIG)}

    def rejection(self) -> Rejection | None:
        try:
            return decode_rejection(self.fields)
        except DecodeError:
            return None


def _records_of(raw: Any) -> list[Record]:
    """XRANGE/XREVRANGE replies (a bytes client) as records."""
    return [Record(entry_id.decode(), dict(fields)) for entry_id, fields in raw or []]


# -- list ------------------------------------------------------------------------------------


async def _list(args: argparse.Namespace) -> int:
    async with connected() as s:
        stream = stream_of(s.names, args.stream)
        total = int(await s.redis.xlen(stream))
        raw = await s.redis.xrevrange(stream, count=args.limit)
    records = list(reversed(_records_of(raw)))
    if args.json:
        print(json.dumps([_record_json(r) for r in records], indent=2))
        return 0
    if not records:
        print(f"{stream}: empty")
        return 0
    print(f"{stream}: {total:,} record(s); the newest {len(records)}, oldest first")
    for r in records:
        print()
        print("\n".join(format_record(r)))
    return 0


def _record_json(r: Record) -> dict[str, Any]:
    rejection = r.rejection()
    if rejection is None:
        return {"id": r.id, "undecodable": _printable(r.fields)}
    return {"id": r.id, **rejection.model_dump(mode="json")}


def format_record(r: Record) -> list[str]:
    rejection = r.rejection()
    if rejection is None:
        return [f"{r.id}  (not a dead-letter record)  {_short(_printable(r.fields))}"]
    when = rejection.timestamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    by = f", by {rejection.consumer}" if rejection.consumer else ""
    group = f" (group {rejection.group})" if rejection.group else ""
    lines = [
        f"{r.id}  {when}  from {rejection.source_stream} {rejection.source_id}, "
        f"{rejection.deliveries} deliver{'y' if rejection.deliveries == 1 else 'ies'}{by}{group}",
        f"  reason:   {rejection.reason}",
    ]
    if rejection.field:
        lines.append(f"  field:    {rejection.field}")
    if rejection.excerpted:
        lines.append(
            f"  excerpt:  {_short(rejection.excerpt) or '(no fields)'}  (of "
            f"{rejection.original_bytes or 0:,} bytes, sha256 {rejection.original_sha256}; "
            "not replayable)"
        )
        return lines
    lines.append(f"  original: {_short(rejection.original) or '(no fields)'}")
    return lines


def _short(fields: dict[str, str], budget: int = 160) -> str:
    """`name=value ...`, each value cut so the whole stays near `budget` characters."""
    if not fields:
        return ""
    width = max(24, budget // len(fields))
    parts = []
    for k, v in fields.items():
        flat = " ".join(v.split())
        cut = flat if len(flat) <= width else flat[: width - 1] + "…"
        parts.append(f"{k}={json.dumps(cut, ensure_ascii=False)}")
    return " ".join(parts)


def _printable(fields: dict[bytes, bytes]) -> dict[str, str]:
    return {
        k.decode(errors="backslashreplace"): v.decode(errors="backslashreplace")
        for k, v in fields.items()
    }


# -- replay ----------------------------------------------------------------------------------


async def _records(
    redis: Redis, stream: str, args: argparse.Namespace
) -> AsyncIterator[Record | str]:
    """The records asked for; an id that names none yields a problem line instead."""
    if args.all:
        newest = _records_of(await redis.xrevrange(stream, count=1))
        if not newest:
            return
        last = newest[0].id  # records that land here again are not replayed twice
        start = "-"
        while True:
            page = _records_of(await redis.xrange(stream, min=start, max=last, count=_PAGE))
            for record in page:
                yield record
            if len(page) < _PAGE:
                return
            start = "(" + page[-1].id
    for wanted in args.ids:
        try:
            found = _records_of(await redis.xrange(stream, min=wanted, max=wanted))
        except ResponseError:
            yield f"{wanted}: not a stream entry id"
            continue
        if not found:
            other = "rejected" if args.stream == "dlq" else "dlq"
            yield f"{wanted}: not in {stream} (already replayed? or try --stream {other})"
            continue
        yield found[0]


@dataclass(frozen=True, slots=True)
class Plan:
    target: str
    claim_key: str
    claim_field: str
    claim_owner: str
    done_key: str
    release_done: bool
    task_id: str


def _plan(names: Names, r: Record) -> Plan | str:
    rejection = r.rejection()
    if rejection is None:
        return f"{r.id}: not a dead-letter record (no reason and source stream); left as is"
    if rejection.excerpted:
        return (
            f"{r.id}: refused for its size ({rejection.original_bytes or 0:,} bytes), only an "
            "excerpt was kept; not replayable: post the task again within the limits"
        )
    if not r.original:
        return f"{r.id}: the record kept no original fields; nothing to replay"
    target = rejection.source_stream
    if not target.startswith(names.namespace + ":"):
        return f"{r.id}: source stream {target} is not in namespace {names.namespace!r}; left as is"
    if target == names.reroutes:
        # A hand-back the dispatcher could not vouch for: replayed, the operator does.
        target = names.intake
    task = _task_with_id(r.original)
    queues = names.vendor_tasks("")
    if task is None or not (target == names.intake or target.startswith(queues)):
        return Plan(target, target, "", "", target, release_done=False, task_id="")
    intake = target == names.intake
    vendor = target.removeprefix(queues).split(":", 1)[0]
    return Plan(
        target,
        names.task(task.task_id),
        f"entry:{task.attempt}" if intake else "",
        rejection.source_id if intake else "",
        target if intake else names.task_done(vendor, task.task_id),
        release_done=not intake,
        task_id=task.task_id,
    )


def _task_with_id(original: dict[bytes, bytes]) -> Task | None:
    """The original entry as a task, if it is one and names its own id (an entry without
    one gets a fresh id at every decode, so nothing was claimed or marked under it)."""
    try:
        task = decode(Task, original)
        if b"data" in original:
            named = "task_id" in json.loads(original[b"data"])
        else:
            named = b"task_id" in original
    except (DecodeError, ValueError):
        return None
    return task if named else None


async def _replay(args: argparse.Namespace) -> int:
    done: list[dict[str, str]] = []
    problems: list[str] = []
    async with connected() as s:
        stream = stream_of(s.names, args.stream)
        script = s.redis.register_script(_REPLAY)
        async for item in _records(s.redis, stream, args):
            if isinstance(item, str):
                problems.append(item)
                continue
            plan = _plan(s.names, item)
            if isinstance(plan, str):
                problems.append(plan)
                continue
            row = {"id": item.id, "stream": plan.target, "task_id": plan.task_id}
            if args.dry_run:
                done.append(row)
                continue
            new_id = await _replay_one(s, script, stream, item, plan)
            if new_id is None:
                problems.append(f"{item.id}: gone from {stream} (replayed by someone else?)")
                continue
            done.append({**row, "new_id": new_id})
            if not args.json:
                print(f"replayed {item.id} -> {plan.target} as {new_id}" + _task(plan), flush=True)
    if args.json:
        print(
            json.dumps({"dry_run": args.dry_run, "replayed": done, "problems": problems}, indent=2)
        )
    else:
        if args.dry_run:
            for row in done:
                print(
                    f"would replay {row['id']} -> {row['stream']}"
                    + (f" (task {row['task_id']})" if row["task_id"] else "")
                )
        for p in problems:
            print(f"swarm: not replayed: {p}", file=sys.stderr)
        verb = "would replay" if args.dry_run else "replayed"
        print(
            f"{verb} {len(done)} record(s) from {stream}"
            + (f"; {len(problems)} not" if problems else "")
        )
    return 1 if problems else 0


def _task(plan: Plan) -> str:
    return f" (task {plan.task_id})" if plan.task_id else ""


async def _replay_one(s: Session, script: Any, stream: str, r: Record, plan: Plan) -> str | None:
    pairs: list[bytes] = []
    for k, v in r.original.items():
        pairs += [k, v]
    new_id = await script(
        keys=[stream, plan.target, plan.claim_key, plan.done_key],
        args=[r.id, plan.claim_field, plan.claim_owner, "1" if plan.release_done else "0", *pairs],
    )
    if new_id is None:
        return None
    return new_id.decode() if isinstance(new_id, bytes) else str(new_id)
