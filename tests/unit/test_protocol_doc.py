"""docs/protocol.md against the code: every example decodes, every table matches the models.

Conventions the doc follows (and this test enforces):

* an example entry is a fenced block with info string `redis` (one `redis-cli XADD ... '*'
  field value ...` command, `\\` continues a line) or `json` (a data-form object), directly
  after `<!-- example: Model [label] -->`; examples of one model with the same label are
  the same message in different forms; the label `canonical` means "exactly what
  `encode` writes";
* `<!-- bad-example: Model field -->` marks an entry that must be rejected naming `field`;
* `<!-- record: dead-letter -->` marks a dead-letter/rejection record;
* `<!-- fields: Model -->` directly precedes the field table of a model (or `dead-letter`,
  `member`).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import BaseModel

from shared.bus.delivery import Delivery
from shared.bus.membership import Heartbeat
from shared.protocol import (
    AttemptRecord,
    Cancel,
    ContextQuery,
    ContextReply,
    DecodeError,
    Finding,
    Names,
    Task,
    decode,
    decode_json,
    decode_rejection,
    encode,
)
from shared.protocol.codec import DATA_FIELD, _json_fields
from shared.runtime.settings import BusSettings, SwarmSettings

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
DOC = DOC_PATH.read_text(encoding="utf-8")
NAMES = Names()
MODELS: dict[str, type[BaseModel]] = {
    m.__name__: m for m in (Task, AttemptRecord, Finding, ContextQuery, ContextReply, Cancel)
}
DEAD_LETTER = "dead-letter"

_MARKER = re.compile(
    r"^<!--\s*(example|bad-example|record|fields):\s*([\w-]+)(?:\s+([\w.:-]+))?\s*-->$"
)
_FENCE = re.compile(r"^(\s*)```(\w*)\s*$")


@dataclass(frozen=True)
class Marker:
    kind: str
    name: str
    label: str | None


@dataclass(frozen=True)
class Block:
    info: str
    text: str
    line: int
    marker: Marker | None


@dataclass(frozen=True)
class Xadd:
    stream: str
    fields: dict[str, str]


def _marker(line: str) -> Marker | None:
    m = _MARKER.match(line.strip())
    return Marker(m[1], m[2], m[3]) if m else None


def _blocks(text: str) -> list[Block]:
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, info = opening[1], opening[2]
        end = i + 1
        while lines[end].strip() != "```":
            end += 1
        body = "\n".join(line.removeprefix(indent) for line in lines[i + 1 : end])
        marker = _marker(lines[i - 1]) if i > 0 else None
        blocks.append(Block(info, body, i + 1, marker))
        i = end + 1
    return blocks


def _xadds(body: str) -> list[Xadd]:
    """Every XADD command in a block, as redis-cli would receive it."""
    found = []
    for line in body.replace("\\\n", "").splitlines():
        words = shlex.split(line)
        if words[:1] == ["redis-cli"]:
            words = words[1:]
        if not words or words[0].upper() != "XADD":
            continue
        assert words[2] == "*", f"examples let Redis choose the id: {line}"
        pairs = words[3:]
        assert len(pairs) % 2 == 0, f"odd number of field/value words: {line}"
        found.append(Xadd(words[1], dict(zip(pairs[::2], pairs[1::2], strict=True))))
    return found


def _only_xadd(block: Block) -> Xadd:
    xadds = _xadds(block.text)
    assert len(xadds) == 1, f"line {block.line}: a redis example holds exactly one XADD"
    return xadds[0]


def _model_for_stream(stream: str) -> type[BaseModel] | str:
    if stream in (NAMES.dead_letter, NAMES.rejected):
        return DEAD_LETTER
    if stream == NAMES.intake:
        return Task
    if stream == NAMES.findings:
        return Finding
    parts = stream.split(":")
    if len(parts) == 3 and NAMES.vendor_tasks(parts[2]) == stream:
        return Task
    if stream == NAMES.cancels:
        return Cancel
    if len(parts) == 4 and NAMES.shard_queries(parts[2]) == stream:
        return ContextQuery
    if len(parts) == 3 and NAMES.replies(parts[2]) == stream:
        return ContextReply
    raise AssertionError(f"{stream} is not a swarm stream")


def _decode(model: type[BaseModel], block: Block) -> BaseModel:
    if block.info == "json":
        return decode_json(model, block.text)
    xadd = _only_xadd(block)
    assert _model_for_stream(xadd.stream) is model, f"line {block.line}: wrong stream"
    return decode(model, xadd.fields)


BLOCKS = _blocks(DOC)
EXAMPLES = [b for b in BLOCKS if b.marker and b.marker.kind == "example"]
BAD_EXAMPLES = [b for b in BLOCKS if b.marker and b.marker.kind == "bad-example"]
RECORDS = [b for b in BLOCKS if b.marker and b.marker.kind == "record"]


def _id(block: Block) -> str:
    assert block.marker is not None
    return f"line{block.line}-{block.marker.name}-{block.marker.label or ''}"


def _is_data_form(block: Block) -> bool:
    return block.info == "json" or DATA_FIELD in _only_xadd(block).fields


# -- examples -------------------------------------------------------------------------------
def test_doc_has_the_required_examples() -> None:
    def count(model: str, label: str | None = None, *, data: bool | None = None) -> int:
        return sum(
            1
            for b in EXAMPLES
            if b.marker is not None
            and b.marker.name == model
            and (label is None or b.marker.label == label)
            and (data is None or _is_data_form(b) == data)
        )

    assert count("Task", "minimal", data=False) >= 1
    assert count("Task", "full", data=False) >= 1
    assert count("Task", "full", data=True) >= 1
    assert count("Finding", "canonical", data=False) >= 1
    assert count("ContextQuery") >= 1
    assert count("ContextReply") >= 1
    assert any(b.marker is not None and b.marker.name == "Task" for b in BAD_EXAMPLES)
    assert RECORDS


def test_every_redis_and_json_block_is_marked() -> None:
    for block in BLOCKS:
        if block.info in ("redis", "json"):
            assert block.marker is not None, f"line {block.line}: unmarked {block.info} block"
            assert block.marker.kind in ("example", "bad-example", "record")
        if block.marker is not None:
            assert block.info in ("redis", "json"), f"line {block.line}: marked {block.info}"


@pytest.mark.parametrize("block", EXAMPLES, ids=_id)
def test_example_decodes(block: Block) -> None:
    assert block.marker is not None
    model = MODELS[block.marker.name]
    message = _decode(model, block)
    assert decode(model, encode(message)) == message
    if block.marker.label == "canonical":
        assert block.info == "redis"
        assert encode(message) == _only_xadd(block).fields, "not what encode() writes"
    if isinstance(message, ContextQuery):
        assert _only_xadd(block).stream == NAMES.shard_queries(message.target_shard)
        assert message.reply_to == NAMES.replies(message.requester_worker_id)


@pytest.mark.parametrize("block", BAD_EXAMPLES, ids=_id)
def test_bad_example_is_rejected_by_name(block: Block) -> None:
    assert block.marker is not None
    assert block.marker.label, "a bad example names the field it must be rejected on"
    with pytest.raises(DecodeError) as caught:
        _decode(MODELS[block.marker.name], block)
    assert caught.value.field == block.marker.label
    assert block.marker.label in str(caught.value)


def _groups() -> dict[tuple[str, str], list[Block]]:
    groups: dict[tuple[str, str], list[Block]] = {}
    for b in EXAMPLES:
        assert b.marker is not None
        if b.marker.label and b.marker.label != "canonical":
            groups.setdefault((b.marker.name, b.marker.label), []).append(b)
    return groups


@pytest.mark.parametrize("key", sorted(_groups()), ids="-".join)
def test_forms_of_one_message_agree(key: tuple[str, str]) -> None:
    blocks = _groups()[key]
    model = MODELS[key[0]]
    assert len(blocks) >= 2, f"label {key[1]!r} is used once; give it a second form"
    assert {_is_data_form(b) for b in blocks} == {True, False}, "needs a flat and a data form"
    messages = [_decode(model, b) for b in blocks]
    # Generated values (task_id, timestamp) differ unless every form gives them.
    generated = {
        name
        for name, info in model.model_fields.items()
        if info.default_factory is not None
        and any(name not in m.model_fields_set for m in messages)
    }
    dumps = [m.model_dump(exclude=generated) for m in messages]
    assert all(d == dumps[0] for d in dumps)


def test_every_xadd_in_the_doc_decodes() -> None:
    """Walkthrough commands (sh blocks) too: nothing in the doc is an unchecked entry."""
    for block in BLOCKS:
        if block.marker is not None and block.marker.kind == "bad-example":
            continue
        for xadd in _xadds(block.text):
            model = _model_for_stream(xadd.stream)
            if model == DEAD_LETTER:
                assert block.marker == Marker("record", DEAD_LETTER, None)
                continue
            assert isinstance(model, type)
            decode(model, xadd.fields)


# -- names ----------------------------------------------------------------------------------
def test_doc_names_every_stream_group_and_key() -> None:
    names = [
        NAMES.intake,
        NAMES.rejected,
        NAMES.findings,
        NAMES.dead_letter,
        NAMES.vendor_tasks("deepseek"),
        NAMES.vendor_tasks("<vendor>"),
        NAMES.shard_queries("<shard>"),
        NAMES.replies("<consumer>"),
        NAMES.members,
        NAMES.member("<consumer>"),
        NAMES.task("<task_id>"),
        NAMES.task_findings("<task_id>"),
        NAMES.cancels,
        NAMES.task_cancelled("<task_id>"),
        NAMES.cooldown("<vendor>", "<model>"),
        NAMES.cooldowns,
        Names.DISPATCHER_GROUP,
        Names.COLLECTOR_GROUP,
        Names.MEGASHARD_GROUP,
        Names.worker_group("deepseek"),
        Names.worker_group("<vendor>"),
    ]
    for name in names:
        assert f"`{name}`" in DOC, f"{name} is not in docs/protocol.md"


# -- tables ---------------------------------------------------------------------------------
def _table(name: str) -> dict[str, list[str]]:
    """The field table after `<!-- fields: name -->`: field name -> cells."""
    lines = DOC.splitlines()
    starts = [i for i, line in enumerate(lines) if _marker(line) == Marker("fields", name, None)]
    assert len(starts) == 1, f"expected one field table for {name}"
    rows: dict[str, list[str]] = {}
    for line in lines[starts[0] + 3 :]:  # skip the header and the |---| line
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        for field in re.findall(r"`([^`]+)`", cells[0]):
            rows[field] = cells
    return rows


def _render(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if value == "":
        return '""'
    if value == ():
        return "[]"
    return str(getattr(value, "value", value))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_field_table_matches_model(name: str) -> None:
    model = MODELS[name]
    rows = _table(name)
    assert list(rows) == list(model.model_fields), "same fields, in model order"
    json_fields = _json_fields(model)
    for field, info in model.model_fields.items():
        _, kind, default, _meaning = rows[field]
        assert default.startswith("required") == info.is_required(), field
        assert kind.startswith("JSON") == (field in json_fields), field
        if info.default_factory is not None:
            assert default.startswith(("generated", "now")), field
        elif not info.is_required():
            rendered = _render(info.default)
            assert default == rendered or default.startswith(f"`{rendered}`"), field


class _RecordingSub:
    consumer = "worker-deepseek-7"

    def __init__(self) -> None:
        self.record: dict[str, str | bytes] = {}

    async def _finish(self, delivery, publish, dead_letter, stream, outcome) -> None:
        self.record = dict(dead_letter)


async def test_dead_letter_table_and_records_match_the_bus() -> None:
    sub = _RecordingSub()
    delivery = Delivery(
        NAMES.vendor_tasks("deepseek"), "worker-deepseek", "1-0", {b"prompt": b"x"}, 6, sub
    )
    await delivery.dead_letter("gave up")
    written = set(sub.record) - {"orig:prompt"}
    assert sub.record["orig:prompt"] == b"x"
    delivery.fields = {b"prompt": b"x" * 5000}
    await delivery.dead_letter("too big", excerpt=True)  # refused for its size
    excerpted = set(sub.record) - written - {"excerpt:prompt"}
    assert excerpted == {"original_bytes", "original_sha256"}
    assert sub.record["excerpt:prompt"] == b"x" * 512

    assert set(_table(DEAD_LETTER)) == written | excerpted | {"orig:<name>", "excerpt:<name>"}
    for block in RECORDS:
        xadd = _only_xadd(block)
        assert xadd.stream in (NAMES.dead_letter, NAMES.rejected)
        assert {k for k in xadd.fields if not k.startswith("orig:")} == written
        original = {
            k.removeprefix("orig:"): v for k, v in xadd.fields.items() if k.startswith("orig:")
        }
        assert original
        model = _model_for_stream(xadd.fields["source_stream"])
        assert isinstance(model, type)
        rejection = decode_rejection(xadd.fields)  # the record reads back as a Rejection
        assert rejection.original == original
        assert rejection.deliveries == int(xadd.fields["deliveries"])
        if xadd.stream == NAMES.rejected:  # the decode error, as the reason and field
            with pytest.raises(DecodeError) as caught:
                decode(model, original)
            assert xadd.fields["reason"] == str(caught.value)
            assert xadd.fields["field"] == caught.value.field
        else:
            decode(model, original)


class _Pipe:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[object, ...]]] = []

    async def __aenter__(self) -> _Pipe:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def __getattr__(self, command: str):
        def record(*args: object, **kwargs: object) -> None:
            self.calls.append((command, (*args, *kwargs.values())))

        return record

    async def execute(self) -> list[object]:
        return []


class _Redis:
    def __init__(self) -> None:
        self.pipe = _Pipe()

    def pipeline(self, transaction: bool) -> _Pipe:
        assert transaction, "a heartbeat is one MULTI/EXEC"
        return self.pipe


async def test_member_table_matches_heartbeat() -> None:
    redis = _Redis()
    beat = Heartbeat(
        redis,
        NAMES,
        "acme-go-1",
        service="worker",
        interval_s=1.0,
        ttl_s=3.0,
        info={"vendor": "deepseek"},
    )
    await beat.beat()
    (hset, hset_args), (pexpire, pexpire_args), (zadd, zadd_args) = redis.pipe.calls
    assert (hset, pexpire, zadd) == ("hset", "pexpire", "zadd")
    key, fields = hset_args
    assert key == NAMES.member("acme-go-1")
    assert pexpire_args == (key, 3000)
    assert zadd_args[0] == NAMES.members
    assert list(zadd_args[1]) == ["acme-go-1"]
    assert set(fields) <= set(_table("member"))


def test_settings_table_matches_defaults() -> None:
    rows = dict(re.findall(r"^\| `([A-Z_]+)`[^|]*\| `([^`]*)` \|", DOC, flags=re.MULTILINE))
    for field, info in BusSettings.model_fields.items():
        env = f"SWARM_{field.upper()}"
        assert rows.get(env) == _render(info.default), env
    swarm = SwarmSettings.model_fields
    assert rows["SWARM_NAMESPACE"] == swarm["namespace"].default
    assert rows["METRICS_PORT"] == str(swarm["metrics_port"].default)
    assert rows["LOG_LEVEL"] == swarm["log_level"].default
    assert rows["REDIS_URL"] == swarm["redis_url"].default.get_secret_value()
