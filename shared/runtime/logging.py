"""structlog configured once: JSON lines to stdout in production, colours on a terminal.

Secrets never reach a log line: values under secret-looking keys are masked, and every
value registered with `register_secret` is replaced wherever it appears.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
import structlog.tracebacks

_SECRET_KEY = re.compile(r"(api_?key|secret|password|passwd|authorization|credential)", re.I)
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*://[^:/@\s]*:)[^@\s]+@", re.I)
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Mask `value` in every log line from now on (API keys, passwords)."""
    if value and len(value) >= 4:
        _secrets.add(value)


def scrub_text(text: str) -> str:
    """`text` with every registered secret and any URL password masked."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return _URL_PASSWORD.sub(r"\g<scheme>***@", text)


def scrub_secrets(
    _logger: object, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if _SECRET_KEY.search(key):
            event[key] = "***"
        elif isinstance(value, str):
            event[key] = scrub_text(value)
    return event


def configure_logging(level: str = "info", json: bool | None = None) -> None:
    """Configure structlog and route stdlib loggers (redis, httpx, SDKs) through it."""
    if json is None:
        json = not sys.stderr.isatty()
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    # Tracebacks without local variables: locals can hold API keys, prompts and whole
    # responses (kilobytes per line); the frames say where it broke.
    tracebacks = structlog.processors.ExceptionRenderer(
        structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
    )
    tail: list[structlog.types.Processor] = [
        tracebacks if json else structlog.processors.format_exc_info,
        scrub_secrets,
    ]
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    structlog.configure(
        processors=[*shared, *tail, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, *tail],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO))
