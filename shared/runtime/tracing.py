"""Spans for one service process.

With an OTLP endpoint configured (`OTEL_EXPORTER_OTLP_ENDPOINT`) every span is exported
through OpenTelemetry's SDK. Without one, spans are only fresh span ids: the trace context
still travels from hop to hop in `headers` and every log line of a task still names its
trace, at the cost of one random number per hop.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import structlog

from shared.protocol.tracecontext import TraceContext
from shared.runtime.logging import scrub_text

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = structlog.get_logger("swarm.tracing")

Kind = Literal["internal", "consumer", "producer", "client", "server"]
Attr = str | bool | int | float | tuple[str, ...]
INSTRUMENTATION = "swarmbus"


@dataclass(slots=True)
class Span:
    """A span in progress: its context names it as the parent of the next hop."""

    context: TraceContext
    _otel: Any = None  # None when nothing is exported: then attributes are not kept
    error: str | None = None

    def set(self, attributes: Mapping[str, Attr | None]) -> None:
        """Attributes to export; None values are left out."""
        if self._otel is not None:
            self._otel.set_attributes({k: v for k, v in attributes.items() if v is not None})

    def fail(self, error_type: str, description: str = "") -> None:
        """Mark the span failed: `error.type` as the semantic conventions name it."""
        self.error = error_type
        if self._otel is not None:
            from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415

            self._otel.set_attribute("error.type", error_type)
            self._otel.set_status(Status(StatusCode.ERROR, scrub_text(description)[:512]))


class Tracer:
    """Starts spans under an explicit parent (a message's trace context, never an ambient
    one: one process handles hundreds of tasks at once)."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer(INSTRUMENTATION) if provider is not None else None

    @property
    def exporting(self) -> bool:
        """False: spans are only ids, so a span nothing is handed on from can be skipped."""
        return self._tracer is not None

    @contextmanager
    def span(
        self,
        name: str,
        parent: TraceContext | None,
        *,
        kind: Kind = "internal",
        attributes: Mapping[str, Attr | None] | None = None,
    ) -> Iterator[Span]:
        """A span named `name`, child of `parent` (a new trace's root when None). An
        exception leaving the block marks it failed with the exception's type."""
        if self._tracer is None:
            yield Span(parent.child() if parent else TraceContext.new())
            return
        attrs = {k: v for k, v in (attributes or {}).items() if v is not None}
        otel = self._tracer.start_span(
            name, context=_otel_parent(parent), kind=_otel_kind(kind), attributes=attrs
        )
        ctx = otel.get_span_context()
        state = parent.state if parent else ""
        span = Span(
            TraceContext(
                f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}", int(ctx.trace_flags), state
            ),
            otel,
        )
        try:
            yield span
        except BaseException as exc:
            if span.error is None:
                span.fail(type(exc).__name__, str(exc))
            raise
        finally:
            otel.end()

    @contextmanager
    def consume(
        self,
        name: str,
        parent: TraceContext | None,
        *,
        stream: str,
        entry_id: str,
        attributes: Mapping[str, Attr | None],
    ) -> Iterator[Span]:
        """The consumer span of one message read from `stream`, child of the trace the
        message carried; every log line from here on names that trace (an untraced
        message's lines name none: its span's trace is in no other service's lines)."""
        messaging: dict[str, Attr | None] = {
            "messaging.system": "redis",
            "messaging.destination.name": stream,
            "messaging.message.id": entry_id,
        }
        with self.span(name, parent, kind="consumer", attributes={**messaging, **attributes}) as s:
            if parent is not None:
                structlog.contextvars.bind_contextvars(trace_id=s.context.trace_id)
            yield s

    def shutdown(self) -> None:
        """Export what is still buffered (a service's last spans), then stop."""
        if self._provider is not None:
            self._provider.shutdown()


def build_tracer(service: str, endpoint: str | None, service_name: str | None = None) -> Tracer:
    """The service's tracer: exporting over OTLP/HTTP to `endpoint` when one is given."""
    if not endpoint:
        return Tracer()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    resource = Resource.create({"service.name": service_name or f"swarmbus-{service}"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    log.info("tracing.exporting", endpoint=scrub_text(endpoint))
    return Tracer(provider)


def _otel_parent(parent: TraceContext | None) -> Any:
    from opentelemetry import trace  # noqa: PLC0415
    from opentelemetry.context import Context  # noqa: PLC0415

    if parent is None:
        return Context()  # a new trace, whatever is current
    state = trace.TraceState.from_header([parent.state]) if parent.state else None
    remote = trace.SpanContext(
        int(parent.trace_id, 16),
        int(parent.span_id, 16),
        is_remote=True,
        trace_flags=trace.TraceFlags(parent.flags),
        trace_state=state,
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(remote))


def _otel_kind(kind: Kind) -> Any:
    from opentelemetry.trace import SpanKind  # noqa: PLC0415

    return SpanKind[kind.upper()]
