"""Stream entries <-> messages. The only reader and writer of the wire format.

Two forms decode to the same message (the intake contract):

* flat fields, one per message field, as `redis-cli XADD swarm:tasks '*' prompt "..."`
  writes them; list, tuple, dict and nested values are JSON strings;
* a single `data` field holding the whole message as a JSON object.

`encode` writes the flat form, so `redis-cli XRANGE swarm:findings - +` is readable.
"""

from __future__ import annotations

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
    rejection: Rejection, original: Mapping[bytes, bytes] | Mapping[str, str]
) -> dict[str | bytes, str | bytes]:
    """The dead-letter record: the rejection's fields plus the original entry's fields,
    byte-exact, as `orig:<name>`, so it can be replayed as it was."""
    own = encode(rejection.model_copy(update={"original": {}}))
    out: dict[str | bytes, str | bytes] = {k: v for k, v in own.items() if k != "original"}
    for key, value in original.items():
        if isinstance(key, str):
            out[ORIGINAL_PREFIX + key] = value
            continue
        try:
            out[ORIGINAL_PREFIX + key.decode()] = value
        except UnicodeDecodeError:  # the name's own bytes: an escaped spelling could collide
            out[ORIGINAL_PREFIX.encode() + key] = value
    return out


def decode_rejection(fields: RawFields) -> Rejection:
    """Read a dead-letter or rejected-task record back (original values made printable)."""
    own: dict[bytes | str, bytes | str] = {}
    original: dict[str, str] = {}
    for raw_key, raw_value in fields.items():
        key = raw_key.decode(errors="backslashreplace") if isinstance(raw_key, bytes) else raw_key
        if key.startswith(ORIGINAL_PREFIX):
            value = raw_value
            original[key.removeprefix(ORIGINAL_PREFIX)] = (
                value.decode(errors="backslashreplace") if isinstance(value, bytes) else value
            )
        else:
            own[raw_key] = raw_value
    rejection = decode(Rejection, own)
    return rejection.model_copy(update={"original": original})


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
        return model.model_validate(values)
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
