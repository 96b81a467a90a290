"""A test double of a mega-shard: answers ContextQuery messages from a fixed set of
documents, with no model and no cost, for tests of the asking side (ContextClient, the
worker) that should not depend on a vendor. The real shard is services/megashard; tests in
tests/megashard run it. This one follows the same protocol, so a worker cannot tell the
difference on the wire:

* it consumes `names.shard_queries(shard_id)` in the `megashard` group, through the bus
  (at-least-once delivery, reclaim, dead-lettering);
* it answers each query by simple keyword overlap between the query and the documents;
* the ContextReply goes to the query's `reply_to` before the ack;
* a query that does not decode is dead-lettered with the decode error as its reason;
* a query whose deadline has passed is acknowledged without a reply (nobody waits for it).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime

import structlog

from shared.bus.bus import Bus
from shared.bus.delivery import DeadLetter, Delivery, Outgoing
from shared.bus.serve import ServeStats, serve
from shared.protocol import ContextQuery, ContextReply, DecodeError, decode, encode
from shared.protocol.names import Names

log = structlog.get_logger("swarm.context")

CHARS_PER_TOKEN = 4  # rough rule of thumb for English text; no tokenizer here
_WORD_RE = re.compile(r"[a-z0-9_]+")
# fmt: off
_STOPWORDS = frozenset({
    "the", "and", "for", "are", "was", "were", "with", "this", "that", "from", "into",
    "what", "where", "when", "which", "who", "how", "why", "does", "did", "can", "could",
    "should", "would", "about", "there", "their", "them", "then", "than", "have", "has",
    "had", "not", "you", "your", "our", "its", "any", "all", "but", "use", "used",
})
# fmt: on


def keywords(text: str) -> set[str]:
    """Lower-cased words of three or more characters, minus common English stopwords."""
    return {w for w in _WORD_RE.findall(text.lower()) if len(w) >= 3 and w not in _STOPWORDS}


def answer_query(
    query: ContextQuery,
    documents: Mapping[str, str],
    *,
    shard_id: str,
    vendor: str = "static",
    model: str = "keyword-match",
) -> ContextReply:
    """The reply to `query`: the best-matching documents (most shared keywords first,
    name as tie-break), concatenated and cut to about `max_response_tokens`."""
    started = time.perf_counter()
    wanted = keywords(query.query)
    scored = sorted(
        ((-len(wanted & keywords(f"{name} {text}")), name) for name, text in documents.items()),
    )
    budget = query.max_response_tokens * CHARS_PER_TOKEN
    parts: list[str] = []
    sources: list[str] = []
    used = 0
    for negative_score, name in scored:
        if negative_score == 0 or used >= budget:
            break
        part = f"[{name}]\n{documents[name]}"
        if parts:
            part = "\n\n" + part
        part = part[: budget - used]
        parts.append(part)
        sources.append(name)
        used += len(part)
    # An estimate, not a count: the whole corpus, in characters / CHARS_PER_TOKEN, is what
    # a real shard would have had in its context window to answer from.
    searched = sum(len(name) + len(text) for name, text in documents.items()) // CHARS_PER_TOKEN
    return ContextReply(
        query_id=query.query_id,
        shard_id=shard_id,
        vendor=vendor,
        model=model,
        answer="".join(parts),
        sources=tuple(sources),
        context_tokens_searched=searched,
        cost_usd=0.0,  # nothing is billed: no model is called
        latency_ms=(time.perf_counter() - started) * 1000,
    )


async def serve_static_context(
    bus: Bus,
    *,
    shard_id: str,
    documents: dict[str, str],
    stop: asyncio.Event,
    consumer: str,
    vendor: str = "static",
    model: str = "keyword-match",
) -> None:
    """Answer the queries of shard `shard_id` from `documents` until `stop` is set.

    `consumer` is this process's member id (heartbeat it as a `megashard` member with
    `shard_id` in its info, so workers can resolve it by specialty).
    """
    stream = bus.names.shard_queries(shard_id)

    async def handle(delivery: Delivery) -> list[Outgoing]:
        try:
            query = decode(ContextQuery, delivery.fields)
        except DecodeError as exc:
            raise DeadLetter(str(exc), field=exc.field) from exc
        if query.deadline is not None and query.deadline < datetime.now(UTC):
            log.info(
                "context.query_expired",
                query_id=query.query_id,
                requester=query.requester_worker_id,
                note="deadline passed; acknowledged without a reply",
            )
            return []
        reply = answer_query(query, documents, shard_id=shard_id, vendor=vendor, model=model)
        log.debug(
            "context.query_answered",
            query_id=query.query_id,
            requester=query.requester_worker_id,
            sources=list(reply.sources),
        )
        return [Outgoing(query.reply_to, encode(reply))]

    sub = bus.subscribe(stream, Names.MEGASHARD_GROUP, consumer)
    await sub.start()
    stats: ServeStats = await serve(
        sub, handle, stop=stop, drain_timeout_s=bus.settings.drain_timeout_s
    )
    log.info(
        "context.static_shard_stopped",
        shard_id=shard_id,
        answered=stats.acked,
        dead_lettered=stats.dead_lettered,
    )
