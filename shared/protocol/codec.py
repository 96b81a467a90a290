"""Stream entries <-> messages. The only reader and writer of the wire format.

Two forms decode to the same message (the intake contract):

* flat fields, one per message field, as `redis-cli XADD swarm:tasks '*' prompt "..."`
  writes them; list, tuple, dict and nested values are JSON strings;
* a single `data` field holding the whole message as a JSON object.

`encode` writes the flat form, so `redis-cli XRANGE swarm:findings - +` is readable.
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from shared.protocol.errors import DecodeError, FieldProblem
from shared.protocol.messages import Rejection

M = TypeVar("M", bound=BaseModel)

DATA_FIELD = "data"
ORIGINAL_PREFIX = "orig:"
EXCERPT_PREFIX = "excerpt:"
# An excerpted record keeps at most this much of the entry (names and values), whatever
# its size: the first fields, each name cut to 64 bytes and each value to 512.
EXCERPT_BYTES = 2048
_EXCERPT_FIELDS, _EXCERPT_NAME, _EXCERPT_VALUE = 16, 64, 512
RawFields = Mapping[bytes, bytes] | Mapping[str, str] | Mapping[bytes | str, bytes | str]


def encode(message: BaseModel) -> dict[str, str]:
    """Flat stream fields for a message; None values are left out."""
    out: dict[str, str] = {}
    for key, value in message.model_dump(mode="json", exclude_none=True).items():
        out[key] = _scalar(value)
    return out


def encode_data(message: BaseModel) -> dict[str, str]:
    """The single-field form: `{"data": "<json>"}`."""
    return {DATA_FIELD: message.model_dump_json(exclude_none=True)}


def encode_rejection(
    rejection: Rejection,
    original: Mapping[bytes, bytes] | Mapping[str, str],
    *,
    excerpt: bool = False,
) -> dict[str | bytes, str | bytes]:
    """The dead-letter record: the rejection's fields plus the original entry's fields,
    byte-exact, as `orig:<name>`, so it can be replayed as it was.

    With `excerpt` (an entry refused for its size) only `EXCERPT_BYTES` of the entry are
    kept, as `excerpt:<name>`, with its size and SHA-256 (`entry_size`, `entry_digest`);
    an entry no larger than that is still kept whole."""
    excerpt = excerpt and entry_size(original) > EXCERPT_BYTES
    if excerpt:
        sized = {"original_bytes": entry_size(original), "original_sha256": entry_digest(original)}
        rejection = rejection.model_copy(update=sized)
    own = encode(rejection.model_copy(update={"original": {}, "excerpt": {}}))
    out: dict[str | bytes, str | bytes] = {
        k: v for k, v in own.items() if k not in ("original", "excerpt")
    }
    prefix = EXCERPT_PREFIX if excerpt else ORIGINAL_PREFIX
    for key, value in _excerpt(original) if excerpt else original.items():
        if isinstance(key, str):
            out[prefix + key] = value
            continue
        try:
            out[prefix + key.decode()] = value
        except UnicodeDecodeError:  # the name's own bytes: an escaped spelling could collide
            out[prefix.encode() + key] = value
    return out


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def entry_size(fields: RawFields) -> int:
    """Bytes of an entry's field names and values."""
    return sum(len(_bytes(k)) + len(_bytes(v)) for k, v in fields.items())


def entry_digest(fields: RawFields) -> str:
    """SHA-256 (hex) of an entry: each name and value in order as a netstring
    (`<length>:<bytes>,`), so no two different entries share a digest input."""
    h = hashlib.sha256()
    for key, value in fields.items():
        for part in (_bytes(key), _bytes(value)):
            h.update(b"%d:%b," % (len(part), part))
    return h.hexdigest()


def _excerpt(fields: RawFields) -> list[tuple[bytes, bytes]]:
    """The entry's first fields, cut, `EXCERPT_BYTES` in all."""
    out: list[tuple[bytes, bytes]] = []
    budget = EXCERPT_BYTES
    for key, value in list(fields.items())[:_EXCERPT_FIELDS]:
        name = _bytes(key)[: min(_EXCERPT_NAME, budget)]
        budget -= len(name)
        cut = _bytes(value)[: min(_EXCERPT_VALUE, budget)]
        budget -= len(cut)
        out.append((name, cut))
        if budget <= 0:
            break
    return out


