"""Bad configuration, said once and plainly: which variable, and what is wrong with it.

A service started with a value it cannot use exits at once with one log line per problem,
naming the ENVIRONMENT VARIABLE a person sets (`SWARM_WORKER_RPM=abc: Input should be a
valid integer, ...`), never a pydantic traceback and never a secret's value. Settings are
read with `load` / `load_all`, which turn pydantic's ValidationError (and pydantic-settings'
SettingsError, for JSON that does not parse) into a `ConfigError`; `shared.runtime.lifecycle`
logs its problems and exits with its code.

Exit codes (for a container's restart policy and for people):
    2  EXIT_CONFIG       a value to fix: restarting with the same environment cannot help
    3  EXIT_UNREACHABLE  a dependency (Redis) never answered within its deadline

Errors:
    ConfigError               event `config.invalid`, exit 2
      shared.runtime.redis.RedisRefused      (also a PermissionError)  `redis.refused`, 2
      shared.runtime.redis.RedisUnreachable  (also a ConnectionError)  `redis.unreachable`, 3
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeVar, cast, get_args, overload

from pydantic import AliasChoices, SecretBytes, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsError

from shared.runtime.settings import redact_url

__all__ = [
    "EXIT_CONFIG",
    "EXIT_UNREACHABLE",
    "ConfigError",
    "Problem",
    "env_name",
    "load",
    "load_all",
    "settings_problems",
]

EXIT_CONFIG = 2
EXIT_UNREACHABLE = 3

_SECRET_NAME = re.compile(r"(api_?key|secret|password|passwd|credential)", re.I)
_SETTINGS_FIELD = re.compile(r'field "([^"]+)"')
_MAX_SHOWN = 80

A = TypeVar("A", bound=BaseSettings)
B = TypeVar("B", bound=BaseSettings)
C = TypeVar("C", bound=BaseSettings)
D = TypeVar("D", bound=BaseSettings)
E = TypeVar("E", bound=BaseSettings)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing to fix: a readable line that names `variable` (None: several, in the text)."""

    variable: str | None
    message: str


class ConfigError(Exception):
    """The process cannot start with this configuration; each problem is one log line."""

    event = "config.invalid"
    exit_code = EXIT_CONFIG

    def __init__(self, *problems: Problem) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


def load(cls: type[A]) -> A:
    """`cls()` from the environment (and `.env`); a bad value is a ConfigError naming it."""
    (loaded,) = _load(cls)
    return cast(A, loaded)


@overload
def load_all(a: type[A], b: type[B], /) -> tuple[A, B]: ...
@overload
def load_all(a: type[A], b: type[B], c: type[C], /) -> tuple[A, B, C]: ...
@overload
def load_all(a: type[A], b: type[B], c: type[C], d: type[D], /) -> tuple[A, B, C, D]: ...
@overload
def load_all(
    a: type[A], b: type[B], c: type[C], d: type[D], e: type[E], /
) -> tuple[A, B, C, D, E]: ...
def load_all(*classes: type[BaseSettings]) -> tuple[BaseSettings, ...]:
    """Every class from the environment; the problems of all of them in one ConfigError,
    so a person fixes every bad variable in one go, not one per restart."""
    return _load(*classes)


def _load(*classes: type[BaseSettings]) -> tuple[BaseSettings, ...]:
    loaded: list[BaseSettings] = []
    problems: list[Problem] = []
    for cls in classes:
        try:
            loaded.append(cls())
        except ValidationError as exc:
            problems += settings_problems(cls, exc)
        except SettingsError as exc:  # a JSON field that does not parse
            problems.append(_unparsable(cls, exc))
    if problems:
        raise ConfigError(*problems)
    return tuple(loaded)


def settings_problems(cls: type[BaseSettings], exc: ValidationError) -> list[Problem]:
    """One Problem per error of `exc` (raised building `cls`), named by environment variable."""
    problems = []
    for err in exc.errors(include_url=False):
        message = str(err["msg"]).removeprefix("Value error, ")
        loc = err["loc"]
        if not loc:  # a check across fields: its message names them; the first one leads
            named = (env_name(cls, f) for f in cls.model_fields)
            at = {message.find(n): n for n in named if n in message}
            problems.append(Problem(at[min(at)] if at else None, message))
            continue
        key = str(loc[0])
        name = head = env_name(cls, key)
        if len(loc) > 1:  # inside a JSON value: {"claude": "x"}
            head += f" ({'.'.join(str(p) for p in loc[1:])})"
        elif err["type"] != "missing":  # the input of a missing field is everything else
            shown = _shown(cls, key, name, err.get("input"))
            if shown is not None:
                head += f"={shown}"
        problems.append(Problem(name, f"{head}: {message}"))
    return problems


def env_name(cls: type[BaseSettings], key: str) -> str:
    """The environment variable that sets `key` (a field name or an alias, as an error's
    location has it); of several alias choices, the first."""
    found = _field(cls, key)
    if found is None or key != found[0]:
        return key.upper()  # already an alias
    aliases = _aliases(found[1])
    if aliases:
        return aliases[0]
    return f"{cls.model_config.get('env_prefix', '')}{key}".upper()


def _field(cls: type[BaseSettings], key: str) -> tuple[str, FieldInfo] | None:
    for name, field in cls.model_fields.items():
        if key == name or key.upper() in _aliases(field):
            return name, field
    return None


def _aliases(field: FieldInfo) -> list[str]:
    alias = field.validation_alias
    choices = alias.choices if isinstance(alias, AliasChoices) else [alias or field.alias]
    return [c.upper() for c in choices if isinstance(c, str)]


def _unparsable(cls: type[BaseSettings], exc: SettingsError) -> Problem:
    found = _SETTINGS_FIELD.search(str(exc))
    name = env_name(cls, found.group(1)) if found else cls.__name__
    cause = f": {exc.__cause__}" if exc.__cause__ is not None else ""
    return Problem(name, f"{name}: not valid JSON{cause}")


def _shown(cls: type[BaseSettings], key: str, name: str, value: object) -> str | None:
    """The value as it may appear in a log line: secrets masked, long values cut."""
    if not isinstance(value, str | int | float):
        return None
    text = str(value)
    if _secret(cls, key, name):
        if "://" not in text:
            return "***"
        try:
            return redact_url(text)
        except ValueError:
            return "***"
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _secret(cls: type[BaseSettings], key: str, name: str) -> bool:
    if _SECRET_NAME.search(name):
        return True
    found = _field(cls, key)
    return found is not None and _mentions_secret(found[1].annotation)


def _mentions_secret(annotation: object) -> bool:
    if annotation in (SecretStr, SecretBytes):
        return True
    return any(_mentions_secret(arg) for arg in get_args(annotation))
