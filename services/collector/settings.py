"""Collector settings (`SWARM_COLLECTOR_*`, and `FINDINGS_DATABASE_URL`), read once in
`main` and passed down."""

from __future__ import annotations

import re

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.bus.findings import DEFAULT_RETENTION_S

_TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")


class CollectorSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SWARM_COLLECTOR_", env_file=".env", extra="ignore", frozen=True
    )

    export_path: str = Field(
        default="./swarm-findings.jsonl",
        description="JSON lines file every finding is appended to; empty disables it",
    )
    database_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("FINDINGS_DATABASE_URL"),
        description="PostgreSQL URL; when set, findings also go to a table (exactly once)",
    )
    database_table: str = Field(
        default="findings", description="the table, optionally `schema.table`"
    )
    retention_s: float = Field(
        default=DEFAULT_RETENTION_S,
        gt=0,
        description="a task's and a run's keys last this long after their last finding",
    )

    @field_validator("database_table")
    @classmethod
    def _table_ok(cls, v: str) -> str:
        if not _TABLE_RE.fullmatch(v):
            raise ValueError(f"{v!r} must be `table` or `schema.table` (letters, digits, '_')")
        return v

    @field_validator("database_url", mode="before")
    @classmethod
    def _empty_is_none(cls, v: object) -> object:
        return None if v == "" else v
