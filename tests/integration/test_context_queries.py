"""Context queries on a real Redis: a worker's ContextClient against a stand-in shard."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from shared.bus import Bus, Delivery, Heartbeat, Outgoing, serve
from shared.bus.context_client import ContextClient, ContextUnavailable
from shared.protocol import (
    ContextQuery,
    ContextReply,
    Names,
    Status,
    decode,
    decode_rejection,
    encode,
)
from shared.runtime.settings import BusSettings
from tests.static_shard import serve_static_context
from tests.waiting import eventually

DOCS = {
    "retry.md": "services/http/retry.py defines RetryPolicy: HTTP 429 is retried five times "
    "with exponential backoff.",
    "auth.md": "Access tokens are refreshed by services/auth/refresh.py one minute before expiry.",
    "deploy.md": "Deployments roll out with Helm; canary first, then the whole fleet.",
}


@contextlib.asynccontextmanager
async def static_shard(
    bus: Bus, shard_id: str, docs: dict[str, str] = DOCS, consumer: str = "mega-1"
) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(
        serve_static_context(bus, shard_id=shard_id, documents=docs, stop=stop, consumer=consumer)
    )
    try:
        yield
    finally:
        stop.set()
        await task


@contextlib.asynccontextmanager
async def fake_shard(bus: Bus, shard_id: str, answer: Any) -> AsyncIterator[None]:
    """A shard whose reply to each query is `answer(query)`, published with the ack."""

    async def handle(d: Delivery) -> list[Outgoing]:
        query = decode(ContextQuery, d.fields)
        return [Outgoing(query.reply_to, encode(answer(query)))]

    sub = bus.subscribe(bus.names.shard_queries(shard_id), Names.MEGASHARD_GROUP, "fake-1")
    await sub.start()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(sub, handle, stop=stop, drain_timeout_s=2))
    try:
        yield
    finally:
        stop.set()
        await task


@contextlib.asynccontextmanager
async def megashard_member(
    redis: Redis, names: Names, settings: BusSettings, member_id: str, **info: str
) -> AsyncIterator[Heartbeat]:
    hb = Heartbeat(
        redis,
        names,
        member_id,
        service=info.pop("service", "megashard"),
        interval_s=settings.heartbeat_interval_s,
        ttl_s=settings.heartbeat_ttl_s,
        info=info,
    )
    stop = asyncio.Event()

    async def beat() -> None:  # stopped by an event: a cancelled Redis call can swallow
        while not stop.is_set():  # the cancellation with this redis-py
            await hb.beat()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.heartbeat_interval_s)

    await hb.beat()
    task = asyncio.create_task(beat())
    try:
        yield hb
    finally:
        stop.set()
        await task
        await hb.leave()


async def test_ask_gets_the_answer_and_its_sources(bus: Bus, names: Names, redis: Redis) -> None:
    async with static_shard(bus, "repo-main"), ContextClient(bus, requester_id="w-1") as client:
        reply = await client.ask(
            "repo-main",
            "Where is the retry policy for HTTP 429 defined?",
            task_id="task_1",
            max_response_tokens=512,
        )
    assert reply.status is Status.OK
    assert reply.shard_id == "repo-main"
    assert reply.sources == ("retry.md",)
    assert "RetryPolicy" in reply.answer
    assert reply.cost_usd == 0.0
    assert reply.context_tokens_searched > 0

    raw: Any = await redis.xrange(names.shard_queries("repo-main"))
    assert len(raw) == 1
    sent = decode(ContextQuery, raw[0][1])
    assert sent.query_id == reply.query_id
    assert sent.requester_worker_id == "w-1"
    assert sent.target_shard == "repo-main"
    assert sent.reply_to == names.replies("w-1")
    assert sent.task_id == "task_1"
    assert sent.max_response_tokens == 512
    assert sent.deadline is not None and sent.deadline > sent.timestamp


async def test_the_answer_is_cut_to_the_token_budget(bus: Bus) -> None:
    docs = {"big.md": "retry " * 10_000, "other.md": "retry policy " * 10_000}
    async with static_shard(bus, "s", docs), ContextClient(bus, requester_id="w-1") as client:
        reply = await client.ask("s", "retry policy", max_response_tokens=100)
    assert 0 < len(reply.answer) <= 100 * 4
    assert reply.sources[0] == "other.md"  # two shared keywords beat one


async def test_concurrent_asks_from_one_client_get_their_own_replies(bus: Bus) -> None:
    async with static_shard(bus, "repo-main"), ContextClient(bus, requester_id="w-1") as client:
        retry, auth = await asyncio.gather(
            client.ask("repo-main", "HTTP 429 retry policy"),
            client.ask("repo-main", "when are access tokens refreshed"),
        )
        assert retry.sources == ("retry.md",)
        assert auth.sources == ("auth.md",)
        assert retry.query_id != auth.query_id

        # A burst: replies land while the reader is busy with earlier ones, none is lost.
        topics = ["retry backoff", "tokens refresh", "helm canary"] * 10
        replies = await asyncio.gather(*(client.ask("repo-main", t) for t in topics))
        expected = {"retry backoff": "retry.md", "tokens refresh": "auth.md"}
        for topic, reply in zip(topics, replies, strict=True):
            assert reply.sources == (expected.get(topic, "deploy.md"),)
        assert client.waiting == 0


async def test_a_reply_that_lands_before_anyone_waits_is_kept(bus: Bus, names: Names) -> None:
    async with ContextClient(bus, requester_id="w-1") as client:
        pending = await client.send("s", "anything", timeout_s=10)
        # The shard answers at once, before the asker has started to wait.
        sent: Any = await bus.redis.xrange(names.shard_queries("s"))
        query = decode(ContextQuery, sent[0][1])
        reply = ContextReply(
            query_id=query.query_id, shard_id="s", vendor="static", model="m", answer="fast"
        )
        await bus.publish(query.reply_to, encode(reply))

        async def taken() -> bool:
            return pending.done()

        await eventually(taken, what="the reader to take the reply")
        await asyncio.sleep(0.3)  # several more reads go by; the reply must stay taken
        got = await pending.wait()
    assert got.answer == "fast"
    assert got.query_id == pending.query_id


async def test_a_fast_shard_never_loses_a_reply(bus: Bus) -> None:
    def answer(q: ContextQuery) -> ContextReply:
        return ContextReply(query_id=q.query_id, shard_id="s", vendor="static", model="m")

    async with fake_shard(bus, "s", answer), ContextClient(bus, requester_id="w-1") as client:
        for _ in range(20):
            assert (await client.ask("s", "quick", timeout_s=5)).shard_id == "s"


async def test_no_shard_answering_is_context_unavailable(bus: Bus) -> None:
    async with ContextClient(bus, requester_id="w-1") as client:
        with pytest.raises(ContextUnavailable) as caught:
            await client.ask("ghost-shard", "anyone there?", timeout_s=0.5)
        assert client.waiting == 0
    assert caught.value.shard == "ghost-shard"
    assert "ghost-shard" in str(caught.value)
    assert caught.value.waited_s >= 0.4
    assert caught.value.error is None


async def test_the_query_waits_in_the_stream_for_a_shard_that_comes_up_later(bus: Bus) -> None:
    async with ContextClient(bus, requester_id="w-1") as client:
        pending = await client.send("repo-main", "retry policy", timeout_s=10)
        await asyncio.sleep(0.2)
        async with static_shard(bus, "repo-main"):
            reply = await pending.wait()
    assert reply.sources == ("retry.md",)


async def test_resolution_by_specialty_through_live_members(
    bus: Bus, names: Names, redis: Redis, bus_settings: BusSettings
) -> None:
    async with (
        megashard_member(redis, names, bus_settings, "mega-a", shard_id="repo-a",
                         specialty="python", in_flight="5"),
        megashard_member(redis, names, bus_settings, "mega-b", shard_id="repo-b",
                         specialty="python", in_flight="1"),
        megashard_member(redis, names, bus_settings, "mega-c", shard_id="repo-c",
                         specialty="go"),
        megashard_member(redis, names, bus_settings, "worker-x", service="worker",
                         shard_id="wrong", specialty="rust"),
        ContextClient(bus, requester_id="w-1") as client,
    ):  # fmt: skip
        assert await client.resolve("python") == "repo-b"  # the least in flight
        assert await client.resolve("go") == "repo-c"
        assert await client.resolve("repo-a") == "repo-a"  # a live shard id wins
        assert await client.resolve("rust") == "rust"  # not a megashard: taken as a shard id
        assert await client.resolve("not-up-yet") == "not-up-yet"

        async with static_shard(bus, "repo-c", consumer="mega-c"):
            reply = await client.ask("go", "retry policy for 429")
        assert reply.shard_id == "repo-c"
        assert reply.sources == ("retry.md",)


async def test_a_departed_shard_is_not_resolved(
    bus: Bus, names: Names, redis: Redis, bus_settings: BusSettings
) -> None:
    async with ContextClient(bus, requester_id="w-1") as client:
        async with megashard_member(
            redis, names, bus_settings, "mega-a", shard_id="repo-a", specialty="python"
        ):
            assert await client.resolve("python") == "repo-a"
        assert await client.resolve("python") == "python"


async def test_a_failed_reply_is_context_unavailable_with_the_shards_error(bus: Bus) -> None:
    def answer(q: ContextQuery) -> ContextReply:
        return ContextReply(
            query_id=q.query_id,
            shard_id="s",
            vendor="gemini",
            model="gemini-2.5-pro",
            status=Status.FAILED,
            error="context window exceeded",
        )

    async with fake_shard(bus, "s", answer), ContextClient(bus, requester_id="w-1") as client:
        with pytest.raises(ContextUnavailable) as caught:
            await client.ask("s", "everything", timeout_s=10)
    assert caught.value.error == "context window exceeded"
    assert "context window exceeded" in str(caught.value)
    assert caught.value.shard == "s"


async def test_an_undecodable_query_is_dead_lettered(bus: Bus, names: Names) -> None:
    stream = names.shard_queries("repo-main")
    async with static_shard(bus, "repo-main"):
        await bus.publish(stream, {"query": "who am I answering?"})

        async def dead() -> list[Any]:
            found: Any = await bus.redis.xrange(names.dead_letter)
            return list(found)

        entries = await eventually(dead, what="the dead-letter record")
    rejection = decode_rejection(entries[0][1])
    assert "requester_worker_id: is required" in rejection.reason
    assert rejection.field == "requester_worker_id"
    assert rejection.source_stream == stream
    assert rejection.group == Names.MEGASHARD_GROUP
    assert rejection.original == {"query": "who am I answering?"}


async def test_a_query_past_its_deadline_gets_no_reply(bus: Bus, names: Names) -> None:
    stream = names.shard_queries("repo-main")
    past = ContextQuery(
        requester_worker_id="w-1",
        target_shard="repo-main",
        query="retry policy",
        reply_to=names.replies("w-1"),
        deadline=datetime.now(UTC) - timedelta(seconds=1),
    )
    async with static_shard(bus, "repo-main"):
        await bus.publish(stream, encode(past))

        async def acked() -> bool:
            groups: Any = await bus.redis.xinfo_groups(stream)
            return (
                bool(groups)
                and groups[0]["last-delivered-id"] != b"0-0"
                and groups[0]["pending"] == 0
            )

        await eventually(acked, what="the expired query to be acknowledged")
    assert await bus.redis.exists(names.replies("w-1")) == 0


async def test_the_reply_stream_expires(bus: Bus, names: Names) -> None:
    stream = names.replies("w-1")
    async with (
        static_shard(bus, "repo-main"),
        ContextClient(bus, requester_id="w-1", reply_ttl_s=120) as client,
    ):
        ttl = await bus.redis.pttl(stream)  # set at start(), before any reply exists
        assert 0 < ttl <= 120_000
        assert await bus.redis.xlen(stream) == 0
        await client.ask("repo-main", "retry policy")
        ttl = await bus.redis.pttl(stream)  # the shard's XADD did not clear it
        assert 0 < ttl <= 120_000


async def test_handled_replies_are_trimmed(bus: Bus, names: Names) -> None:
    stream = names.replies("w-1")
    strays = [
        Outgoing(
            stream, encode(ContextReply(query_id=f"q{i}", shard_id="x", vendor="v", model="m"))
        )
        for i in range(300)
    ]
    async with static_shard(bus, "repo-main"), ContextClient(bus, requester_id="w-1") as client:
        await bus.publish_many(strays)
        reply = await client.ask("repo-main", "retry policy", timeout_s=10)
        assert reply.sources == ("retry.md",)

        async def trimmed() -> bool:
            return int(await bus.redis.xlen(stream)) < 200  # whole nodes of handled replies

        await eventually(trimmed, what="handled replies to be trimmed")
        assert await bus.redis.pttl(stream) > 0


async def test_bad_and_unknown_replies_do_not_stop_the_reader(bus: Bus, names: Names) -> None:
    stream = names.replies("w-1")
    async with static_shard(bus, "repo-main"), ContextClient(bus, requester_id="w-1") as client:
        await bus.publish(stream, {"garbage": "yes"})
        await bus.publish(stream, {"data": "not json"})
        stray = ContextReply(query_id="query_nobody", shard_id="x", vendor="static", model="m")
        await bus.publish(stream, encode(stray))
        reply = await client.ask("repo-main", "retry policy", timeout_s=10)
    assert reply.sources == ("retry.md",)


async def test_closing_the_client_releases_waiters(bus: Bus) -> None:
    client = ContextClient(bus, requester_id="w-1")
    await client.start()
    pending = await client.send("ghost", "anyone?", timeout_s=30)
    await client.close()
    with pytest.raises(ContextUnavailable, match="closed"):
        await pending.wait()
    with pytest.raises(RuntimeError, match="not started"):
        await client.ask("ghost", "again?")
