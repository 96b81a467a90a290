"""The swarm's messages: pure data, validated, versioned.

Every model is frozen and forbids unknown fields, so a typo in a posted task
(`complexty=simple`) is rejected with its name instead of being ignored; only a message of
a newer minor version has the fields this reader does not know dropped (`Message`,
docs/protocol.md section 10). Field names
keep the original swarm formats (task_id, task_type, prompt, context, parent_shard,
urgency, timestamp; finding_id ... tokens_used; query_id ... max_response_tokens) and add
what a real system needs: token breakdown, cost, latency, attempts, status.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

# `MAJOR.MINOR` (docs/protocol.md section 10). A reader takes any minor of its major: a
# higher minor's fields it does not know are dropped; a message of another major is refused.
SCHEMA_MAJOR = 1
SCHEMA_MINOR = 2
SCHEMA_VERSION = f"{SCHEMA_MAJOR}.{SCHEMA_MINOR}"

# Known vendors. The protocol accepts any well-formed vendor name (a third party can run
# its own worker); the dispatcher decides which names it can route to.
KNOWN_VENDORS = ("claude", "gemini", "openai", "deepseek", "codex", "openai-compatible")


class Complexity(StrEnum):
    SIMPLE = "simple"
    MEDIUM = "medium"
    COMPLEX = "complex"
    ULTRA_CONTEXT = "ultra_context"
    STRATEGIC = "strategic"


class Urgency(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    CRITICAL = "critical"


class Status(StrEnum):
    OK = "ok"
    FAILED = "failed"
    CANCELLED = "cancelled"  # its poster cancelled it (`swarm cancel`, or XADD swarm:cancel)


def _lower(v: object) -> object:
    return v.strip().lower() if isinstance(v, str) else v


_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")


def _name(v: str) -> str:
    if not _NAME_RE.fullmatch(v):
        raise ValueError("must be 1-64 lower-case letters, digits, '_', '.' or '-'")
    return v


def _not_blank(v: str) -> str:
    if not v.strip():
        raise ValueError("must not be empty")
    return v


def _utc(v: datetime) -> datetime:
    return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)


_VERSION_RE = re.compile(r"^([0-9]{1,4})(?:\.([0-9]{1,4}))?$")


def _parse_version(v: object) -> tuple[int, int] | None:
    """`1`, `"1"`, `"1.1"` (and JSON `1.0`) -> (major, minor); None if not a version."""
    if isinstance(v, bool):
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, int):
        return (v, 0) if 0 <= v <= 9999 else None
    if isinstance(v, str) and (m := _VERSION_RE.fullmatch(v.strip())):
        return int(m[1]), int(m[2] or 0)
    return None


def _supported_version(v: object) -> str:
    parsed = _parse_version(v)
    if parsed is None:
        raise ValueError(
            f'must be MAJOR or MAJOR.MINOR, e.g. 1 or "{SCHEMA_VERSION}" (a string in JSON)'
        )
    major, minor = parsed
    if major != SCHEMA_MAJOR:
        raise ValueError(
            f"unsupported version {major}.{minor}: major {major} is not read here; this "
            f"swarm reads {SCHEMA_MAJOR}.x (it knows 1.0 to {SCHEMA_VERSION})"
        )
    return f"{major}.{minor}"


def _newer_minor(v: object) -> bool:
    """A version of this reader's major with a higher minor than this reader's."""
    parsed = _parse_version(v)
    return parsed is not None and parsed[0] == SCHEMA_MAJOR and parsed[1] > SCHEMA_MINOR


_HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


def _headers(v: object) -> object:
    """At most 32 headers, each named like an HTTP header (`traceparent`, `x-team`)."""
    if isinstance(v, dict):
        if len(v) > 32:
            raise ValueError(f"has {len(v):,} headers; at most 32 are allowed")
        for key in v:
            if not isinstance(key, str) or not _HEADER_NAME_RE.fullmatch(key):
                raise ValueError(
                    f"header name {str(key)[:64]!r} must be 1-128 letters, digits, "
                    "'_', '.' or '-', first a letter or digit"
                )
    return v


def _at_most(limit: int) -> BeforeValidator:
    """Refuse a list longer than `limit` before its items are validated: a poster's list of
    400,000 bad items would otherwise cost seconds of CPU and a reason of megabytes."""

    def check(v: object) -> object:
        if isinstance(v, list | tuple) and len(v) > limit:
            raise ValueError(f"has {len(v):,} items; at most {limit} are allowed")
        return v

    return BeforeValidator(check)


def _now() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


Identifier = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=r"^\S+$")
]
Name = Annotated[str, BeforeValidator(_lower), AfterValidator(_name)]
Text = Annotated[str, AfterValidator(_not_blank)]
Timestamp = Annotated[datetime, AfterValidator(_utc)]
Tokens = Annotated[int, Field(ge=0)]
Usd = Annotated[float, Field(ge=0)]
Version = Annotated[str, BeforeValidator(_supported_version)]
# Extensions (W3C `traceparent`/`tracestate`, ...): carried from a task to its finding,
# never read for routing. New in 1.1.
Headers = Annotated[dict[str, Annotated[str, Field(max_length=4096)]], BeforeValidator(_headers)]


class Message(BaseModel):
    """Base: frozen, no unknown fields, a schema version every message carries.

    A message of a higher minor of this major has the fields this reader does not know
    dropped (in nested messages too); any other unknown field is rejected by name. Once
    read, `schema_version` is the lowest version that has every field the message sets
    ("1.0" unless it sets a field of a later minor, `MINOR_FIELDS`), and that is what is
    written: `1`, as 1.0 readers expect, or e.g. "1.1"."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", use_enum_values=False, allow_inf_nan=False
    )
    # Fields added after 1.0 -> the minor that added them; written only when set.
    MINOR_FIELDS: ClassVar[dict[str, int]] = {}

    schema_version: Version = "1.0"

    @model_validator(mode="before")
    @classmethod
    def _drop_newer_fields(cls, data: Any, info: ValidationInfo) -> Any:
        """Of a newer minor (this message's, or the enclosing one's when decoded with a
        context), keep only the fields this reader knows."""
        if not isinstance(data, dict):
            return data
        context = info.context if isinstance(info.context, dict) else None
        newer = _newer_minor(data.get("schema_version")) or bool(
            context and context.get("newer_minor")
        )
        if not newer:
            return data
        if context is not None:
            context["newer_minor"] = True  # nested messages of this one are read alike
        return {k: v for k, v in data.items() if k in cls.model_fields}

    def __hash__(self) -> int:
        # Frozen messages are hashable although `headers` is a dict: hash what is written.
        return hash(json.dumps(self.model_dump(mode="json"), sort_keys=True))

    @model_validator(mode="after")
    def _lowest_version(self) -> Self:
        object.__setattr__(self, "schema_version", self.wire_version())
        return self

    def wire_version(self) -> str:
        """The lowest version with every field this message sets."""
        minor = max((m for f, m in self.MINOR_FIELDS.items() if getattr(self, f)), default=0)
        return f"{SCHEMA_MAJOR}.{minor}"

    @model_serializer(mode="wrap")
    def _write_version(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        for name in self.MINOR_FIELDS:
            if name in out and not getattr(self, name):
                del out[name]  # unset: left out, so a 1.0 reader can read the message
        if "schema_version" in out:
            version = self.wire_version()
            # 1.0 is written `1`, which readers of before the minor (an integer) accept.
            out["schema_version"] = SCHEMA_MAJOR if version.endswith(".0") else version
        return out


class AttemptRecord(Message):
    """One failed try of a task on one vendor, kept so fallback never repeats it blindly."""

    vendor: Name
    model: str = ""
    error: str
    retryable: bool = False
    at: Timestamp = Field(default_factory=_now)


class Task(Message):
    """A unit of work posted to the intake stream and routed to one vendor's workers."""

    task_id: Identifier = Field(default_factory=lambda: new_id("task"))
    task_type: Name = "general"
    prompt: Text = Field(max_length=4_000_000)
    context: str = ""
    parent_shard: Identifier | None = None
    urgency: Annotated[Urgency, BeforeValidator(_lower)] = Urgency.NORMAL
    complexity: Annotated[Complexity | None, BeforeValidator(_lower)] = None
    vendor: Name | None = None
    model: Identifier | None = None
    route_model: Identifier | None = None  # set by the dispatcher; not a pin
    # Set by the dispatcher: the intake entry the task came in as (its first, if rerouted).
    intake_id: Identifier | None = None
    budget_usd: Annotated[float, Field(gt=0)] | None = None
    max_output_tokens: Annotated[int, Field(gt=0, le=1_000_000)] | None = None
    run_id: Identifier | None = None
    attempt: Annotated[int, Field(ge=1)] = 1
    excluded_vendors: Annotated[tuple[Name, ...], _at_most(32)] = ()
    history: Annotated[tuple[AttemptRecord, ...], _at_most(64)] = ()
    headers: Headers = {}  # pydantic copies a default: no instance shares it
    timestamp: Timestamp = Field(default_factory=_now)

    MINOR_FIELDS: ClassVar[dict[str, int]] = {"headers": 1}


class Finding(Message):
    """The result of one task, published by a worker to the findings stream."""

    finding_id: Identifier = Field(default_factory=lambda: new_id("finding"))
    task_id: Identifier
    worker_id: Identifier
    vendor: Name
    model: str
    status: Annotated[Status, BeforeValidator(_lower)] = Status.OK
    error: str | None = Field(default=None, validate_default=True)
    summary: str = ""
    code: str | None = None
    sources: Annotated[tuple[str, ...], _at_most(1000)] = ()
    confidence: Annotated[float, Field(ge=0, le=1)] | None = None
    input_tokens: Tokens = 0
    output_tokens: Tokens = 0
    cache_read_tokens: Tokens = 0
    cache_write_tokens: Tokens = 0
    tokens_used: Tokens = 0
    cost_usd: Usd | None = None  # None means the model is not in the price table, never $0
    latency_ms: Annotated[float, Field(ge=0)] = 0.0
    attempt: Annotated[int, Field(ge=1)] = 1
    task_type: Name = "general"
    run_id: Identifier | None = None
    intake_id: Identifier | None = None  # the task's intake entry id, when the task had one
    headers: Headers = {}  # the task's, copied
    timestamp: Timestamp = Field(default_factory=_now)

    MINOR_FIELDS: ClassVar[dict[str, int]] = {"headers": 1}

    @field_validator("error")
    @classmethod
    def _failed_says_why(cls, v: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("status") is Status.FAILED and not (v and v.strip()):
            raise ValueError("is required when status is failed: say why the task failed")
        return v

    @model_validator(mode="after")
    def _fill_total(self) -> Self:
        if self.tokens_used == 0 and (self.input_tokens or self.output_tokens):
            # tokens_used is kept for the original format: input + output.
            object.__setattr__(self, "tokens_used", self.input_tokens + self.output_tokens)
        return self


class Cancel(Message):
    """A request to cancel a task, posted to the cancel stream by anyone (`swarm cancel`).

    A task still queued is never sent to a vendor; one in flight has its vendor call closed.
    Either way its finding has status `cancelled`. A finished task is left as it is."""

    task_id: Identifier
    reason: str = Field(default="", max_length=1000)
    timestamp: Timestamp = Field(default_factory=_now)


class ContextQuery(Message):
    """A worker asks a mega-shard for context; the reply goes to `reply_to`."""

    query_id: Identifier = Field(default_factory=lambda: new_id("query"))
    requester_worker_id: Identifier
    target_shard: Identifier
    query: Text
    max_response_tokens: Annotated[int, Field(gt=0, le=1_000_000)] = 2048
    reply_to: Identifier
    task_id: Identifier | None = None
    deadline: Timestamp | None = None
    headers: Headers = {}  # the asking task's trace context
    timestamp: Timestamp = Field(default_factory=_now)

    MINOR_FIELDS: ClassVar[dict[str, int]] = {"headers": 2}


class ContextReply(Message):
    """A mega-shard's answer to one ContextQuery."""

    query_id: Identifier
    shard_id: Identifier
    vendor: Name
    model: str
    status: Annotated[Status, BeforeValidator(_lower)] = Status.OK
    error: str | None = None
    answer: str = ""
    sources: Annotated[tuple[str, ...], _at_most(1000)] = ()
    context_tokens_searched: Tokens = 0
    input_tokens: Tokens = 0
    output_tokens: Tokens = 0
    cache_read_tokens: Tokens = 0
    cache_write_tokens: Tokens = 0
    cost_usd: Usd | None = None
    latency_ms: Annotated[float, Field(ge=0)] = 0.0
    timestamp: Timestamp = Field(default_factory=_now)


class Rejection(Message):
    """Why an entry was taken off a stream without being handled, and what it held.

    Written to the rejected-tasks stream (bad intake) or the dead-letter stream (too
    many deliveries, handler gave up). On the wire the original fields travel byte-exact
    as `orig:<name>` fields beside these (see `codec.encode_rejection`); `original` holds
    them decoded for reading, with undecodable bytes escaped.

    A record of an entry refused for its size keeps only a bounded excerpt of it
    (`excerpt:<name>`, read into `excerpt`), its size and its SHA-256: it cannot be replayed.
    """

    reason: str
    field: str = ""
    source_stream: str
    source_id: str
    deliveries: Annotated[int, Field(ge=0)] = 1
    consumer: str = ""
    group: str = ""
    original: dict[str, str] = Field(default_factory=dict)
    original_bytes: Annotated[int, Field(ge=0)] | None = None  # set when only an excerpt is kept
    original_sha256: str | None = None
    excerpt: dict[str, str] = Field(default_factory=dict)
    timestamp: Timestamp = Field(default_factory=_now)

    @property
    def excerpted(self) -> bool:
        """Only an excerpt of the entry was kept: there is nothing to replay."""
        return self.original_sha256 is not None
