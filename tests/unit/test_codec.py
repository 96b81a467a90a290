"""The wire codec: stream entries (flat or `data` form) <-> protocol messages."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel, ValidationError

from shared.protocol import (
    AttemptRecord,
    Complexity,
    ContextQuery,
    ContextReply,
    DecodeError,
    FieldProblem,
    Finding,
    ProtocolError,
    Rejection,
    Status,
    Task,
    Urgency,
    decode,
    decode_json,
    decode_rejection,
    encode,
    encode_data,
    encode_rejection,
)
from shared.protocol.codec import EXCERPT_BYTES, entry_digest, entry_size

AT = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
LATER = AT + timedelta(minutes=5)

FINDING_REQUIRED = {"task_id": "task_1", "worker_id": "w-1", "vendor": "claude", "model": "m"}


# -- sample messages -------------------------------------------------------------------------


def _attempts() -> tuple[AttemptRecord, ...]:
    return (
        AttemptRecord(
            vendor="gemini", model="gemini-2.5-pro", error="429 rate limited", retryable=True, at=AT
        ),
        AttemptRecord(vendor="openai", error="context too long", retryable=False, at=LATER),
    )


def _full_task() -> Task:
    return Task(
        task_id="task_full",
        task_type="research",
        prompt='Research supplier terms\nsecond line, quotes " and unicode: café ✓',
        context='{"looks": "like json but is plain text"}',
        parent_shard="shard-7",
        urgency=Urgency.HIGH,
        complexity=Complexity.ULTRA_CONTEXT,
        vendor="claude",
        model="claude-sonnet-4",
        budget_usd=0.1 + 0.2,  # a float whose repr is long: must survive exactly
        max_output_tokens=4096,
        run_id="run-1",
        attempt=3,
        excluded_vendors=("gemini", "openai"),
        history=_attempts(),
        timestamp=AT,
    )


def _ok_finding() -> Finding:
    return Finding(
        finding_id="finding_ok",
        task_id="task_full",
        worker_id="worker-claude-1",
        vendor="claude",
        model="claude-sonnet-4",
        summary="Net-30 terms, 2% early payment discount.",
        code="print('hi')\n",
        sources=("https://example.com/terms", "contract.pdf#page=3", "naïve ✓"),
        confidence=0.85,
        input_tokens=1200,
        output_tokens=300,
        cache_read_tokens=1000,
        cache_write_tokens=50,
        cost_usd=1e-7,
        latency_ms=1234.5,
        attempt=2,
        task_type="research",
        run_id="run-1",
        timestamp=AT,
    )


def _failed_finding() -> Finding:
    return Finding(
        finding_id="finding_failed",
        task_id="task_full",
        worker_id="worker-gemini-1",
        vendor="gemini",
        model="gemini-2.5-pro",
        status=Status.FAILED,
        error="upstream 503",
        timestamp=AT,
    )


def _query() -> ContextQuery:
    return ContextQuery(
        query_id="query_1",
        requester_worker_id="worker-claude-1",
        target_shard="shard-7",
        query="Which clauses mention penalties?",
        max_response_tokens=512,
        reply_to="swarm:replies:worker-claude-1",
        task_id="task_full",
        deadline=LATER,
        timestamp=AT,
    )


def _reply() -> ContextReply:
    return ContextReply(
        query_id="query_1",
        shard_id="shard-7",
        vendor="gemini",
        model="gemini-2.5-pro",
        answer="Clauses 4.2 and 9.1.",
        sources=("clause-4.2", "clause-9.1"),
        context_tokens_searched=900_000,
        input_tokens=900_100,
        output_tokens=40,
        cache_read_tokens=800_000,
        cost_usd=0.42,
        latency_ms=8000.0,
        timestamp=AT,
    )


def _rejection() -> Rejection:
    return Rejection(
        reason="prompt: must not be empty",
        field="prompt",
        source_stream="swarm:tasks",
        source_id="1715000000000-0",
        deliveries=3,
        consumer="dispatcher-1",
        original={"prompt": "   ", "complexity": "simple", "note": 'a "quoted"\nvalue ü'},
        timestamp=AT,
    )


MESSAGES = [
    pytest.param(_full_task(), id="task-full"),
    pytest.param(Task(prompt="minimal", timestamp=AT), id="task-minimal"),
    pytest.param(_ok_finding(), id="finding-ok"),
    pytest.param(_failed_finding(), id="finding-failed"),
    pytest.param(_query(), id="context-query"),
    pytest.param(_reply(), id="context-reply"),
    pytest.param(_rejection(), id="rejection"),
    pytest.param(_attempts()[0], id="attempt-record"),
]


def _problems(model: type[BaseModel], fields: dict) -> list[FieldProblem]:
    with pytest.raises(DecodeError) as info:
        decode(model, fields)
    assert info.value.problems, "a DecodeError must say what is wrong"
    return info.value.problems


def _assert_problem(
    model: type[BaseModel], fields: dict, field: str, words: tuple[str, ...]
) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode(model, fields)
    err = info.value
    assert err.field == field, err.problems
    problem = next(p for p in err.problems if p.field == field)
    for word in words:
        assert word.lower() in problem.problem.lower(), problem
    # The exception text (what logs and rejection records show) names the field too.
    if field:
        assert f"{field}: " in str(err)
    return err


# -- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("message", MESSAGES)
def test_flat_encoding_round_trips(message: BaseModel) -> None:
    assert decode(type(message), encode(message)) == message


@pytest.mark.parametrize("message", MESSAGES)
def test_data_encoding_round_trips(message: BaseModel) -> None:
    assert decode(type(message), encode_data(message)) == message


@pytest.mark.parametrize("message", MESSAGES)
def test_round_trips_through_bytes_as_redis_returns_them(message: BaseModel) -> None:
    flat = {k.encode(): v.encode() for k, v in encode(message).items()}
    data = {k.encode(): v.encode() for k, v in encode_data(message).items()}
    assert decode(type(message), flat) == message
    assert decode(type(message), data) == message


@pytest.mark.parametrize("message", MESSAGES)
def test_encodings_are_redis_ready_strings(message: BaseModel) -> None:
    flat = encode(message)
    assert flat, "flat encoding must not be empty"
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in flat.items())
    assert set(flat) <= set(type(message).model_fields)

    data = encode_data(message)
    assert list(data) == ["data"]
    assert isinstance(json.loads(data["data"]), dict)


@pytest.mark.parametrize("message", MESSAGES)
def test_decode_json_reads_the_data_document(message: BaseModel) -> None:
    document = encode_data(message)["data"]
    assert decode_json(type(message), document) == message
    assert decode_json(type(message), document.encode()) == message


def test_nested_history_is_a_json_array_of_attempts_in_flat_form() -> None:
    task = _full_task()
    flat = encode(task)

    history = json.loads(flat["history"])
    assert [h["vendor"] for h in history] == ["gemini", "openai"]
    assert history[0]["retryable"] is True
    assert json.loads(flat["excluded_vendors"]) == ["gemini", "openai"]

    decoded = decode(Task, flat)
    assert decoded.history == _attempts()
    assert all(isinstance(h, AttemptRecord) for h in decoded.history)
    assert decoded.history[0].error == "429 rate limited"
    assert decoded.history[0].retryable is True
    assert decoded.history[1].at == LATER
    assert decoded.excluded_vendors == ("gemini", "openai")


@pytest.mark.parametrize("message", [_ok_finding(), _reply()], ids=["finding", "context-reply"])
def test_sources_are_a_json_array_in_flat_form(message: Finding | ContextReply) -> None:
    flat = encode(message)
    assert json.loads(flat["sources"]) == list(message.sources)
    assert decode(type(message), flat).sources == message.sources


def test_scalars_are_written_readably_in_flat_form() -> None:
    flat = encode(_full_task())
    assert flat["prompt"] == _full_task().prompt  # text as-is, not JSON-quoted
    assert flat["context"] == '{"looks": "like json but is plain text"}'
    assert flat["urgency"] == "high"
    assert flat["complexity"] == "ultra_context"
    assert flat["attempt"] == "3"
    assert flat["schema_version"] == "1"
    assert flat["timestamp"] == "2024-05-06T07:08:09.123456Z"

    record = encode(_attempts()[0])
    assert record["retryable"] == "true"


def test_text_that_looks_like_json_stays_text() -> None:
    task = decode(Task, {"prompt": '["not", "a", "list"]', "context": "{}"})
    assert task.prompt == '["not", "a", "list"]'
    assert task.context == "{}"


def test_floats_survive_both_encodings_exactly() -> None:
    task = _full_task()
    assert decode(Task, encode(task)).budget_usd == 0.1 + 0.2
    assert decode(Task, encode_data(task)).budget_usd == 0.1 + 0.2
    assert decode(Finding, encode(_ok_finding())).cost_usd == 1e-7


# -- the intake contract: flat and data forms --------------------------------------------------


def test_redis_cli_style_entry_decodes() -> None:
    # XADD swarm:tasks '*' prompt "Research supplier terms" complexity simple
    task = decode(Task, {b"prompt": b"Research supplier terms", b"complexity": b"simple"})

    assert task.prompt == "Research supplier terms"
    assert task.complexity is Complexity.SIMPLE
    assert task.urgency is Urgency.NORMAL
    assert task.attempt == 1
    assert task.task_id.startswith("task_")
    assert task.timestamp.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - task.timestamp) < timedelta(minutes=1)


def test_flat_and_data_forms_decode_to_the_same_task() -> None:
    flat = {
        "task_id": "task_42",
        "prompt": "Research supplier terms",
        "complexity": "simple",
        "urgency": "high",
        "vendor": "claude",
        "budget_usd": "0.5",
        "max_output_tokens": "2000",
        "attempt": "2",
        "excluded_vendors": '["gemini"]',
        "history": '[{"vendor": "gemini", "error": "timeout", "at": "2024-05-06T07:08:09Z"}]',
        "timestamp": "2024-05-06T07:08:09Z",
    }
    data = {
        "data": json.dumps(
            {
                "task_id": "task_42",
                "prompt": "Research supplier terms",
                "complexity": "simple",
                "urgency": "high",
                "vendor": "claude",
                "budget_usd": 0.5,
                "max_output_tokens": 2000,
                "attempt": 2,
                "excluded_vendors": ["gemini"],
                "history": [{"vendor": "gemini", "error": "timeout", "at": "2024-05-06T07:08:09Z"}],
                "timestamp": "2024-05-06T07:08:09Z",
            }
        )
    }

    from_flat = decode(Task, flat)
    from_data = decode(Task, data)

    assert from_flat == from_data
    assert from_flat.complexity is Complexity.SIMPLE
    assert from_flat.budget_usd == 0.5
    assert from_flat.max_output_tokens == 2000
    assert from_flat.history[0].error == "timeout"
    assert from_flat.history[0].at == datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"task_id": "t1", "prompt": "hello ü", "urgency": "high"}, id="str-str"),
        pytest.param(
            {b"task_id": b"t1", b"prompt": "hello ü".encode(), b"urgency": b"high"},
            id="bytes-bytes",
        ),
        pytest.param({b"task_id": "t1", b"prompt": "hello ü", b"urgency": "high"}, id="bytes-str"),
        pytest.param(
            {"task_id": b"t1", "prompt": "hello ü".encode(), "urgency": b"high"}, id="str-bytes"
        ),
        pytest.param(
            {"task_id": "t1", b"prompt": "hello ü".encode(), "urgency": b"high"}, id="mixed"
        ),
    ],
)
def test_bytes_and_str_keys_and_values_are_accepted(fields: dict) -> None:
    task = decode(Task, {**fields, "timestamp": "2024-05-06T07:08:09Z"})
    stamp = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    assert task == Task(task_id="t1", prompt="hello ü", urgency=Urgency.HIGH, timestamp=stamp)


@pytest.mark.parametrize("key", ["data", b"data"])
@pytest.mark.parametrize("value", ['{"prompt": "hello ü"}', '{"prompt": "hello ü"}'.encode()])
def test_data_form_accepts_bytes_and_str(key: str | bytes, value: str | bytes) -> None:
    assert decode(Task, {key: value}).prompt == "hello ü"


# -- normalisation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("SIMPLE", Complexity.SIMPLE),
        ("Simple", Complexity.SIMPLE),
        (" medium ", Complexity.MEDIUM),
        ("ULTRA_CONTEXT", Complexity.ULTRA_CONTEXT),
        ("Strategic", Complexity.STRATEGIC),
    ],
)
def test_complexity_is_case_insensitive(raw: str, expected: Complexity) -> None:
    assert decode(Task, {"prompt": "p", "complexity": raw}).complexity is expected
    assert decode(Task, {"data": json.dumps({"prompt": "p", "complexity": raw})}).complexity is (
        expected
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("HIGH", Urgency.HIGH), ("Critical", Urgency.CRITICAL), (" low ", Urgency.LOW)],
)
def test_urgency_is_case_insensitive(raw: str, expected: Urgency) -> None:
    assert decode(Task, {"prompt": "p", "urgency": raw}).urgency is expected


def test_vendor_names_are_lower_cased() -> None:
    task = decode(Task, {"prompt": "p", "vendor": "CLAUDE", "excluded_vendors": '["Gemini"]'})
    assert task.vendor == "claude"
    assert task.excluded_vendors == ("gemini",)


def test_tokens_used_is_input_plus_output_when_not_given() -> None:
    finding = decode(Finding, {**FINDING_REQUIRED, "input_tokens": "120", "output_tokens": "30"})
    assert finding.tokens_used == 150
    assert encode(finding)["tokens_used"] == "150"


def test_tokens_used_is_kept_when_given() -> None:
    fields = {**FINDING_REQUIRED, "input_tokens": "120", "output_tokens": "30"}
    assert decode(Finding, {**fields, "tokens_used": "999"}).tokens_used == 999


def test_tokens_used_is_zero_without_any_tokens() -> None:
    assert decode(Finding, FINDING_REQUIRED).tokens_used == 0


def test_a_failed_finding_with_an_error_decodes() -> None:
    finding = decode(Finding, {**FINDING_REQUIRED, "status": "failed", "error": "upstream 503"})
    assert finding.status is Status.FAILED
    assert finding.error == "upstream 503"


@pytest.mark.parametrize("extra", [{}, {"error": ""}], ids=["no-error", "empty-error"])
def test_a_failed_finding_without_error_is_rejected(extra: dict) -> None:
    with pytest.raises(DecodeError) as info:
        decode(Finding, {**FINDING_REQUIRED, "status": "failed", **extra})
    text = str(info.value)
    assert "failed" in text
    assert text.startswith("error: is required")


def test_a_failed_finding_without_error_cannot_be_built_either() -> None:
    with pytest.raises(ValidationError, match="is required when status is failed"):
        Finding(**FINDING_REQUIRED, status=Status.FAILED)


def test_a_failed_finding_without_error_names_the_error_field() -> None:
    with pytest.raises(DecodeError) as info:
        decode(Finding, {**FINDING_REQUIRED, "status": "failed"})
    assert info.value.field == "error"


# -- timestamps ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-05-06T07:08:09", datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
        ("2024-05-06 07:08:09.5", datetime(2024, 5, 6, 7, 8, 9, 500000, tzinfo=UTC)),
        ("2024-05-06T07:08:09Z", datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
        ("2024-05-06T09:08:09+02:00", datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
    ],
    ids=["naive", "naive-space", "zulu", "offset"],
)
def test_timestamps_are_utc_aware_after_decode(raw: str, expected: datetime) -> None:
    for fields in (
        {"prompt": "p", "timestamp": raw},
        {"data": json.dumps({"prompt": "p", "timestamp": raw})},
    ):
        stamp = decode(Task, fields).timestamp
        assert stamp.tzinfo is not None
        assert stamp.utcoffset() == timedelta(0)
        assert stamp == expected
        assert stamp.hour == 7  # converted to UTC, not merely labelled


def test_nested_and_optional_timestamps_are_utc_aware_too() -> None:
    task = decode(
        Task,
        {
            "prompt": "p",
            "history": '[{"vendor": "claude", "error": "x", "at": "2024-05-06T07:08"}]',
        },
    )
    assert task.history[0].at == datetime(2024, 5, 6, 7, 8, tzinfo=UTC)
    assert task.history[0].at.utcoffset() == timedelta(0)

    query = decode(
        ContextQuery,
        {
            "requester_worker_id": "w",
            "target_shard": "s",
            "query": "q",
            "reply_to": "r",
            "deadline": "2024-05-06T07:08:09",
        },
    )
    assert query.deadline is not None
    assert query.deadline.utcoffset() == timedelta(0)
    assert query.deadline == datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def test_naive_datetime_given_in_python_is_made_utc() -> None:
    task = Task(prompt="p", timestamp=datetime(2024, 5, 6, 7, 8, 9))
    assert task.timestamp.utcoffset() == timedelta(0)
    assert task.timestamp == datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


# -- cost: None means unpriced -------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        Finding(**FINDING_REQUIRED),
        ContextReply(query_id="q", shard_id="s", vendor="gemini", model="m"),
    ],
    ids=["finding", "context-reply"],
)
def test_unpriced_cost_stays_none_and_is_omitted(message: Finding | ContextReply) -> None:
    assert message.cost_usd is None
    flat = encode(message)
    assert "cost_usd" not in flat
    assert "cost_usd" not in json.loads(encode_data(message)["data"])
    assert decode(type(message), flat).cost_usd is None
    assert decode(type(message), encode_data(message)).cost_usd is None


def test_zero_cost_is_kept_distinct_from_unpriced() -> None:
    finding = Finding(**FINDING_REQUIRED, cost_usd=0.0)
    flat = encode(finding)
    assert flat["cost_usd"] == "0.0"
    assert decode(Finding, flat).cost_usd == 0.0
    assert decode(Finding, encode_data(finding)).cost_usd == 0.0


def test_other_none_values_are_omitted_from_flat_encoding() -> None:
    flat = encode(Task(prompt="p"))
    for name in ("complexity", "vendor", "model", "budget_usd", "max_output_tokens", "run_id"):
        assert name not in flat
    assert "error" not in encode(Finding(**FINDING_REQUIRED))


@pytest.mark.parametrize("field", ["cost_usd", "latency_ms"])
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_infinite_or_nan_numbers_are_rejected(field: str, value: float) -> None:
    # JSON has no inf/nan: accepting them would make the flat and data forms disagree.
    with pytest.raises(ValidationError, match="finite number"):
        Finding(**FINDING_REQUIRED, **{field: value})
    with pytest.raises(DecodeError) as info:
        decode(Finding, {**FINDING_REQUIRED, field: str(value)})
    assert info.value.field == field


# -- bad input ---------------------------------------------------------------------------------

BAD_INPUT = [
    # (model, fields, field named, words in the problem)
    pytest.param(Task, {"complexity": "simple"}, "prompt", ("required",), id="missing-prompt"),
    pytest.param(Task, {"prompt": ""}, "prompt", ("empty",), id="empty-prompt"),
    pytest.param(Task, {"prompt": "  \t\n "}, "prompt", ("empty",), id="blank-prompt"),
    pytest.param(
        Task,
        {"prompt": "p", "complexity": "easy"},
        "complexity",
        ("simple", "medium", "complex", "ultra_context", "strategic"),
        id="unknown-complexity",
    ),
    pytest.param(
        Task, {"prompt": "p", "urgency": "asap"}, "urgency", ("low", "critical"), id="bad-urgency"
    ),
    pytest.param(
        Task,
        {"prompt": "p", "vendor": "Bad Vendor!"},
        "vendor",
        ("lower-case", "1-64"),
        id="bad-vendor",
    ),
    pytest.param(
        Task, {"prompt": "p", "vendor": "a" * 65}, "vendor", ("1-64",), id="vendor-too-long"
    ),
    pytest.param(Task, {"prompt": "p", "vendor": ""}, "vendor", ("lower-case",), id="empty-vendor"),
    pytest.param(
        Task,
        {"prompt": "p", "budget_usd": "abc"},
        "budget_usd",
        ("valid number",),
        id="budget-not-a-number",
    ),
    pytest.param(
        Task, {"prompt": "p", "budget_usd": "0"}, "budget_usd", ("greater than 0",), id="budget-0"
    ),
    pytest.param(
        Task,
        {"prompt": "p", "attempt": "0"},
        "attempt",
        ("greater than or equal to 1",),
        id="attempt-0",
    ),
    pytest.param(
        Task, {"prompt": "p", "attempt": "two"}, "attempt", ("valid integer",), id="attempt-word"
    ),
    pytest.param(
        Task,
        {"prompt": "p", "max_output_tokens": "-1"},
        "max_output_tokens",
        ("greater than 0",),
        id="max-output-tokens-negative",
    ),
    pytest.param(
        Task,
        {"prompt": "p", "max_output_tokens": "1000001"},
        "max_output_tokens",
        ("less than or equal to 1000000",),
        id="max-output-tokens-too-big",
    ),
    pytest.param(
        Task,
        {"prompt": "p", "timestamp": "yesterday"},
        "timestamp",
        ("datetime",),
        id="bad-timestamp",
    ),
    pytest.param(
        Finding,
        {**FINDING_REQUIRED, "confidence": "1.5"},
        "confidence",
        ("less than or equal to 1",),
        id="confidence-above-1",
    ),
    pytest.param(
        Finding,
        {**FINDING_REQUIRED, "confidence": "-0.1"},
        "confidence",
        ("greater than or equal to 0",),
        id="confidence-negative",
    ),
    pytest.param(
        Finding,
        {**FINDING_REQUIRED, "input_tokens": "-5"},
        "input_tokens",
        ("greater than or equal to 0",),
        id="negative-tokens",
    ),
    pytest.param(
        Finding,
        {**FINDING_REQUIRED, "status": "done"},
        "status",
        ("ok", "failed"),
        id="bad-status",
    ),
    pytest.param(
        ContextQuery,
        {"requester_worker_id": "w", "target_shard": "s", "query": " ", "reply_to": "r"},
        "query",
        ("empty",),
        id="blank-context-query",
    ),
    # the `data` form
    pytest.param(Task, {"data": "{not json"}, "data", ("not valid json",), id="data-bad-json"),
    pytest.param(Task, {"data": ""}, "data", ("not valid json",), id="data-empty"),
    pytest.param(Task, {"data": "[1, 2]"}, "data", ("json object",), id="data-array"),
    pytest.param(Task, {"data": '"prompt"'}, "data", ("json object",), id="data-string"),
    pytest.param(Task, {"data": "42"}, "data", ("json object",), id="data-number"),
    pytest.param(Task, {"data": "null"}, "data", ("json object",), id="data-null"),
    pytest.param(
        Task,
        {"data": '{"prompt": "p"}', "urgency": "high"},
        "urgency",
        ("cannot be combined", "data"),
        id="data-with-other-field",
    ),
    pytest.param(
        Task,
        {"data": '{"prompt": "p"}', "prompt": "p"},
        "prompt",
        ("cannot be combined", "data"),
        id="data-with-prompt",
    ),
    pytest.param(Task, {"data": '{"prompt": ""}'}, "prompt", ("empty",), id="data-empty-prompt"),
    pytest.param(
        Task,
        {"data": '{"prompt": "p", "complexty": "simple"}'},
        "complexty",
        ("not a field of task",),
        id="data-unknown-field",
    ),
    # bytes that are not UTF-8
    pytest.param(
        Task,
        {b"prompt": b"caf\xe9"},
        "prompt",
        ("utf-8", "0xe9", "position 3"),
        id="value-not-utf8",
    ),
    pytest.param(
        Task,
        {b"pr\xffompt": b"p"},
        "pr\ufffdompt",
        ("name", "not utf-8"),
        id="key-not-utf8",
    ),
    pytest.param(Task, {b"data": b"\xff{}"}, "data", ("utf-8",), id="data-not-utf8"),
    # unknown fields and versions
    pytest.param(
        Task,
        {"prompt": "p", "complexty": "simple"},
        "complexty",
        ("not a field of task",),
        id="typo-field",
    ),
    pytest.param(
        Finding,
        {**FINDING_REQUIRED, "confidance": "0.5"},
        "confidance",
        ("not a field of finding",),
        id="typo-field-finding",
    ),
    pytest.param(
        Task,
        {"prompt": "p", "schema_version": "2"},
        "schema_version",
        ("unsupported version 2", "reads 1"),
        id="schema-version-2",
    ),
    pytest.param(
        Task,
        {"data": '{"prompt": "p", "schema_version": 0}'},
        "schema_version",
        ("unsupported version 0",),
        id="data-schema-version-0",
    ),
    # JSON-typed flat fields
    pytest.param(
        Task,
        {"prompt": "p", "excluded_vendors": "gemini"},
        "excluded_vendors",
        ("json",),
        id="excluded-vendors-bare-word",
    ),
    pytest.param(
        Task,
        {"prompt": "p", "excluded_vendors": '["gemini"'},
        "excluded_vendors",
        ("json",),
        id="excluded-vendors-unclosed",
    ),
    pytest.param(
        Task, {"prompt": "p", "history": "[{"}, "history", ("json",), id="history-bad-json"
    ),
    pytest.param(
        Finding,
        {**FINDING_REQUIRED, "sources": "https://example.com"},
        "sources",
        ("json",),
        id="sources-bad-json",
    ),
    pytest.param(
        Rejection,
        {"reason": "r", "source_stream": "s", "source_id": "1-0", "original": "{prompt"},
        "original",
        ("json",),
        id="rejection-original-bad-json",
    ),
    pytest.param(
        Task,
        {"prompt": "p", "excluded_vendors": '"gemini"'},
        "excluded_vendors",
        ("tuple",),
        id="excluded-vendors-json-string",
    ),
    # nested problems are named by their path
    pytest.param(
        Task,
        {"prompt": "p", "history": '[{"vendor": "claude"}]'},
        "history.0.error",
        ("required",),
        id="history-missing-error",
    ),
    pytest.param(
        Task,
        {"prompt": "p", "history": '[{"vendor": "Not OK", "error": "e"}]'},
        "history.0.vendor",
        ("lower-case",),
        id="history-bad-vendor",
    ),
    pytest.param(
        Task,
        {"prompt": "p", "excluded_vendors": '["gemini", "Bad Vendor"]'},
        "excluded_vendors.1",
        ("lower-case",),
        id="excluded-vendors-bad-name",
    ),
]


@pytest.mark.parametrize(("model", "fields", "field", "words"), BAD_INPUT)
def test_bad_input_names_the_field_and_the_problem(
    model: type[BaseModel], fields: dict, field: str, words: tuple[str, ...]
) -> None:
    _assert_problem(model, fields, field, words)


@pytest.mark.parametrize(
    "model", [Task, Finding, ContextQuery, ContextReply, Rejection, AttemptRecord]
)
def test_an_empty_entry_is_rejected_as_a_whole(model: type[BaseModel]) -> None:
    problems = _problems(model, {})
    assert problems == [FieldProblem("", "entry has no fields")]


def test_the_decode_error_is_a_protocol_error_with_a_readable_message() -> None:
    with pytest.raises(ProtocolError, match=r"^complexty: is not a field of Task$"):
        decode(Task, {"prompt": "p", "complexty": "simple"})


def test_every_problem_is_reported_not_just_the_first() -> None:
    problems = _problems(Task, {"prompt": "", "complexity": "nope", "attempt": "0"})
    assert [p.field for p in problems] == ["prompt", "complexity", "attempt"]


def test_every_missing_required_field_is_named() -> None:
    problems = _problems(Finding, {"vendor": "claude"})
    assert {p.field: p.problem for p in problems} == {
        "task_id": "is required",
        "worker_id": "is required",
        "model": "is required",
    }


def test_every_non_utf8_field_is_named() -> None:
    problems = _problems(Task, {b"prompt": b"\xff", b"context": b"ok", b"model": b"\xc3("})
    assert sorted(p.field for p in problems) == ["model", "prompt"]


def test_decode_json_names_data_for_a_bad_document() -> None:
    with pytest.raises(DecodeError) as info:
        decode_json(Task, b"\xff")
    assert info.value.field == "data"
    with pytest.raises(DecodeError) as info:
        decode_json(Task, "[]")
    assert info.value.problems == [FieldProblem("data", "must be a JSON object")]


def test_field_problem_text() -> None:
    assert str(FieldProblem("prompt", "is required")) == "prompt: is required"
    assert str(FieldProblem("", "entry has no fields")) == "entry has no fields"


def _rejection() -> Rejection:
    return Rejection(reason="too big", source_stream="swarm:tasks", source_id="1-0")


def test_an_excerpt_stays_bounded_whatever_the_entry_holds() -> None:
    # many fields, long names, long values, names that are not UTF-8
    entry = {f"field-{i}-{'n' * 200}".encode(): b"v" * 10_000 for i in range(500)}
    entry[b"\xff" * 300] = b"x" * 100
    record = encode_rejection(_rejection(), entry, excerpt=True)
    kept = {k: v for k, v in record.items() if _bytes(k).startswith(b"excerpt:")}
    assert 0 < sum(len(_bytes(k)) - 8 + len(_bytes(v)) for k, v in kept.items()) <= EXCERPT_BYTES
    assert not any(_bytes(k).startswith(b"orig:") for k in record)
    back = decode_rejection(record)
    assert back.excerpted and back.original == {}
    assert back.original_bytes == entry_size(entry) > 5_000_000
    assert back.original_sha256 == entry_digest(entry)


def test_a_small_entry_refused_for_its_size_is_still_kept_whole() -> None:
    entry = {b"prompt": b"x" * 1001}  # over a prompt limit, yet smaller than any excerpt
    back = decode_rejection(encode_rejection(_rejection(), entry, excerpt=True))
    assert not back.excerpted and back.original == {"prompt": "x" * 1001}


def test_the_digest_tells_apart_entries_with_the_same_bytes_split_differently() -> None:
    assert entry_digest({b"ab": b"c"}) != entry_digest({b"a": b"bc"})
    assert entry_digest({"a": "b"}) == entry_digest({b"a": b"b"})


def _bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value
