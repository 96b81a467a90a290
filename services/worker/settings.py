"""Worker settings (`SWARM_WORKER_*`), read once in `main` and passed down."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.llm.settings import VENDORS


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SWARM_WORKER_", env_file=".env", extra="ignore", frozen=True
    )

    vendor: str = Field(default="deepseek", description="which vendor's tasks to take")
    unconfigured: Literal["exit", "idle"] = Field(
        default="exit",
        description="without the vendor's key: exit 2 (exit), or run taking no tasks (idle)",
    )
    max_attempts: int = Field(default=4, ge=1, description="vendor calls per task, first included")
    backoff_base_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    task_deadline_s: float = Field(default=300.0, gt=0, description="no retry starts after it")
    max_output_tokens: int = Field(default=1024, ge=1)
    rpm: int | None = Field(default=None, ge=1, description="requests/min, all replicas together")
    tpm: int | None = Field(default=None, ge=1, description="tokens/min, all replicas together")
    cooldown_threshold: int = Field(default=5, ge=1)
    cooldown_window_s: float = Field(default=60.0, gt=0)
    cooldown_period_s: float = Field(default=60.0, gt=0)
    max_reroutes: int = Field(default=3, ge=0, description="vendors a task may fall back to")
    context_timeout_s: float = Field(default=30.0, gt=0)
    budget_period_s: float = Field(default=86400.0, gt=0, description="spend is counted per")
    done_ttl_s: float = Field(default=7 * 86400, gt=0, description="how long done-markers last")

    @field_validator("vendor")
    @classmethod
    def _known_vendor(cls, v: str) -> str:
        if v not in VENDORS:
            raise ValueError(f"unknown vendor {v!r}; choose one of: {', '.join(VENDORS)}")
        return v
