"""Secrets never reach a log line or a settings repr."""

from __future__ import annotations

import io
import json
import logging
from contextlib import redirect_stdout

import structlog

from shared.runtime.logging import configure_logging, register_secret
from shared.runtime.settings import SwarmSettings, redact_url


def _log_lines(emit: object) -> list[dict[str, object]]:
    out = io.StringIO()
    with redirect_stdout(out):
        configure_logging("info", json=True)
        emit()  # type: ignore[operator]
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def test_registered_secret_is_masked_everywhere() -> None:
    key = "sk-ant-test-0123456789abcdef"
    register_secret(key)

    def emit() -> None:
        log = structlog.get_logger("t")
        log.info("vendor.call", note=f"calling with {key}", api_key=key, headers={"x": 1})
        logging.getLogger("httpx").warning("request failed for key %s", key)

    lines = _log_lines(emit)
    text = json.dumps(lines)
    assert key not in text
    assert lines[0]["api_key"] == "***"
    assert lines[0]["note"] == "calling with ***"
    assert "***" in str(lines[1]["event"])


def test_passwords_in_urls_are_masked_in_logs() -> None:
    def emit() -> None:
        structlog.get_logger("t").warning("redis.down", url="redis://app:hunter2@db:6379/0")

    [line] = _log_lines(emit)
    assert "hunter2" not in json.dumps(line)
    assert line["url"] == "redis://app:***@db:6379/0"


def test_settings_never_show_the_redis_password() -> None:
    settings = SwarmSettings(REDIS_URL="rediss://app:hunter2@cache.internal:6380/1")
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.model_dump())
    assert settings.redis_url_redacted == "rediss://app:***@cache.internal:6380/1"
    assert settings.redis_url.get_secret_value().endswith("hunter2@cache.internal:6380/1")


def test_redact_url_leaves_passwordless_urls_alone() -> None:
    assert redact_url("redis://localhost:6379/0") == "redis://localhost:6379/0"
