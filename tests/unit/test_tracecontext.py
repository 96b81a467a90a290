"""W3C trace context parsing and propagation (docs/protocol.md section 10.1), and the
tracer without an exporter: fresh span ids under the same trace."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from shared.protocol import Task
from shared.protocol.tracecontext import TraceContext, child_of, trace_of, with_trace
from shared.runtime.logging import register_secret
from shared.runtime.settings import SwarmSettings
from shared.runtime.tracing import Tracer

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_valid_traceparent_is_read() -> None:
    ctx = TraceContext.parse(VALID, "congo=t61rcWkgMzE")
    assert ctx == TraceContext(
        "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", 1, "congo=t61rcWkgMzE"
    )
    assert ctx.sampled and ctx.traceparent == VALID
    assert ctx.headers() == {"traceparent": VALID, "tracestate": "congo=t61rcWkgMzE"}
    unsampled = TraceContext.parse(VALID[:-2] + "00")
    assert unsampled is not None and not unsampled.sampled


@pytest.mark.parametrize(
    "value",
    [
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # no flags
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero parent id
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # uppercase
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # version ff
        VALID + "-extra",  # version 00 has exactly four fields
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # short trace id
    ],
)
def test_an_invalid_traceparent_is_ignored(value: str) -> None:
    assert TraceContext.parse(value) is None
    assert trace_of({"traceparent": value}) is None


def test_a_later_version_may_append_fields() -> None:
    ctx = TraceContext.parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what")
    assert ctx is not None and ctx.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert ctx.traceparent == VALID  # written as the version this writer knows


def test_with_trace_replaces_only_the_trace_context() -> None:
    posted = {"traceparent": "garbage", "tracestate": "congo=x", "x-team": "search"}
    new = TraceContext.new()
    assert with_trace(posted, new) == {"traceparent": new.traceparent, "x-team": "search"}
    assert trace_of({}) is None


def test_child_of_names_the_span_as_the_next_hops_parent() -> None:
    task = Task(task_id="t", prompt="p", headers={"traceparent": VALID, "x-team": "search"})
    span = TraceContext.new()
    child = child_of(task, span)
    assert child.headers == {"traceparent": span.traceparent, "x-team": "search"}
    assert trace_of(child.headers) == span and child.task_id == "t"
    assert task.headers["traceparent"] == VALID  # the message itself is not changed


def test_without_an_exporter_each_span_is_a_fresh_child_of_its_parent() -> None:
    tracer = Tracer()
    parent = TraceContext.parse(VALID, "congo=1")
    assert parent is not None
    with tracer.span("swarm.task", parent) as a, tracer.span("swarm.task", parent) as b:
        pass
    assert a.context.trace_id == b.context.trace_id == parent.trace_id
    assert len({a.context.span_id, b.context.span_id, parent.span_id}) == 3
    assert a.context.state == "congo=1"
    with tracer.span("swarm.intake", None) as root:
        pass
    assert root.context.trace_id != parent.trace_id and len(root.context.trace_id) == 32


def test_an_exception_marks_the_exported_span_failed_without_secrets() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    register_secret("sk-live-secret-value")
    with pytest.raises(RuntimeError), Tracer(provider).span("chat m", None, kind="client"):
        raise RuntimeError("vendor said no to key sk-live-secret-value")
    [span] = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None and span.attributes["error.type"] == "RuntimeError"
    assert "sk-live-secret-value" not in (span.status.description or "")
    assert "***" in (span.status.description or "")


def test_the_traces_endpoint_follows_the_otel_variables() -> None:
    def endpoint(**env: object) -> str | None:
        return SwarmSettings(_env_file=None, **env).traces_endpoint  # type: ignore[call-arg]

    assert endpoint() is None
    base = "http://otel:4318/"
    assert endpoint(OTEL_EXPORTER_OTLP_ENDPOINT=base) == "http://otel:4318/v1/traces"
    own = "http://otel:4318/custom"
    assert endpoint(OTEL_EXPORTER_OTLP_ENDPOINT=base, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=own) == own
    assert endpoint(OTEL_EXPORTER_OTLP_ENDPOINT=base, OTEL_SDK_DISABLED=True) is None
