"""Hostile stream entries for property-based tests, and the checks they share.

An entry is a dict of raw field name -> raw value, both bytes, exactly as a producer could
`XADD` it: oversize values (MBs), bytes that are not UTF-8, NUL bytes, JSON nested far past
any parser's limit, numbers too big for an int, NaN and infinity spelled every way, wrong
types, unknown and empty field names, `data` mixed with flat fields. Every run is bounded:
a test posts one batch per example and checks it, against one long-lived service.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from redis.asyncio import Redis

from shared.protocol import Rejection, decode, decode_rejection
from shared.protocol.codec import (
    EXCERPT_BYTES,
    EXCERPT_PREFIX,
    ORIGINAL_PREFIX,
    entry_digest,
    entry_size,
)
from tests.waiting import eventually

Fields = dict[bytes, bytes]
MB = 1 << 20
PREFIX = ORIGINAL_PREFIX.encode()
EXCERPT = EXCERPT_PREFIX.encode()


def fuzz_settings(max_examples: int) -> settings:
    """Few examples, no deadline (each posts a batch to a real service and waits), no
    example database (nothing written into the work tree)."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,  # one service per test, not per example
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


# -- raw pieces ----------------------------------------------------------------------------
INVALID_UTF8 = (
    b"\xff",
    b"\xfe\xff",
    b"\xc3\x28",  # a lead byte without its continuation
    b"\xa0\xa1",  # continuation bytes alone
    b"\xe2\x28\xa1",
    b"\xed\xa0\x80",  # an encoded surrogate
    b"\xf0\x28\x8c\xbc",
    b"\xc0\xaf",  # an overlong '/'
    b"\x80",
)
ODD_NUMBERS = (
    *("NaN", "nan", "-NaN", "inf", "-inf", "+inf", "Infinity", "-Infinity", "infinity"),
    *("1e309", "-1e309", "1e-400", "0x1F", "1_000", " 7 ", "+5", "-0", "0", "-1", "1.5"),
    *("true", "null", "[]", "{}", "", " ", "1e1000000"),
)
ODD_NAMES = (b"", b"orig:prompt", b"prompt\x00", b"PROMPT", b" prompt", b"reason", b"data ")


def deep_json(depth: int, kind: int) -> str:
    """Arrays (kind 0) or objects (kind 1) nested `depth` deep."""
    if kind == 0:
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "0" + "}" * depth


