"""A context query of a traced task is part of its trace (docs/protocol.md section 10.1):
the shard's span is the asker's child, its vendor call the shard span's, with the GenAI
attributes of a cached Gemini read."""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from redis.asyncio import Redis

from services.megashard.load import Document
from shared.bus.context_client import ContextClient
from shared.protocol import ContextQuery, Names, Status, decode
from shared.protocol.tracecontext import TraceContext
from shared.runtime.tracing import Tracer
from tests.megashard.conftest import Load, StartShard, filler
from tests.waiting import eventually

# Large enough for an explicit Gemini cache, so the call reads cached input.
DOCS = [Document("history.md", filler(8_000))]


async def test_a_traced_query_is_a_span_of_its_task_with_its_vendor_call(
    redis: Redis, names: Names, load: Load, start_shard: StartShard, asker: ContextClient
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "swarmbus-megashard"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    await load("history", DOCS, specialty="history")
    await start_shard("history", tracer=Tracer(provider))
    asking = TraceContext.new()  # the asking worker's swarm.task span

    reply = await asker.ask(
        "history", "What is the retry policy?", timeout_s=20, task_id="task-q", trace=asking
    )
    assert reply.status is Status.OK

    async def two() -> list[object] | None:
        spans = list(exporter.get_finished_spans())
        return spans if len(spans) >= 2 else None

    spans = await eventually(two, timeout=10, what="the shard's spans")
    by_name = {s.name: s for s in spans}
    query, call = by_name["swarm.shard_query"], by_name[f"chat {reply.model}"]
    assert query.context is not None and call.context is not None
    assert f"{query.context.trace_id:032x}" == asking.trace_id
    assert query.parent is not None and f"{query.parent.span_id:016x}" == asking.span_id
    assert call.parent is not None and call.parent.span_id == query.context.span_id
    assert query.kind == SpanKind.CONSUMER and call.kind == SpanKind.CLIENT
    assert call.attributes is not None and query.attributes is not None
    assert query.attributes["swarm.task_id"] == "task-q"
    assert call.attributes["gen_ai.provider.name"] == "gcp.gemini"
    assert call.attributes["gen_ai.usage.output_tokens"] == reply.output_tokens
    assert call.attributes["gen_ai.usage.cache_read.input_tokens"] == reply.cache_read_tokens > 0

    # The query on the stream: 1.2, the asker's span as the parent.
    [(_id, fields)] = await redis.xrange(names.shard_queries("history"))
    assert fields[b"schema_version"] == b"1.2"
    assert decode(ContextQuery, fields).headers == asking.headers()
