"""Console settings (`SWARM_CONSOLE_*`), read once by `swarm console` and passed down.

The token that unlocks replay and cancel comes from `SWARM_CONSOLE_TOKEN` or from the file
`SWARM_CONSOLE_TOKEN_FILE` names (a container secret); without one the console is
read-only. It is a SecretStr: its repr is `**********` and it is registered with the log
scrubber, so it never reaches a log line.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SWARM_CONSOLE_", env_file=".env", extra="ignore", frozen=True
    )

    host: str = Field(
        default="127.0.0.1", description="address to listen on; loopback unless configured"
    )
    port: int = Field(default=8300, ge=0, le=65535, description="HTTP port (0: any free one)")
    token: SecretStr | None = Field(
        default=None, description="unlocks replay and cancel; unset: the console is read-only"
    )
    token_file: Path | None = Field(default=None, description="a file holding the token")
    allowed_hosts: str = Field(
        default="127.0.0.1,localhost",
        description="Host headers answered, comma-separated ('*': any); others get 400, so a "
        "web page cannot read the console through a rebound DNS name",
    )
    page_size: int = Field(default=50, ge=1, le=500, description="rows per page")
    refresh_s: float = Field(default=1.0, gt=0, le=60, description="live updates this often")
    window_s: float = Field(default=3600.0, gt=0, description="cost and tokens over this long")
    action_timeout_s: float = Field(default=30.0, gt=0, description="a cancel or replay, at most")

    @field_validator("token", "token_file", mode="before")
    @classmethod
    def _empty_is_none(cls, v: object) -> object:
        return None if v == "" else v

    @model_validator(mode="after")
    def _read_token_file(self) -> ConsoleSettings:
        if self.token is not None or self.token_file is None:
            return self
        try:
            secret = self.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            raise ValueError(f"cannot read the token file {self.token_file}: {why}") from None
        if not secret:
            raise ValueError(f"the token file {self.token_file} is empty")
        object.__setattr__(self, "token", SecretStr(secret))
        return self

    @property
    def read_only(self) -> bool:
        return self.token is None

    @property
    def hosts(self) -> list[str]:
        return [h.strip() for h in self.allowed_hosts.split(",") if h.strip()] or ["*"]
