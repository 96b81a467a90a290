"""Settings read once from the environment (and `.env` files), then passed down.

`SwarmSettings` holds what every service reads: `REDIS_URL`, `SWARM_NAMESPACE`,
`METRICS_PORT`, logging. `BusSettings` tunes delivery (`SWARM_*`). Secrets are SecretStr:
their repr is `**********`, so printing settings never leaks them.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.protocol.names import DEFAULT_NAMESPACE, Names


class SwarmSettings(BaseSettings):
    """What every service reads. Flags on `swarm run` override these."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    redis_url: SecretStr = Field(
        default=SecretStr("redis://localhost:6379/0"),
        validation_alias=AliasChoices("REDIS_URL", "SWARM_REDIS_URL"),
    )
    namespace: str = Field(
        default=DEFAULT_NAMESPACE, validation_alias=AliasChoices("SWARM_NAMESPACE")
    )
    metrics_port: int = Field(
        default=9100, ge=0, le=65535, validation_alias=AliasChoices("METRICS_PORT")
    )
    log_level: str = Field(default="info", validation_alias=AliasChoices("LOG_LEVEL"))
    log_json: bool | None = Field(default=None, validation_alias=AliasChoices("LOG_JSON"))
    consumer_name: str | None = Field(default=None, validation_alias=AliasChoices("CONSUMER_NAME"))
    # OpenTelemetry's own variables (OTLP over HTTP): spans are exported only when set.
    otlp_endpoint: str | None = Field(
        default=None, validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    otlp_traces_endpoint: str | None = Field(
        default=None, validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )
    otel_service_name: str | None = Field(
        default=None, validation_alias=AliasChoices("OTEL_SERVICE_NAME")
    )
    otel_sdk_disabled: bool = Field(
        default=False, validation_alias=AliasChoices("OTEL_SDK_DISABLED")
    )

    @field_validator("namespace")
    @classmethod
    def _namespace_ok(cls, v: str) -> str:
        Names(v)  # raises ValueError with a clear message
        return v

    @property
    def names(self) -> Names:
        return Names(self.namespace)

    @property
    def redis_url_redacted(self) -> str:
        return redact_url(self.redis_url.get_secret_value())

    @property
    def traces_endpoint(self) -> str | None:
        """Where spans go: the traces endpoint as given, or the base one's `/v1/traces`."""
        if self.otel_sdk_disabled:
            return None
        if self.otlp_traces_endpoint:
            return self.otlp_traces_endpoint
        if self.otlp_endpoint:
            return self.otlp_endpoint.rstrip("/") + "/v1/traces"
        return None

    def member_id(self, service: str) -> str:
        """Consumer name. In a container hostname and pid are the same after a restart, so
        the restarted process replays its own pending work; elsewhere a new process gets a
        new name and the old one's work is reclaimed as a dead consumer's within seconds."""
        if self.consumer_name:
            return self.consumer_name
        return f"{service}-{socket.gethostname()}-{os.getpid()}"


class BusSettings(BaseSettings):
    """Delivery tuning. Defaults suit LLM work: long calls, many in flight per process."""

    model_config = SettingsConfigDict(
        env_prefix="SWARM_", env_file=".env", extra="ignore", frozen=True
    )

    max_in_flight: int = Field(default=256, ge=1, description="deliveries handled at once")
    read_count: int = Field(default=100, ge=1, description="entries per XREADGROUP at most")
    block_ms: int = Field(default=2000, ge=1, le=10_000, description="XREADGROUP BLOCK")
    visibility_timeout_s: float = Field(
        default=60.0, gt=0, description="idle time after which a pending entry is reclaimed"
    )
    reclaim_interval_s: float = Field(default=1.0, gt=0)
    max_deliveries: int = Field(default=5, ge=1, description="then the entry is dead-lettered")
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    heartbeat_ttl_s: float = Field(default=3.0, gt=0)
    drain_timeout_s: float = Field(default=20.0, ge=0, description="grace on SIGTERM")
    trim_interval_s: float = Field(default=30.0, gt=0)
    backlog_interval_s: float = Field(
        default=5.0, gt=0, description="how often a consumer reports its stream's backlog"
    )
    retention_s: float = Field(default=3600.0, ge=0, description="keep handled entries this long")
    max_stream_len: int = Field(
        default=1_000_000, ge=1, description="past this, handled entries are trimmed at once"
    )
    urgency_aging_s: float = Field(
        default=10.0,
        gt=0,
        description="a lower urgency not read for this long is read first, once",
    )
    connect_timeout_s: float = Field(default=30.0, gt=0, description="wait for Redis at start")
    # Nobody consumes these two streams: each write trims them to about this many records.
    dlq_maxlen: int = Field(default=100_000, ge=1, description="dead-letter records kept")
    rejected_maxlen: int = Field(default=100_000, ge=1, description="rejected-task records kept")

    @model_validator(mode="after")
    def _heartbeat_outlives_its_interval(self) -> BusSettings:
        if self.heartbeat_ttl_s <= self.heartbeat_interval_s:
            raise ValueError(
                f"SWARM_HEARTBEAT_TTL_S ({self.heartbeat_ttl_s}) must exceed "
                f"SWARM_HEARTBEAT_INTERVAL_S ({self.heartbeat_interval_s}), or peers would "
                "take live consumers for dead and steal their work"
            )
        return self

    @property
    def socket_timeout_s(self) -> float:
        # redis-py does not extend the read timeout for BLOCK: it must exceed it.
        return self.block_ms / 1000 + 5.0


def redact_url(url: str) -> str:
    """`redis://user:secret@host/0` -> `redis://user:***@host/0`, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))