def _dumps(value: object) -> str:
    return json.dumps(value, allow_nan=True)  # writes NaN / Infinity, which json.loads reads


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=20),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
depths = st.tuples(st.integers(50, 100_000), st.integers(0, 1))
oversize = st.tuples(
    st.integers(1, 3), st.sampled_from([b"x", b"ab ", b"\xff", b"\x00", "\u00e9".encode()])
).map(lambda t: t[1] * (t[0] * MB // len(t[1])))

values: st.SearchStrategy[bytes] = st.one_of(
    st.text(max_size=40).map(str.encode),
    st.text(max_size=20).map(lambda s: f"\x00{s}\x00".encode()),
    st.binary(max_size=40),
    st.sampled_from(INVALID_UTF8),
    st.tuples(st.text(max_size=8), st.sampled_from(INVALID_UTF8)).map(
        lambda t: t[0].encode() + t[1]
    ),
    st.sampled_from(ODD_NUMBERS).map(str.encode),
    json_values.map(lambda v: _dumps(v).encode()),
    st.one_of(  # the expensive ones, drawn less often
        st.integers(4300, 6000).map(lambda n: ("9" * n).encode()),  # past int-string limit
        depths.map(lambda t: deep_json(*t).encode()),
        oversize,
    ),
)


def field_names(model: type[BaseModel]) -> st.SearchStrategy[bytes]:
    known = sorted([*model.model_fields, "data"])
    return st.one_of(
        st.sampled_from(known).map(str.encode),
        st.text(max_size=12).map(str.encode),  # unknown fields, the empty name too
        st.binary(min_size=1, max_size=6),  # often not UTF-8
        st.sampled_from(INVALID_UTF8),
        st.sampled_from(ODD_NAMES),
    )


def entries(model: type[BaseModel], valid: Mapping[str, str]) -> st.SearchStrategy[Fields]:
    """Hostile entries for a stream that carries `model`; `valid` is one good flat entry,
    corrupted one field at a time so the deeper validators are reached too."""
    names = field_names(model)
    known = sorted(model.model_fields)
    flat = st.dictionaries(names, values, min_size=1, max_size=6)
    objects = st.dictionaries(
        st.one_of(st.sampled_from(known), st.text(max_size=8)), json_values, max_size=6
    )
    data = st.one_of(
        objects.map(lambda o: {b"data": _dumps(o).encode()}),
        json_values.map(lambda v: {b"data": _dumps(v).encode()}),  # often not an object
        st.tuples(objects, names, values).map(
            lambda t: {b"data": _dumps(t[0]).encode(), t[1]: t[2]}  # mixed with a flat field
        ),
        depths.map(lambda t: {b"data": f'{{"{known[0]}":{deep_json(*t)}}}'.encode()}),
        st.integers(4300, 6000).map(
            lambda n: {b"data": f'{{"schema_version":{"9" * n}}}'.encode()}
        ),
        st.sampled_from(ODD_NUMBERS).map(lambda s: {b"data": s.encode()}),
    )
    good = {k.encode(): v.encode() for k, v in valid.items()}
    corrupt = st.tuples(st.sampled_from(sorted(good)), names, values, st.integers(0, 2)).map(
        lambda t: _corrupt(good, *t)
    )
    empty_ish = st.sampled_from([{b"": b""}, {b"": b"x"}, {b"data": b""}, {b"\x00": b"\x00"}])
    # Weighted by hand: one_of alone drew the cheap `data` shapes most of the time.
    kinds = (flat, flat, corrupt, corrupt, corrupt, data, data, empty_ish)
    return st.integers(0, len(kinds) - 1).flatmap(lambda i: kinds[i])


def _corrupt(good: Fields, field: bytes, name: bytes, value: bytes, how: int) -> Fields:
    out = dict(good)
    if how == 0:
        out[field] = value  # a hostile value in a real field
    elif how == 1:
        out[name] = value  # an extra field, maybe unknown, maybe not UTF-8
    else:
        out.pop(field)  # a field left out (a required one, often)
        if not out:
            out[name] = value
    return out


def decodes(model: type[BaseModel], fields: Fields) -> bool:
    """Whether the protocol's own decoder takes the entry (any failure counts as no)."""
    try:
        decode(model, fields)
    except Exception:
        return False
    return True


# -- checks --------------------------------------------------------------------------------
def displayed(fields: Mapping[bytes, bytes]) -> dict[str, str]:
    """What `decode_rejection(...).original` shows for `fields`: undecodable bytes escaped."""
    return {
        k.decode(errors="backslashreplace"): v.decode(errors="backslashreplace")
        for k, v in fields.items()
    }


def check_record(
    record: Mapping[bytes, bytes], posted: Fields, *, source_stream: str, group: str
) -> Rejection:
    """A dead-letter or rejection record says why, and carries the entry byte-exact, or,
    for an entry refused for its size, a bounded excerpt with its size and SHA-256."""
    rejection = decode_rejection(record)
    if rejection.excerpted:
        check_excerpt(record, posted, rejection)
    else:
        kept = {k[len(PREFIX) :]: v for k, v in record.items() if k.startswith(PREFIX)}
        assert kept == posted, "the record must carry every original field, byte-exact"
        assert rejection.original == displayed(posted)
    assert rejection.reason.strip(), "a record must say why"
    assert rejection.source_stream == source_stream
    assert rejection.group == group
    assert rejection.deliveries == 1, (
        f"an entry that can never decode is parked at once, not retried: {rejection.reason}"
    )
    return rejection


def check_excerpt(record: Mapping[bytes, bytes], posted: Fields, rejection: Rejection) -> None:
    """Refused for its size: the record holds a bounded excerpt, not the entry."""
    assert "the limit is" in rejection.reason, f"excerpted, but why? {rejection.reason}"
    assert entry_size(posted) > 100_000, "a small entry is kept byte-exact"
    assert rejection.original_bytes == entry_size(posted)
    assert rejection.original_sha256 == entry_digest(posted)
    assert not any(k.startswith(PREFIX) for k in record), "no original field is kept"
    excerpt = [(k[len(EXCERPT) :], v) for k, v in record.items() if k.startswith(EXCERPT)]
    assert sum(len(k) + len(v) for k, v in excerpt) <= EXCERPT_BYTES
    for (name, value), (posted_name, posted_value) in zip(excerpt, posted.items(), strict=False):
        assert posted_name.startswith(name) and posted_value.startswith(value), "a prefix"


async def post(redis: Redis, stream: str, batch: Iterable[Fields]) -> list[str]:
    """XADD every entry in order, in one round trip; their ids."""
    async with redis.pipeline(transaction=False) as pipe:
        for fields in batch:
            pipe.xadd(stream, fields)  # type: ignore[arg-type]
        ids = await pipe.execute()
    return [i.decode() for i in ids]


async def drained(redis: Redis, stream: str, group: str, *, timeout: float = 15) -> None:
    """Until the group has read every entry of `stream` and settled (acked) every one."""

    async def done() -> bool:
        for g in await redis.xinfo_groups(stream):
            if g["name"] == group.encode():
                return bool(g["lag"] == 0 and g["pending"] == 0)
        return False

    try:
        await eventually(done, timeout=timeout, what=f"{group} to settle every entry")
    except AssertionError:
        pending: Any = await redis.xpending_range(stream, group, min="-", max="+", count=5)
        stuck = [(p["message_id"], p["times_delivered"]) for p in pending]
        raise AssertionError(
            f"{group} left entries unsettled on {stream} (id, deliveries): {stuck}"
        ) from None


async def records_by_source(redis: Redis, stream: str, since: str) -> dict[str, list[Fields]]:
    """Dead-letter/rejection records written since entry id `since`, by source entry id."""
    out: dict[str, list[Fields]] = {}
    for _id, record in await redis.xrange(stream, min=since):
        out.setdefault(record[b"source_id"].decode(), []).append(record)
    return out
