"""Mega-shard settings (`SWARM_SHARD_*`), read once in `main` (or the CLI) and passed down."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SHARD_VENDORS = ("gemini", "claude")
# Long-context defaults: a priced explicit cache for Gemini (storage has a known price),
# Claude's 200K window with prompt caching.
DEFAULT_SHARD_MODEL = {"gemini": "gemini-2.5-flash-lite", "claude": "claude-haiku-4-5"}
_SHARD_ID = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")


def check_shard_id(shard: str) -> str:
    """Shard ids name Redis keys (`shard:<id>:...`): 1-64 lower-case letters, digits, _ . -"""
    if not _SHARD_ID.fullmatch(shard):
        raise ValueError(
            f"shard id {shard!r} must be 1-64 lower-case letters, digits, '_', '.' or '-'"
        )
    return shard


class ShardSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SWARM_SHARD_", env_file=".env", extra="ignore", frozen=True
    )

    id: str = Field(default="history", description="the shard this process serves")
    unconfigured: Literal["exit", "idle"] = Field(
        default="exit",
        description="with no key for any shard vendor: exit 2 (exit), or run answering every "
        "query `failed` with the variable to set (idle)",
    )
    reserve_tokens: int = Field(
        default=8192, ge=0, description="room kept in the window for the query and the answer"
    )
    max_answer_tokens: int = Field(default=4096, ge=1, description="cap on a query's answer")
    cache_ttl_s: float = Field(
        default=300.0, ge=1, description="Gemini cache TTL; extended while queries come"
    )
    claude_cache_ttl: Literal["5m", "1h"] = Field(
        default="5m", description="Claude cache_control TTL of the context block"
    )
    max_attempts: int = Field(default=4, ge=1, description="vendor calls per query")
    backoff_base_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=20.0, gt=0)
    reply_ttl_s: float = Field(
        default=3600.0, gt=0, description="replies kept so a redelivered query costs nothing"
    )
    version_check_s: float = Field(
        default=1.0, ge=0, description="how often a query looks for a newer context version"
    )

    @field_validator("id")
    @classmethod
    def _valid_id(cls, v: str) -> str:
        return check_shard_id(v)
