"""`swarm status` without a task id: who is alive, what every stream holds, what the swarm has
cost so far, and what context it holds. Also the CLI's way into Redis (`connected`,
`run_async`), shared by `swarm post`, `swarm findings` and `swarm dlq`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from services.cli.errors import CliError
from services.cli.shard import format_shards, shard_rows
from shared.bus.findings import ModelTotals, totals_by_model
from shared.bus.membership import live_members, member_models
from shared.protocol import Names
from shared.runtime.config_errors import load_all
from shared.runtime.redis import connect, wait_ready
from shared.runtime.settings import BusSettings, SwarmSettings

T = TypeVar("T")

CONNECT_TIMEOUT_S = 5.0  # a person is waiting: say Redis is down within seconds


@dataclass(frozen=True, slots=True)
class Session:
    redis: Redis
    swarm: SwarmSettings

    @property
    def names(self) -> Names:
        return self.swarm.names


def settings() -> tuple[SwarmSettings, BusSettings]:
    """REDIS_URL, SWARM_NAMESPACE and the bus tuning; a bad value is a ConfigError naming
    the variable, which `swarm` prints as one line."""
    return load_all(SwarmSettings, BusSettings)


@asynccontextmanager
async def connected() -> AsyncIterator[Session]:
    """A Redis client that answered PING; Redis down or a refused password is a CliError."""
    swarm, bus = settings()
    url = swarm.redis_url.get_secret_value()
    redis = connect(url, bus)
    try:
        try:
            await wait_ready(redis, url, min(bus.connect_timeout_s, CONNECT_TIMEOUT_S))
        except (ConnectionError, PermissionError) as exc:
            raise CliError(str(exc).splitlines()[0]) from None
        yield Session(redis, swarm)
    finally:
        await redis.aclose()


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; a Redis failure after connecting is one line too."""
    from shared.runtime.logging import configure_logging  # noqa: PLC0415

    configure_logging("error", json=False)  # no "waiting for Redis" lines on stdout
    try:
        return asyncio.run(coro)
    except RedisError as exc:
        raise CliError(
            f"Redis: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None


# -- streams ---------------------------------------------------------------------------------


async def swarm_streams(redis: Redis, names: Names, shards: list[str]) -> list[str]:
    """Every stream of the swarm worth watching: intake, hand-backs, rejected, findings,
    dead-letter, each vendor queue that exists and each shard's query stream."""
    fixed = [names.intake, names.reroutes, names.rejected, names.findings, names.dead_letter]
    queues: set[str] = set()  # those that exist: a vendor nobody routed to has none
    queries = {names.shard_queries(s) for s in shards}
    for pattern, found in (
        (names.vendor_tasks("*"), queues),
        (names.shard_queries("*"), queries),
    ):
        async for key in redis.scan_iter(match=pattern, count=500, _type="STREAM"):
            found.add(key.decode() if isinstance(key, bytes) else str(key))
    return fixed + sorted(queues) + sorted(queries)


async def stream_info(redis: Redis, stream: str) -> dict[str, Any]:
    """Length and, per consumer group, consumers, pending and lag (None: Redis cannot tell)."""
    groups: list[dict[str, Any]] = []
    try:
        length = int(await redis.xlen(stream))
        exists = length > 0 or bool(await redis.exists(stream))
        raw = await redis.xinfo_groups(stream) if exists else []
    except ResponseError:  # the key holds something else than a stream
        return {"stream": stream, "exists": False, "length": 0, "groups": groups}
    for g in raw:
        lag = g.get("lag")
        groups.append(
            {
                "group": text(g.get("name", b"")),
                "consumers": int(g.get("consumers", 0)),
                "pending": int(g.get("pending", 0)),
                "lag": None if lag is None else int(lag),
            }
        )
    return {"stream": stream, "exists": exists, "length": length, "groups": groups}


# -- fleet -----------------------------------------------------------------------------------


def _role(member: dict[str, str]) -> tuple[str, str]:
    return member.get("service", "?"), member.get("vendor") or member.get("shard_id") or ""


def live_rows(members: list[dict[str, str]]) -> list[dict[str, Any]]:
    """One row per service and vendor (or shard): replicas, capacity, in flight, and whether
    they have their vendor's key (`configured`; else the variables `missing`, and how many
    replicas are `unconfigured`: they run but take no tasks)."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for m in members:
        service, name = _role(m)
        row = rows.setdefault(
            (service, name),
            {"service": service, "name": name, "replicas": 0, "capacity": 0, "in_flight": 0,
             "members": [], "configured": True, "unconfigured": 0, "missing": [],
             "models": []},
        )  # fmt: skip
        row["replicas"] += 1
        if m.get("vendor") and m.get("configured") != "false":  # what its workers serve
            row["models"] = list(dict.fromkeys([*row["models"], *member_models(m)]))
        row["capacity"] += _int(m.get("capacity"))
        row["in_flight"] += _int(m.get("in_flight"))
        row["members"].append(m.get("member_id", ""))
        if m.get("configured") == "false":
            row["configured"] = False
            row["unconfigured"] += 1
            missing = [v for v in m.get("missing", "").split(",") if v]
            row["missing"] = sorted({*row["missing"], *missing})
    return [rows[k] for k in sorted(rows)]


def not_configured(row: dict[str, Any]) -> str:
    """`not configured (set DEEPSEEK_API_KEY)` for a row whose replicas lack their key."""
    if row.get("configured", True):
        return ""
    some = "" if row["unconfigured"] == row["replicas"] else f"{row['unconfigured']} "
    what = " or ".join(row["missing"]) or "its vendor's key"
    return f"{some}not configured (set {what})"


async def fleet_data(redis: Redis, names: Names) -> dict[str, Any]:
    members = await live_members(redis, names)
    shards = await shard_rows(redis, names)
    streams = [
        await stream_info(redis, s)
        for s in await swarm_streams(redis, names, [r["shard"] for r in shards])
    ]
    totals = await totals_by_model(redis, names)
    length = {s["stream"]: s["length"] for s in streams}
    return {
        "namespace": names.namespace,
        "live": live_rows(members),
        "streams": streams,
        "dead_letter": length[names.dead_letter],
        "rejected": length[names.rejected],
        "totals": [asdict(t) for t in totals],
        "cost_usd": sum(t.cost_usd for t in totals),
        "duplicate_cost_usd": sum(t.duplicate_cost_usd for t in totals),
        "unpriced": sum(t.unpriced for t in totals),
        "shards": shards,
    }


async def fleet_status(*, as_json: bool) -> int:
    async with connected() as s:
        data = await fleet_data(s.redis, s.names)
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        print(format_fleet(data, s.swarm.redis_url_redacted))
    return 0


def format_fleet(data: dict[str, Any], where: str) -> str:
    lines = [f"swarm {data['namespace']!r} at {where}", ""]
    live = data["live"]
    if not live:
        lines.append("no live services (start some: swarm run SERVICE, or make demo)")
    else:
        lines.append(
            f"{'SERVICE':<22} {'VENDOR/SHARD':<18} {'LIVE':>4} {'IN FLIGHT':>9} {'CAPACITY':>8}"
        )
        for r in live:
            cap = str(r["capacity"]) if r["capacity"] else "-"
            note = not_configured(r) or (
                f"serves {', '.join(r['models'])}" if r.get("models") else ""
            )
            lines.append(
                f"{r['service']:<22} {r['name'] or '-':<18} {r['replicas']:>4} "
                f"{r['in_flight']:>9} {cap:>8}" + (f"  {note}" if note else "")
            )
    lines += ["", f"{'STREAM':<40} {'LENGTH':>8}  GROUPS (pending, lag)"]
    for s in data["streams"]:
        if not s["exists"]:
            lines.append(f"{s['stream']:<40} {'-':>8}  (not created yet)")
            continue
        groups = ", ".join(
            f"{g['group']} ({g['pending']} pending, lag {'?' if g['lag'] is None else g['lag']})"
            for g in s["groups"]
        )
        lines.append(f"{s['stream']:<40} {s['length']:>8,}  {groups or '-'}")
    hint = (
        "   (see them: swarm dlq list)"
        if data["dead_letter"]
        else "   (see them: swarm dlq list --stream rejected)"
        if data["rejected"]
        else ""
    )
    lines.append(f"dead-letter: {data['dead_letter']:,}   rejected: {data['rejected']:,}{hint}")
    lines += ["", *format_totals([ModelTotals(**t) for t in data["totals"]])]
    lines += ["", format_shards(data["shards"])]
    return "\n".join(lines)


def format_totals(totals: list[ModelTotals]) -> list[str]:
    if not totals:
        return ["no findings collected yet (is the collector running? swarm run collector)"]
    lines = [
        f"{'VENDOR/MODEL':<40} {'TASKS':>7} {'FAILED':>7} {'TOKENS IN':>12} "
        f"{'TOKENS OUT':>11} {'COST':>12}"
    ]
    for t in totals:
        cost = _usd(t.cost_usd) + ("+" if t.unpriced else "")
        if t.unpriced and t.unpriced >= t.tasks:  # nothing of it priced: unknown, not $0
            cost = "unpriced"
        lines.append(
            f"{t.vendor + '/' + t.model:<40} {t.tasks:>7,} {t.failed:>7,} "
            f"{t.input_tokens:>12,} {t.output_tokens:>11,} {cost:>12}"
        )
    spent = sum(t.cost_usd for t in totals)
    dup = sum(t.duplicate_cost_usd for t in totals)
    unpriced = sum(t.unpriced for t in totals)
    note = [f"cost so far: {_usd(spent)}"]
    if dup:
        note.append(f"plus {_usd(dup)} of duplicate work")
    if unpriced:
        note.append(f"{unpriced:,} findings of unpriced models not included (+)")
    lines.append("; ".join(note))
    return lines


def _usd(value: float) -> str:
    return f"${value:,.6f}" if value < 1 else f"${value:,.2f}"


def _int(raw: str | None) -> int:
    try:
        return int(float(raw or 0))
    except ValueError:
        return 0


def text(raw: bytes | str) -> str:
    """A Redis reply as text; bytes that are not UTF-8 are replaced, never fatal."""
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
