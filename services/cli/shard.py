"""`swarm shard load|ask|list`: put context into a mega-shard, ask it, see what the swarm holds."""

from __future__ import annotations

import argparse
import json
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from services.megashard.corpus import CorpusError, read_paths
from services.megashard.load import LoadError, load_context
from services.megashard.settings import DEFAULT_SHARD_MODEL, SHARD_VENDORS, ShardSettings
from services.megashard.store import ContextStore, Head, StaleVersion
from shared.bus.bus import Bus
from shared.bus.context_client import MEGASHARD_SERVICE, ContextClient, ContextUnavailable
from shared.bus.membership import live_members
from shared.llm.errors import LLMError
from shared.llm.registry import build_client, price_table
from shared.llm.settings import VendorSettings
from shared.protocol import Names, Status
from shared.runtime.config_errors import load_all
from shared.runtime.metrics import Metrics
from shared.runtime.redis import connect, wait_ready
from shared.runtime.settings import BusSettings, SwarmSettings


class ShardCommandError(Exception):
    """One line for the user; the CLI prints it without a traceback."""


def add_parser(sub: Any) -> None:
    shard = sub.add_parser(
        "shard",
        help="load context into a mega-shard, ask it, list shards",
        description="Mega-shards hold a large context (files and folders of .txt, .log, .md, "
        ".markdown, .jsonl, .ndjson) and answer questions from it. Uses REDIS_URL and "
        "SWARM_NAMESPACE; the vendor's key (or SWARM_SIMULATOR_URL) for counting tokens.",
    )
    ssub = shard.add_subparsers(dest="shard_command", metavar="SUBCOMMAND", required=True)
    load = ssub.add_parser(
        "load",
        help="count documents with the vendor's tokenizer and store them as a new version",
        description="Read PATHS (files or folders), count the context with the vendor's own "
        "token counter, refuse it if it does not fit the model's window after the room kept "
        "for the query and the answer, and store it in Redis as the shard's next version. "
        "Running shards pick it up on their next query.",
    )
    load.add_argument("name", metavar="NAME", help="shard id (lower-case letters, digits, _ . -)")
    load.add_argument("paths", metavar="PATHS", nargs="+", type=Path)
    load.add_argument("--vendor", choices=SHARD_VENDORS, help="default: the shard's, else gemini")
    load.add_argument("--model", help="default: the shard's, else the vendor's long-context one")
    load.add_argument("--specialty", help="what the shard knows (legal, history, ...)")
    load.add_argument("--append", action="store_true", help="add to the current documents")
    load.add_argument("--reserve-tokens", type=int, help="room for query + answer (default 8192)")
    ask = ssub.add_parser("ask", help="ask a shard (by id or specialty) and print its answer")
    ask.add_argument("name", metavar="NAME", help="shard id or specialty")
    ask.add_argument("question", metavar="QUESTION")
    ask.add_argument("--timeout", type=float, default=120.0, help="seconds to wait (default 120)")
    ask.add_argument("--max-tokens", type=int, default=1024, help="answer length cap")
    ask.add_argument("--json", action="store_true", help="print the whole reply as JSON")
    show = ssub.add_parser("list", help="shards, their versions, tokens and live replicas")
    show.add_argument("--json", action="store_true")


@asynccontextmanager
async def _redis(swarm: SwarmSettings, bus: BusSettings) -> AsyncIterator[Redis]:
    url = swarm.redis_url.get_secret_value()
    client = connect(url, bus)
    try:
        try:
            await wait_ready(client, url, min(bus.connect_timeout_s, 10))
        except (ConnectionError, PermissionError) as exc:
            raise ShardCommandError(str(exc)) from None
        yield client
    finally:
        await client.aclose()


async def run(args: argparse.Namespace) -> int:
    swarm, bus = load_all(SwarmSettings, BusSettings)
    async with _redis(swarm, bus) as redis:
        if args.shard_command == "load":
            return await _load(args, redis, swarm.names)
        if args.shard_command == "ask":
            return await _ask(args, redis, swarm, bus)
        return await _list(args, redis, swarm.names)


