"""A shard answering context queries over Redis Streams, through the real SDKs."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from google import genai
from google.genai import types
from redis.asyncio import Redis

from services.megashard.corpus import Document
from services.simulator.server import Simulator
from shared.bus.context_client import ContextClient, ContextUnavailable
from shared.bus.membership import live_members
from shared.llm.registry import build_client, price_table
from shared.llm.settings import SIMULATOR_KEY, VendorSettings
from shared.llm.types import LLMRequest
from shared.protocol import ContextQuery, ContextReply, Names, Rejection, Status, decode, encode
from shared.protocol.codec import decode_rejection
from tests.megashard.conftest import Load, StartShard, filler, stop_shard
from tests.waiting import eventually

DOCS = [
    Document("retries.md", "Our 429 retry policy: exponential backoff with jitter. " * 300),
    Document("ledger.md", filler(4000)),
    Document("weather.md", "Rain in March and sun in June. " * 300),
]


def calls(sim: Simulator) -> int:
    return int(sim.stats()["total"])


async def live_caches(sim: Simulator) -> list[types.CachedContent]:
    client = genai.Client(
        api_key=SIMULATOR_KEY, http_options=types.HttpOptions(base_url=sim.base_url + "/gemini")
    )
    try:
        return [c async for c in await client.aio.caches.list()]
    finally:
        await client.aio.aclose()


async def test_gemini_shard_answers_from_its_cached_context(
    load: Load, start_shard: StartShard, asker: ContextClient, simulator: Simulator
) -> None:
    manifest = await load("history", DOCS, specialty="history")
    await start_shard("history")

    first = await asker.ask("history", "What is the 429 retry policy?", timeout_s=20)
    second = await asker.ask("history", "How do retries back off?", timeout_s=20)

    assert first.status is Status.OK and second.status is Status.OK
    assert (first.shard_id, first.vendor, first.model) == (
        "history",
        "gemini",
        "gemini-2.5-flash-lite",
    )
    assert first.answer and first.context_tokens_searched == manifest.tokens
    # The first query created the cache (and read it), the second only read it.
    assert first.cache_write_tokens >= manifest.tokens - 100
    assert second.cache_write_tokens == 0
    assert second.cache_read_tokens >= manifest.tokens - 100
    assert second.input_tokens < 50  # only the question was sent
    assert first.cost_usd is not None and second.cost_usd is not None
    assert second.cost_usd < first.cost_usd / 5
    assert len(await live_caches(simulator)) == 1


async def test_shard_is_found_by_specialty_and_heartbeats_what_it_holds(
    redis: Redis, names: Names, load: Load, start_shard: StartShard, asker: ContextClient
) -> None:
    manifest = await load("legal-1", DOCS[:1], vendor="claude", specialty="legal")
    await start_shard("legal-1")

    async def registered() -> list[dict[str, str]]:
        members = await live_members(redis, names)
        return [m for m in members if m.get("shard_id") == "legal-1" and m.get("specialty")]

    [member] = await eventually(registered, what="the shard's heartbeat with its context")
    assert member["service"] == "megashard"
    assert member["specialty"] == "legal"
    assert member["loaded_tokens"] == str(manifest.tokens)
    assert member["window"] == "200000"
    assert member["model"] == "claude-haiku-4-5"
    reply = await asker.ask("legal", "What is the retry policy?", timeout_s=20)
    assert reply.shard_id == "legal-1"


async def test_cached_queries_cost_at_most_15_percent_of_the_naive_resend(
    load: Load, start_shard: StartShard, asker: ContextClient, vendors: VendorSettings
) -> None:
    docs = [Document(f"year{i}.md", filler(12_000, seed=i)) for i in range(6)]  # ~110K tokens
    prices = price_table(vendors)
    for vendor, shard in (("claude", "legal"), ("gemini", "history")):
        manifest = await load(shard, docs, vendor=vendor)
        await start_shard(shard)
        question = "Which quarter had the largest budget?"
        replies = [await asker.ask(shard, question, timeout_s=30) for _ in range(3)]
        # The naive way: the whole context sent, uncached, with every query.
        llm = build_client(vendor, vendors, manifest.model)
        try:
            from services.megashard.corpus import SYSTEM_PROMPT, render  # noqa: PLC0415

            naive = await llm.complete(
                LLMRequest(
                    prompt=question,
                    model=manifest.model,
                    system=SYSTEM_PROMPT,
                    context=render(docs),
                    cache_context=False,
                    max_output_tokens=1024,
                )
            )
        finally:
            await llm.aclose()
        from shared.llm.prices import price_usage  # noqa: PLC0415

        naive_cost = price_usage(prices, naive.model, naive.usage)
        assert naive_cost is not None and naive.usage.cache_read_tokens == 0
        for reply in replies[1:]:
            assert reply.cost_usd is not None
            assert reply.cost_usd <= 0.15 * naive_cost, (vendor, reply.cost_usd, naive_cost)
        # Even the query that wrote the cache costs about what a naive one does (writes are
        # billed at 1-1.25x input), not more than 1.5x.
        assert replies[0].cost_usd is not None and replies[0].cost_usd < 1.5 * naive_cost


TTL_S = 6.0


async def test_gemini_cache_is_extended_while_used_and_lapses_when_idle(
    load: Load, start_shard: StartShard, asker: ContextClient, simulator: Simulator
) -> None:
    await load("history", DOCS)
    await start_shard("history", cache_ttl_s=TTL_S)

    first = await asker.ask("history", "retry policy?", timeout_s=20)
    [created] = await live_caches(simulator)
    assert first.cache_write_tokens > 0
    assert created.expire_time is not None
    # Until under half the TTL is left (timed from the entry's own expiry, not from when the
    # first answer came, which a busy machine delays): the next query extends it.
    left = (created.expire_time - datetime.now(UTC)).total_seconds()
    await asyncio.sleep(max(0.0, left - TTL_S * 0.4))
    second = await asker.ask("history", "retry policy again?", timeout_s=20)
    [extended] = await live_caches(simulator)
    assert second.cache_write_tokens == 0
    assert extended.name == created.name
    assert extended.expire_time is not None and created.expire_time is not None
    assert extended.expire_time > created.expire_time + timedelta(seconds=1)

    async def gone() -> bool:
        return not await live_caches(simulator)

    await eventually(gone, timeout=TTL_S + 4, interval=0.25, what="the idle cache to lapse")
    third = await asker.ask("history", "retry policy, later?", timeout_s=20)
    assert third.status is Status.OK
    assert third.cache_write_tokens > 0  # a new entry, made on demand
    assert len(await live_caches(simulator)) == 1


async def test_a_restarted_shard_or_a_second_replica_serves_the_stored_context(
    load: Load, start_shard: StartShard, asker: ContextClient, simulator: Simulator
) -> None:
    manifest = await load("history", DOCS)
    task = await start_shard("history")
    await asker.ask("history", "retry policy?", timeout_s=20)
    assert await stop_shard(task) == 0  # the first process is gone; nobody loads again
    await start_shard("history")
    reply = await asker.ask("history", "retry policy once more?", timeout_s=20)
    assert reply.status is Status.OK
    assert reply.context_tokens_searched == manifest.tokens
    assert reply.cache_write_tokens == 0  # the replica found the shared cache entry in Redis
    assert len(await live_caches(simulator)) == 1


async def test_a_new_version_is_picked_up_and_the_old_cache_deleted(
    load: Load, start_shard: StartShard, asker: ContextClient, simulator: Simulator
) -> None:
    v1 = await load("history", DOCS[:2])
    await start_shard("history", version_check_s=0)
    old = await asker.ask("history", "weather in March?", timeout_s=20)
    [old_cache] = await live_caches(simulator)
    v2 = await load("history", DOCS[2:], append=True)
    new = await asker.ask("history", "weather in March?", timeout_s=20)

    assert old.context_tokens_searched == v1.tokens
    assert new.context_tokens_searched == v2.tokens > v1.tokens
    assert new.cache_write_tokens > 0
    [new_cache] = await live_caches(simulator)
    assert new_cache.name != old_cache.name


async def test_a_shard_with_nothing_loaded_says_so_at_once(
    start_shard: StartShard, asker: ContextClient
) -> None:
    await start_shard("empty")
    started = time.monotonic()
    with pytest.raises(ContextUnavailable, match="no context loaded; run: swarm shard load empty"):
        await asker.ask("empty", "anything?", timeout_s=20)
    assert time.monotonic() - started < 10


async def test_a_redelivered_query_gets_the_same_reply_without_a_second_call(
    redis: Redis, names: Names, load: Load, start_shard: StartShard, simulator: Simulator
) -> None:
    await load("legal", DOCS[:1], vendor="claude")
    await start_shard("legal")
    reply_to = names.replies("tester-dup")
    query = ContextQuery(
        requester_worker_id="tester-dup", target_shard="legal", query="retries?", reply_to=reply_to
    )
    await redis.xadd(names.shard_queries("legal"), encode(query))  # type: ignore[arg-type]

    async def replies(n: int) -> list[ContextReply]:
        got = [decode(ContextReply, f) for _, f in await redis.xrange(reply_to)]
        return got if len(got) >= n else []

    [first] = await eventually(lambda: replies(1), what="the reply")
    before = calls(simulator)
    await redis.xadd(names.shard_queries("legal"), encode(query))  # type: ignore[arg-type]
    _, again = await eventually(lambda: replies(2), what="the second reply")
    assert again.model_dump(exclude={"timestamp"}) == first.model_dump(exclude={"timestamp"})
    assert calls(simulator) == before


async def test_expired_and_malformed_queries_get_no_vendor_call(
    redis: Redis, names: Names, load: Load, start_shard: StartShard, simulator: Simulator
) -> None:
    await load("legal", DOCS[:1], vendor="claude")
    await start_shard("legal")
    stream = names.shard_queries("legal")
    before = calls(simulator)
    expired = ContextQuery(
        requester_worker_id="gone",
        target_shard="legal",
        query="too late?",
        reply_to=names.replies("gone"),
        deadline=datetime.now(UTC) - timedelta(seconds=1),
    )
    await redis.xadd(stream, encode(expired))  # type: ignore[arg-type]
    await redis.xadd(stream, {"query": "no requester, no reply_to"})

    async def dead_lettered() -> list[Rejection]:
        return [decode_rejection(f) for _, f in await redis.xrange(names.dead_letter)]

    [rejection] = await eventually(dead_lettered, what="the malformed query in the DLQ")
    assert "not a valid context query" in rejection.reason
    assert rejection.original == {"query": "no requester, no reply_to"}

    async def acked() -> bool:
        pending = await redis.xpending(stream, "megashard")
        return pending["pending"] == 0

    await eventually(acked, what="both queries settled")
    assert await redis.xlen(names.replies("gone")) == 0
    assert calls(simulator) == before


async def test_a_long_query_keeps_its_claim_and_is_answered_once(
    redis: Redis, names: Names, load: Load, start_shard: StartShard, simulator: Simulator
) -> None:
    await load("legal", DOCS[:1], vendor="claude")
    # Two replicas with a 1 s visibility timeout; the answer takes 3 s.
    await start_shard("legal", visibility_timeout_s=1)
    await start_shard("legal", visibility_timeout_s=1)
    bus_asker = ContextClient  # the fixture's client has the default reply TTL; fine here
    del bus_asker
    reply_to = names.replies("tester-slow")
    query = ContextQuery(
        requester_worker_id="tester-slow",
        target_shard="legal",
        query="retries? [[sim:latency=3]]",
        reply_to=reply_to,
    )
    before = calls(simulator)
    await redis.xadd(names.shard_queries("legal"), encode(query))  # type: ignore[arg-type]

    async def replied() -> int:
        return int(await redis.xlen(reply_to))

    await eventually(replied, timeout=15, what="the slow reply")
    await asyncio.sleep(1.5)  # a stolen claim would have produced a second call and reply
    assert await redis.xlen(reply_to) == 1
    assert calls(simulator) - before == 1
