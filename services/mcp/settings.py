"""The MCP server's own settings (`SWARM_MCP_*`); REDIS_URL and SWARM_NAMESPACE come from
SwarmSettings, as for every service."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class McpSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SWARM_MCP_", env_file=".env", extra="ignore", frozen=True
    )

    max_wait_s: float = Field(
        default=300.0, gt=0, description="the longest one wait_for_finding call waits"
    )
    poll_s: float = Field(default=0.25, gt=0, description="how often a wait reads the finding")
    max_recent: int = Field(default=100, ge=1, description="recent findings listed at most")
    max_shard_wait_s: float = Field(
        default=300.0, gt=0, description="the longest one ask_shard call waits"
    )
    status_timeout_s: float = Field(
        default=30.0, gt=0, description="the longest `swarm status --json` may take"
    )
