"""The compatibility rule (docs/protocol.md section 10): `schema_version` is MAJOR.MINOR; a
reader rejects an unknown field of a message of its own minor or older (typos are caught),
drops the fields of a newer minor, and rejects another major with a reason; a writer writes
the lowest version that has the fields it sets, so 1.0 readers keep reading what uses no
1.1 field; `headers` travel in both forms."""

from __future__ import annotations

import json

import pytest

from shared.protocol import DecodeError, Finding, Task, decode, encode
from shared.protocol.codec import encode_data

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
HEADERS = {"traceparent": TRACE, "tracestate": "vendor=abc"}


def _rejected(fields: dict[str, str]) -> tuple[str, str]:
    with pytest.raises(DecodeError) as caught:
        decode(Task, fields)
    first = caught.value.problems[0]
    return first.field, first.problem


def test_an_unknown_field_of_a_known_version_is_rejected_by_name() -> None:
    """Typos are still caught in every version this reader knows, 1.1 included."""
    for version in (None, "1", "1.0", "1.1", " 1.1 ", "1.2"):
        fields = {"prompt": "p", "complexty": "simple"}
        if version is not None:
            fields["schema_version"] = version
        assert _rejected(fields) == ("complexty", "is not a field of Task"), version


def test_an_unknown_field_of_a_known_version_is_rejected_in_data_form_too() -> None:
    doc = {"schema_version": "1.1", "prompt": "p", "complexty": "simple"}
    assert _rejected({"data": json.dumps(doc)})[0] == "complexty"


@pytest.mark.parametrize("version", ["1.3", "1.17"])
def test_the_fields_of_a_newer_minor_are_dropped(version: str) -> None:
    flat = {"schema_version": version, "prompt": "p", "priority_v2": "9", "urgency": "high"}
    task = decode(Task, flat)
    assert task.prompt == "p" and task.urgency == "high"
    assert "priority_v2" not in encode(task)
    doc = {"schema_version": version, "prompt": "p", "priority_v2": {"a": [1]}}
    assert decode(Task, {"data": json.dumps(doc)}).prompt == "p"


def test_a_newer_minor_drops_unknown_fields_of_nested_messages_too() -> None:
    history = [{"vendor": "gemini", "error": "429", "retry_after_s": 3}]
    task = decode(Task, {"schema_version": "1.3", "prompt": "p", "history": json.dumps(history)})
    assert task.history[0].vendor == "gemini"
    field, _ = _rejected({"schema_version": "1.2", "prompt": "p", "history": json.dumps(history)})
    assert field == "history.0.retry_after_s"


def test_known_fields_of_a_newer_minor_are_still_checked() -> None:
    assert _rejected({"schema_version": "1.3", "prompt": "p", "urgency": "asap"})[0] == "urgency"


@pytest.mark.parametrize("version", ["2", "2.0", "0.9", "3.1"])
def test_another_major_is_rejected_saying_which_major_is_read(version: str) -> None:
    field, problem = _rejected({"schema_version": version, "prompt": "p", "new_field": "x"})
    major = version.split(".", maxsplit=1)[0]
    assert field == "schema_version"
    assert f"major {major} is not read here" in problem
    assert "reads 1.x" in problem


@pytest.mark.parametrize("version", ["1.1.1", "v1", "one", "", "-1"])
def test_a_version_that_is_not_major_minor_is_rejected(version: str) -> None:
    field, problem = _rejected({"schema_version": version, "prompt": "p"})
    assert field == "schema_version" and "MAJOR.MINOR" in problem


def test_a_fractional_json_number_is_not_a_version() -> None:
    field, problem = _rejected({"data": '{"schema_version": 1.1, "prompt": "p"}'})
    assert field == "schema_version" and "string" in problem
    assert decode(Task, {"data": '{"schema_version": 1, "prompt": "p"}'}).prompt == "p"


def test_a_message_without_1_1_fields_is_written_as_version_1() -> None:
    """What a 1.0 reader (main before the minor, the Node worker) accepts: `1`."""
    task = decode(Task, {"schema_version": "1.1", "prompt": "p"})
    assert encode(task)["schema_version"] == "1"
    assert "headers" not in encode(task)
    doc = json.loads(encode_data(task)["data"])
    assert doc["schema_version"] == 1 and "headers" not in doc
    assert task.schema_version == "1.0"


def test_headers_make_the_message_1_1_and_round_trip_in_the_flat_form() -> None:
    fields = {"prompt": "p", "headers": json.dumps(HEADERS)}
    task = decode(Task, fields)
    assert task.headers == HEADERS and task.schema_version == "1.1"
    flat = encode(task)
    assert flat["schema_version"] == "1.1"
    assert json.loads(flat["headers"]) == HEADERS
    assert decode(Task, flat) == task


def test_headers_round_trip_in_the_data_form() -> None:
    doc = {"schema_version": "1.1", "prompt": "p", "headers": HEADERS}
    task = decode(Task, {"data": json.dumps(doc)})
    assert task.headers == HEADERS
    written = json.loads(encode_data(task)["data"])
    assert written["schema_version"] == "1.1" and written["headers"] == HEADERS
    assert decode(Task, encode_data(task)) == task


def test_a_finding_carries_headers_in_both_forms() -> None:
    finding = Finding(task_id="t", worker_id="w", vendor="claude", model="m", headers=HEADERS)
    assert decode(Finding, encode(finding)).headers == HEADERS
    assert decode(Finding, encode_data(finding)).headers == HEADERS
    assert encode(finding)["schema_version"] == "1.1"


def test_headers_set_after_construction_still_raise_the_written_version() -> None:
    task = Task(prompt="p").model_copy(update={"headers": HEADERS})
    assert encode(task)["schema_version"] == "1.1"


@pytest.mark.parametrize(
    ("headers", "field", "problem"),
    [
        ('"traceparent"', "headers", "valid dictionary"),  # not an object
        ('{"traceparent": 1}', "headers.traceparent", "valid string"),
        ('{"bad name": "x"}', "headers", "header name 'bad name'"),
        (json.dumps({f"h{i}": "x" for i in range(33)}), "headers", "at most 32"),
        (json.dumps({"big": "x" * 4097}), "headers.big", "at most 4096"),
    ],
)
def test_bad_headers_are_rejected_by_name(headers: str, field: str, problem: str) -> None:
    got_field, got_problem = _rejected({"prompt": "p", "headers": headers})
    assert got_field == field and problem in got_problem, got_problem


def test_messages_stay_hashable_with_headers() -> None:
    a = Task(task_id="t", prompt="p", headers=HEADERS, timestamp="2025-11-25T18:00:00Z")
    b = Task(
        task_id="t", prompt="p", headers=dict(reversed(HEADERS.items())), timestamp=a.timestamp
    )
    assert a == b and hash(a) == hash(b)
    assert len({a, b, Task(prompt="p")}) == 2
