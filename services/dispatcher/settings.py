"""Dispatcher settings (`SWARM_DISPATCHER_*`), read once in `main` and passed down."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DispatcherSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SWARM_DISPATCHER_",
        env_file=".env",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    # Bytes of an intake entry's names and values. The default holds the largest task the
    # character limits below admit (about 4.9 MB of ASCII) with room for multi-byte text.
    max_task_bytes: int = Field(
        default=8 << 20,
        ge=1,
        validation_alias=AliasChoices("SWARM_MAX_TASK_BYTES"),
        description="larger intake entries are rejected, keeping only an excerpt",
    )
    max_prompt_chars: int = Field(default=400_000, ge=1, description="longer prompts are rejected")
    max_context_chars: int = Field(default=4_500_000, ge=0, description="about 1.1M tokens")
    policy_file: Path | None = Field(default=None, description="routing policy TOML to use")
    record_ttl_s: float = Field(default=7 * 86400, gt=0, description="how long task records last")
    vendor_caps_usd: dict[str, float] = Field(
        default_factory=dict, description='JSON, e.g. {"claude": 50}: USD per vendor per period'
    )
    task_type_caps_usd: dict[str, float] = Field(
        default_factory=dict, description="JSON: USD per task_type per period"
    )
    budget_period_s: float = Field(default=86400.0, gt=0, description="caps reset every period")
    fleet_refresh_s: float = Field(default=1.0, gt=0, description="live workers and cooldowns")
    live_grace_s: float = Field(
        default=30.0, ge=0, description="a vendor seen live this recently still takes work"
    )
    cold_start_wait_s: float = Field(
        default=10.0, ge=0, description="at start, how long a task waits for any worker"
    )
    start_traces: bool = Field(
        default=True,
        validation_alias=AliasChoices("SWARM_TRACE_START"),
        description="a task without a traceparent starts a trace at intake (header: 1.1)",
    )