async def _load(args: argparse.Namespace, redis: Redis, names: Names) -> int:
    vendors, settings = load_all(VendorSettings, ShardSettings)
    store = ContextStore(redis, names)
    head = await store.head(args.name)
    vendor = args.vendor or (head.vendor if head else "gemini")
    model = args.model or (
        head.model if head and head.vendor == vendor else DEFAULT_SHARD_MODEL[vendor]
    )
    try:
        found = read_paths(args.paths)
        llm = build_client(vendor, vendors, model)
    except (CorpusError, ValueError) as exc:
        raise ShardCommandError(str(exc)) from None
    for line in found.skipped:
        print(f"skipped {line}")
    print(
        f"{len(found.documents)} documents read; counting tokens with {vendor}/{model} ...",
        flush=True,
    )
    try:
        manifest = await load_context(
            store,
            llm,
            price_table(vendors),
            shard=args.name,
            documents=found.documents,
            model=model,
            specialty=args.specialty or "",
            append=args.append,
            reserve_tokens=(
                args.reserve_tokens if args.reserve_tokens is not None else settings.reserve_tokens
            ),
        )
    except (LoadError, StaleVersion, LLMError) as exc:
        raise ShardCommandError(str(exc)) from None
    finally:
        await llm.aclose()
    free = manifest.window - manifest.tokens
    print(
        f"shard {manifest.shard} v{manifest.version}: {len(manifest.documents)} documents, "
        f"{manifest.tokens:,} tokens ({manifest.token_method}) of {manifest.window:,} "
        f"({free:,} free); specialty {manifest.specialty or '-'}"
    )
    return 0


async def _ask(
    args: argparse.Namespace, redis: Redis, swarm: SwarmSettings, bus: BusSettings
) -> int:
    names = swarm.names
    replicas = [
        m for m in await live_members(redis, names) if m.get("service") == MEGASHARD_SERVICE
    ]
    if not any(args.name in (m.get("shard_id"), m.get("specialty")) for m in replicas):
        print(
            f"note: no live shard serves {args.name!r}; the query waits in its stream", flush=True
        )
    requester = f"cli-{socket.gethostname()}-{os.getpid()}"
    started = time.monotonic()
    async with ContextClient(
        Bus(redis, names, bus, Metrics.create()), requester_id=requester
    ) as ctx:
        try:
            reply = await ctx.ask(
                args.name,
                args.question,
                max_response_tokens=args.max_tokens,
                timeout_s=args.timeout,
            )
        except ContextUnavailable as exc:
            raise ShardCommandError(str(exc)) from None
    if args.json:
        print(reply.model_dump_json(indent=2))
        return 0 if reply.status is Status.OK else 1
    cost = "unpriced" if reply.cost_usd is None else f"${reply.cost_usd:.6f}"
    print(reply.answer.strip())
    print()
    print(f"sources:  {'; '.join(reply.sources) or '-'}")
    print(
        f"shard:    {reply.shard_id} ({reply.vendor}/{reply.model}), "
        f"{reply.context_tokens_searched:,} tokens searched"
    )
    print(
        f"tokens:   {reply.input_tokens:,} in, {reply.cache_read_tokens:,} from cache, "
        f"{reply.cache_write_tokens:,} cached now, {reply.output_tokens:,} out"
    )
    print(f"cost:     {cost}; {time.monotonic() - started:.2f}s")
    return 0


async def shard_rows(redis: Redis, names: Names) -> list[dict[str, Any]]:
    """Every shard with context: its head and its live replicas."""
    store = ContextStore(redis, names)
    members = [m for m in await live_members(redis, names) if m.get("service") == MEGASHARD_SERVICE]
    rows = []
    for shard in await store.shards():
        head: Head | None = await store.head(shard)
        if head is None:
            continue
        rows.append(
            {
                "shard": shard,
                "version": head.version,
                "vendor": head.vendor,
                "model": head.model,
                "specialty": head.specialty,
                "tokens": head.tokens,
                "window": head.window,
                "documents": head.documents,
                "replicas": sum(1 for m in members if m.get("shard_id") == shard),
            }
        )
    return rows


def format_shards(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no shards hold context (load one: swarm shard load NAME PATHS...)"
    lines = [
        f"{'SHARD':<16} {'VER':>4} {'VENDOR/MODEL':<34} {'SPECIALTY':<12} "
        f"{'TOKENS':>11} {'WINDOW':>11} {'DOCS':>6} {'LIVE':>4}"
    ]
    for r in rows:
        lines.append(
            f"{r['shard']:<16} {r['version']:>4} {r['vendor'] + '/' + r['model']:<34} "
            f"{r['specialty'] or '-':<12} {r['tokens']:>11,} {r['window']:>11,} "
            f"{r['documents']:>6} {r['replicas']:>4}"
        )
    total = sum(r["tokens"] for r in rows)
    live = sum(r["tokens"] for r in rows if r["replicas"])
    lines.append(f"context held by the swarm: {total:,} tokens ({live:,} in live shards)")
    return "\n".join(lines)


async def _list(args: argparse.Namespace, redis: Redis, names: Names) -> int:
    rows = await shard_rows(redis, names)
    print(json.dumps(rows, indent=2) if args.json else format_shards(rows))
    return 0
