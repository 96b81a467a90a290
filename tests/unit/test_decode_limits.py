"""A hostile entry costs little: long lists are refused before their items are validated,
and a decode error's reason stays readable however many problems the entry has."""

from __future__ import annotations

import json
import time

import pytest

from shared.protocol import DecodeError, Finding, Task, decode


def test_a_huge_list_is_refused_by_its_length_at_once() -> None:
    names = json.dumps(["NOT A VENDOR"] * 200_000)
    started = time.process_time()
    with pytest.raises(DecodeError) as info:
        decode(Task, {"prompt": "x", "excluded_vendors": names})
    assert str(info.value) == "excluded_vendors: has 200,000 items; at most 32 are allowed"
    assert time.process_time() - started < 1.0  # not 200,000 item validations


def test_lists_up_to_their_limit_are_fine() -> None:
    task = decode(Task, {"prompt": "x", "excluded_vendors": json.dumps(["claude"] * 32)})
    assert len(task.excluded_vendors) == 32
    with pytest.raises(DecodeError, match="sources: has 1,001 items"):
        decode(
            Finding,
            {"task_id": "t", "worker_id": "w", "vendor": "v", "model": "m",
             "sources": json.dumps(["s"] * 1001)},
        )  # fmt: skip


def test_a_reason_lists_ten_problems_then_counts_the_rest() -> None:
    fields = {f"bogus{i}": "x" for i in range(50)}
    with pytest.raises(DecodeError) as info:
        decode(Task, {"prompt": "x", **fields})
    reason = str(info.value)
    assert len(info.value.problems) == 50  # all kept for code that wants them
    assert reason.count("is not a field of Task") == 10
    assert reason.endswith("; and 40 more problems")
    long = {"prompt": "x", "complexity": "y" * 100_000}
    with pytest.raises(DecodeError) as info:
        decode(Task, long)
    assert len(str(info.value)) <= 4003
