"""Traces across every hop (docs/protocol.md section 10.1): a task posted with `redis-cli
XADD` is followed through dispatcher, worker, vendor call and collector as one trace, every
span exported by OpenTelemetry's SDK to an in-memory exporter and parented correctly; with
no `traceparent` the dispatcher starts the trace; `SWARM_TRACE_START=false` writes none."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from redis.asyncio import Redis

from services.collector.service import run_collector
from services.collector.settings import CollectorSettings
from services.dispatcher.service import run_dispatcher
from services.dispatcher.settings import DispatcherSettings
from services.simulator.config import SimulatorConfig
from services.simulator.server import Simulator
from services.worker.service import run_worker
from services.worker.settings import WorkerSettings
from shared.bus.findings import task_view
from shared.bus.streamids import text
from shared.llm.settings import VendorSettings
from shared.protocol import Finding, Names, Task, decode
from shared.protocol.tracecontext import trace_of
from shared.runtime.settings import BusSettings, SwarmSettings
from shared.runtime.tracing import Tracer
from tests.cli.test_urgency import readme_line
from tests.cli.typed_fleet import typed_fleet
from tests.waiting import eventually

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


@dataclass
class Swarm:
    redis_url: str
    names: Names
    exporter: InMemorySpanExporter

    def spans(self, trace_id: str) -> list[ReadableSpan]:
        return [
            s
            for s in self.exporter.get_finished_spans()
            if s.context is not None and f"{s.context.trace_id:032x}" == trace_id
        ]

    def xadd(self, *fields: str) -> str:
        """`redis-cli XADD <intake> * FIELD VALUE...`, as a poster types it."""
        cli = shutil.which("redis-cli")
        if cli is None:
            pytest.skip("redis-cli is not installed")
        out = subprocess.run(
            [cli, "-u", self.redis_url, "XADD", self.names.intake, "*", *fields],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()


def _tracer(exporter: InMemorySpanExporter, service: str) -> Tracer:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracer(provider)


@contextlib.asynccontextmanager
async def _swarm(redis_url: str, names: Names, **dispatcher: object) -> AsyncIterator[Swarm]:
    """Dispatcher, one deepseek worker and the collector in this process, each with its
    own tracer, all exporting to one in-memory exporter."""
    exporter = InMemorySpanExporter()
    sim = Simulator(SimulatorConfig(seed=5))
    await sim.start()
    stop = asyncio.Event()

    def swarm(name: str) -> SwarmSettings:
        return SwarmSettings(
            REDIS_URL=redis_url, SWARM_NAMESPACE=names.namespace, METRICS_PORT=0, CONSUMER_NAME=name
        )

    bus = BusSettings(block_ms=200, heartbeat_interval_s=0.3, heartbeat_ttl_s=1.5)
    vendors = VendorSettings(SWARM_SIMULATOR_URL=sim.base_url)
    services = [
        run_dispatcher(
            stop,
            swarm("dispatcher-t"),
            bus,
            DispatcherSettings(fleet_refresh_s=0.1, **dispatcher),  # type: ignore[arg-type]
            vendors,
            tracer=_tracer(exporter, "swarmbus-dispatcher"),
        ),
        run_worker(
            stop,
            swarm("worker-deepseek-t"),
            bus,
            WorkerSettings(vendor="deepseek"),
            vendors,
            tracer=_tracer(exporter, "swarmbus-worker-deepseek"),
        ),
        run_collector(
            stop,
            swarm("collector-t"),
            bus,
            CollectorSettings(export_path=""),
            tracer=_tracer(exporter, "swarmbus-collector"),
        ),
    ]
    tasks = [asyncio.create_task(s) for s in services]
    try:
        yield Swarm(redis_url, names, exporter)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        await sim.stop()


async def _finding(redis: Redis, names: Names, task_id: str) -> Finding:
    async def stored() -> Finding | None:
        view = await task_view(redis, names, task_id)
        return view.findings[0] if view is not None and view.findings else None

    return await eventually(stored, timeout=30, what=f"the finding of {task_id}")


def _one(spans: list[ReadableSpan], match: Callable[[ReadableSpan], bool]) -> ReadableSpan:
    found = [s for s in spans if match(s)]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def _id(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.span_id:016x}"


def _parent(span: ReadableSpan) -> str | None:
    return None if span.parent is None else f"{span.parent.span_id:016x}"


def _service(span: ReadableSpan) -> object:
    return span.resource.attributes.get("service.name")


async def test_a_task_posted_with_redis_cli_is_one_trace_across_every_hop(
    redis_url: str, redis: Redis, names: Names
) -> None:
    async with _swarm(redis_url, names) as swarm:
        entry = swarm.xadd(
            "task_id",
            "task-traced",
            "prompt",
            "Summarise RFC 9110 section 9.",
            "complexity",
            "simple",
            "headers",
            json.dumps({"traceparent": TRACEPARENT, "tracestate": "congo=t61rcWkgMzE"}),
        )
        finding = await _finding(redis, names, "task-traced")

        async def all_spans() -> list[ReadableSpan] | None:
            spans = swarm.spans(CALLER_TRACE)
            return spans if any(s.name == "swarm.store" for s in spans) else None

        spans = await eventually(all_spans, timeout=10, what="the collector's span")

    assert finding.status == "ok" and finding.vendor == "deepseek"
    intake = _one(spans, lambda s: s.name == "swarm.intake")
    route = _one(spans, lambda s: s.name == "swarm.route")
    work = _one(spans, lambda s: s.name == "swarm.task")
    call = _one(spans, lambda s: s.name.startswith("chat "))
    store = _one(spans, lambda s: s.name == "swarm.store")
    assert len(spans) == 5, [s.name for s in spans]

    # One tree under the poster's span: intake -> route -> task -> (vendor call, store).
    assert _parent(intake) == CALLER_SPAN and intake.parent is not None
    assert intake.parent.is_remote
    assert _parent(route) == _id(intake)
    assert _parent(work) == _id(route) and work.parent is not None and work.parent.is_remote
    assert _parent(call) == _id(work)
    assert _parent(store) == _id(work)
    assert [_service(s) for s in (intake, route, work, call, store)] == [
        "swarmbus-dispatcher",
        "swarmbus-dispatcher",
        "swarmbus-worker-deepseek",
        "swarmbus-worker-deepseek",
        "swarmbus-collector",
    ]
    assert intake.kind == SpanKind.CONSUMER and call.kind == SpanKind.CLIENT
    assert intake.attributes is not None
    assert intake.attributes["messaging.message.id"] == entry
    assert all(s.attributes and s.attributes["swarm.task_id"] == "task-traced" for s in spans)
    assert all(s.status.status_code != StatusCode.ERROR for s in spans)

    # The vendor call: GenAI semantic conventions, the finding's own figures.
    attrs = call.attributes
    assert attrs is not None
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "deepseek"
    assert attrs["gen_ai.request.model"] == "deepseek-flash"
    assert attrs["gen_ai.response.model"] == finding.model
    assert call.name == f"chat {attrs['gen_ai.request.model']}"
    assert attrs["gen_ai.usage.output_tokens"] == finding.output_tokens > 0
    assert attrs["gen_ai.usage.input_tokens"] == (
        finding.input_tokens + finding.cache_read_tokens + finding.cache_write_tokens
    )
    assert route.attributes is not None and route.attributes["swarm.vendor"] == "deepseek"

    # The finding carries the trace on: same trace id and tracestate, the worker's span.
    carried = trace_of(finding.headers)
    assert carried is not None
    assert (carried.trace_id, carried.span_id) == (CALLER_TRACE, _id(work))
    assert carried.state == "congo=t61rcWkgMzE"


async def test_without_a_traceparent_the_dispatcher_starts_the_trace(
    redis_url: str, redis: Redis, names: Names
) -> None:
    async with _swarm(redis_url, names) as swarm:
        swarm.xadd("task_id", "task-untraced", "prompt", "Name a prime.", "complexity", "simple")
        finding = await _finding(redis, names, "task-untraced")
        carried = trace_of(finding.headers)
        assert carried is not None, finding.headers
        assert finding.schema_version == "1.1"

        async def all_spans() -> list[ReadableSpan] | None:
            spans = swarm.spans(carried.trace_id)
            return spans if len(spans) >= 5 else None

        spans = await eventually(all_spans, timeout=10, what="five spans of the new trace")

    intake = _one(spans, lambda s: s.name == "swarm.intake")
    assert intake.parent is None  # the root: a new trace
    work = _one(spans, lambda s: s.name == "swarm.task")
    assert carried.span_id == _id(work)
    assert {s.name for s in spans} == {
        "swarm.intake",
        "swarm.route",
        "swarm.task",
        "chat deepseek-flash",
        "swarm.store",
    }


async def test_trace_start_off_keeps_an_untraced_task_readable_by_1_0_workers(
    redis_url: str, redis: Redis, names: Names
) -> None:
    async with _swarm(redis_url, names, SWARM_TRACE_START=False) as swarm:
        swarm.xadd("task_id", "task-plain", "prompt", "Name a prime.", "complexity", "simple")
        finding = await _finding(redis, names, "task-plain")
    assert finding.headers == {}
    routed = [
        fields
        for _, fields in await redis.xrange(names.vendor_tasks("deepseek", "normal"))
        if text(fields[b"task_id"]) == "task-plain"
    ]
    assert len(routed) == 1
    assert routed[0][b"schema_version"] == b"1" and b"headers" not in routed[0]
    assert decode(Task, routed[0]).headers == {}


async def test_an_invalid_traceparent_is_replaced_not_rejected(
    redis_url: str, redis: Redis, names: Names
) -> None:
    async with _swarm(redis_url, names) as swarm:
        bad = {"traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"}
        swarm.xadd(
            "task_id",
            "task-bad-trace",
            "prompt",
            "Name a prime.",
            "complexity",
            "simple",
            "headers",
            json.dumps({**bad, "tracestate": "congo=x", "x-team": "search"}),
        )
        finding = await _finding(redis, names, "task-bad-trace")
    carried = trace_of(finding.headers)
    assert finding.status == "ok"
    assert carried is not None and carried.trace_id != "0" * 32
    # W3C: a tracestate beside an invalid traceparent is dropped; other headers are kept.
    assert "tracestate" not in finding.headers
    assert finding.headers["x-team"] == "search"


class OtlpReceiver:
    """An OTLP/HTTP trace receiver on loopback: what a collector (Jaeger, Tempo, the
    OpenTelemetry Collector) is to a deployed swarm. Keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    attrs = {a.key: a.value.string_value for a in resource.resource.attributes}
                    for scope in resource.scope_spans:
                        for span in scope.spans:
                            receiver.spans.append(
                                {
                                    "service": attrs.get("service.name"),
                                    "name": span.name,
                                    "trace_id": span.trace_id.hex(),
                                    "span_id": span.span_id.hex(),
                                    "parent": span.parent_span_id.hex(),
                                }
                            )
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpReceiver:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.timeout(120)
async def test_every_service_process_exports_its_spans_over_otlp_and_logs_the_trace(
    tmp_path: Path,
) -> None:
    """As deployed: each service a process with OTEL_EXPORTER_OTLP_ENDPOINT set, the
    README's redis-cli line posted as printed, the spans reaching a receiver over HTTP,
    and every log line of the task naming its trace."""
    logs = tmp_path / "logs"
    line = readme_line(r"^redis-cli XADD swarm:tasks .*traceparent")
    with OtlpReceiver() as otlp:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        async with typed_fleet(logs, fleet_env=env) as fleet:
            _, out = await fleet.bash(line)
            [task_id] = out.split()
            await _finding(fleet.redis, fleet.names, task_id)

            def traced() -> list[dict[str, Any]]:
                return [s for s in otlp.spans if s["trace_id"] == CALLER_TRACE]

            async def five() -> list[dict[str, Any]] | None:
                return traced() if len(traced()) >= 5 else None

            await eventually(five, timeout=20, what="five spans at the OTLP receiver")

    by_name = {s["name"]: s for s in traced()}
    assert set(by_name) == {
        "swarm.intake",
        "swarm.route",
        "swarm.task",
        "chat deepseek-flash",
        "swarm.store",
    }
    assert by_name["swarm.intake"]["parent"] == CALLER_SPAN
    assert by_name["swarm.store"]["parent"] == by_name["swarm.task"]["span_id"]
    assert {s["service"] for s in traced()} == {
        "swarmbus-dispatcher",
        "swarmbus-worker-deepseek",
        "swarmbus-collector",
    }
    # Every log line about the task, in every service, names its trace.
    lines: dict[str, int] = {}
    for log in logs.glob("*.log"):
        for raw in log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(raw)
                if record.get("task_id") == task_id:
                    assert record.get("trace_id") == CALLER_TRACE, (log.name, record)
                    lines[log.stem] = lines.get(log.stem, 0) + 1
    assert set(lines) == {"dispatcher", "worker-deepseek-1", "collector"}, lines