def decode_rejection(fields: RawFields) -> Rejection:
    """Read a dead-letter or rejected-task record back (original values made printable)."""
    own: dict[bytes | str, bytes | str] = {}
    kept: dict[str, dict[str, str]] = {ORIGINAL_PREFIX: {}, EXCERPT_PREFIX: {}}
    for raw_key, raw_value in fields.items():
        key = raw_key.decode(errors="backslashreplace") if isinstance(raw_key, bytes) else raw_key
        prefix = next((p for p in kept if key.startswith(p)), None)
        if prefix is None:
            own[raw_key] = raw_value
            continue
        value = raw_value
        kept[prefix][key.removeprefix(prefix)] = (
            value.decode(errors="backslashreplace") if isinstance(value, bytes) else value
        )
    rejection = decode(Rejection, own)
    return rejection.model_copy(
        update={"original": kept[ORIGINAL_PREFIX], "excerpt": kept[EXCERPT_PREFIX]}
    )


def _scalar(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def text_fields(fields: RawFields) -> dict[str, str]:
    """Decode keys and values as UTF-8; a field that is not UTF-8 is a DecodeError."""
    out: dict[str, str] = {}
    problems: list[FieldProblem] = []
    for raw_key, raw_value in fields.items():
        try:
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
        except UnicodeDecodeError:
            name = raw_key.decode(errors="replace") if isinstance(raw_key, bytes) else raw_key
            problems.append(FieldProblem(name, "name is not UTF-8"))
            continue
        try:
            value = raw_value.decode() if isinstance(raw_value, bytes) else raw_value
        except UnicodeDecodeError as exc:
            problems.append(
                FieldProblem(
                    key,
                    f"is not valid UTF-8 (byte {raw_value[exc.start]:#04x} "
                    f"at position {exc.start})",
                )
            )
            continue
        out[key] = value
    if problems:
        raise DecodeError(problems)
    return out


def decode(model: type[M], fields: RawFields) -> M:
    """Decode a stream entry (flat or `data` form) into `model`, or raise DecodeError."""
    text = text_fields(fields)
    if not text:
        raise DecodeError([FieldProblem("", "entry has no fields")])
    if DATA_FIELD in text:
        extra = sorted(set(text) - {DATA_FIELD})
        if extra:
            raise DecodeError(
                [
                    FieldProblem(
                        extra[0],
                        "cannot be combined with a `data` field; put it inside "
                        "the JSON or post flat fields only",
                    )
                ]
            )
        return decode_json(model, text[DATA_FIELD])
    values: dict[str, object] = {}
    problems: list[FieldProblem] = []
    json_fields = _json_fields(model)
    for key, value in text.items():
        if key in json_fields:
            try:
                values[key] = json.loads(value)
            except (ValueError, RecursionError) as exc:
                problems.append(
                    FieldProblem(key, f"must be a JSON value here ({_json_error(exc)})")
                )
        else:
            values[key] = value
    if problems:
        raise DecodeError(problems)
    return _validate(model, values)


def decode_json(model: type[M], document: str | bytes) -> M:
    """Decode one JSON object into `model`, or raise DecodeError naming `data`."""
    try:
        obj = json.loads(document)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        raise DecodeError([FieldProblem(DATA_FIELD, f"is not valid JSON ({exc})")]) from exc
    if not isinstance(obj, dict):
        raise DecodeError([FieldProblem(DATA_FIELD, "must be a JSON object")])
    return _validate(model, obj)


def _json_error(exc: ValueError | RecursionError) -> str:
    """Why json.loads refused: besides a JSONDecodeError it raises RecursionError (nested
    too deep) and ValueError (an integer past Python's digit limit)."""
    return exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)


def _validate(model: type[M], values: dict[str, Any]) -> M:
    try:
        # The context tells nested messages that the enclosing one is of a newer minor.
        return model.model_validate(values, context={})
    except ValidationError as exc:
        raise DecodeError([_problem(model, err) for err in exc.errors()]) from exc


def _problem(model: type[BaseModel], err: Mapping[str, Any]) -> FieldProblem:
    field = ".".join(str(part) for part in err["loc"])
    kind = err["type"]
    if kind == "missing":
        return FieldProblem(field, "is required")
    if kind == "extra_forbidden":
        return FieldProblem(field, f"is not a field of {model.__name__}")
    msg = str(err["msg"]).removeprefix("Value error, ")
    return FieldProblem(field, msg)


@cache
def _json_fields(model: type[BaseModel]) -> frozenset[str]:
    """Fields whose flat value is a JSON string: lists, tuples, dicts, nested models."""
    return frozenset(
        name for name, info in model.model_fields.items() if _is_container(info.annotation)
    )


def _is_container(annotation: object) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _is_container(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_is_container(a) for a in typing.get_args(annotation) if a is not type(None))
    if origin in (list, tuple, dict, set, frozenset):
        return True
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)
