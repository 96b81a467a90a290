"""Vendor settings: keys, base URLs, models, timeouts, read once from the environment.

`SWARM_SIMULATOR_URL=http://127.0.0.1:N` points every vendor at the project's simulator
(no real key needed). A vendor's own base URL (`ANTHROPIC_BASE_URL`, `OPENAI_BASE_URL`,
`DEEPSEEK_BASE_URL`, `GOOGLE_GEMINI_BASE_URL`, `OPENAI_COMPATIBLE_BASE_URL`) wins over it.
A real key set as well would be sent to the simulator: a worker refuses to start so
unless `SWARM_ALLOW_SIMULATOR_WITH_KEYS=1` (`key_sent_to_simulator`).
Keys are SecretStr: never printed, logged or written anywhere.

`SWARM_LLM_LOGPROBS` lists the vendors asked for token logprobs (a finding's confidence),
comma-separated, or `none`; default `openai,deepseek,openai-compatible,gemini`. Claude has
no logprobs and codex models (reasoning models) take none, so neither is ever asked. A
model that refuses the parameter (HTTP 400) is asked again without it, and not again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

VENDORS = ("claude", "gemini", "openai", "deepseek", "codex", "openai-compatible")
LOGPROBS_VENDORS = ("openai", "deepseek", "openai-compatible", "gemini")  # can be asked

# Where each vendor's SDK base URL lives under the simulator.
SIMULATOR_PREFIX = {
    "claude": "/anthropic",
    "gemini": "/gemini",
    "openai": "/openai/v1",
    "codex": "/openai/v1",
    "deepseek": "/deepseek/v1",
    "openai-compatible": "/compat/v1",
}
SIMULATOR_KEY = "sim-key-not-secret"


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class VendorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    simulator_url: str | None = Field(default=None, validation_alias=_env("SWARM_SIMULATOR_URL"))
    allow_simulator_with_keys: bool = Field(
        default=False, validation_alias=_env("SWARM_ALLOW_SIMULATOR_WITH_KEYS")
    )
    prices_file: Path | None = Field(default=None, validation_alias=_env("SWARM_PRICES_FILE"))
    timeout_s: float = Field(default=120.0, gt=0, validation_alias=_env("SWARM_LLM_TIMEOUT_S"))
    connect_timeout_s: float = Field(
        default=5.0, gt=0, validation_alias=_env("SWARM_LLM_CONNECT_TIMEOUT_S")
    )
    max_connections: int = Field(
        default=1000, ge=1, validation_alias=_env("SWARM_LLM_MAX_CONNECTIONS")
    )
    logprobs: str = Field(
        default=",".join(LOGPROBS_VENDORS), validation_alias=_env("SWARM_LLM_LOGPROBS")
    )

    anthropic_api_key: SecretStr | None = Field(
        default=None, validation_alias=_env("ANTHROPIC_API_KEY")
    )
    anthropic_base_url: str | None = Field(
        default=None, validation_alias=_env("ANTHROPIC_BASE_URL")
    )
    google_api_key: SecretStr | None = Field(
        default=None, validation_alias=_env("GOOGLE_API_KEY", "GEMINI_API_KEY")
    )
    gemini_base_url: str | None = Field(
        default=None, validation_alias=_env("GOOGLE_GEMINI_BASE_URL")
    )
    openai_api_key: SecretStr | None = Field(default=None, validation_alias=_env("OPENAI_API_KEY"))
    openai_base_url: str | None = Field(default=None, validation_alias=_env("OPENAI_BASE_URL"))
    deepseek_api_key: SecretStr | None = Field(
        default=None, validation_alias=_env("DEEPSEEK_API_KEY")
    )
    deepseek_base_url: str | None = Field(default=None, validation_alias=_env("DEEPSEEK_BASE_URL"))
    compat_api_key: SecretStr | None = Field(
        default=None, validation_alias=_env("OPENAI_COMPATIBLE_API_KEY")
    )
    compat_base_url: str | None = Field(
        default=None, validation_alias=_env("OPENAI_COMPATIBLE_BASE_URL")
    )

    claude_model: str | None = Field(default=None, validation_alias=_env("SWARM_CLAUDE_MODEL"))
    gemini_model: str | None = Field(default=None, validation_alias=_env("SWARM_GEMINI_MODEL"))
    openai_model: str | None = Field(default=None, validation_alias=_env("SWARM_OPENAI_MODEL"))
    deepseek_model: str | None = Field(default=None, validation_alias=_env("SWARM_DEEPSEEK_MODEL"))
    codex_model: str | None = Field(default=None, validation_alias=_env("SWARM_CODEX_MODEL"))
    compat_model: str | None = Field(
        default=None, validation_alias=_env("OPENAI_COMPATIBLE_MODEL", "SWARM_COMPAT_MODEL")
    )
    # More models the OpenAI-compatible server serves, comma-separated; the worker announces
    # them (and OPENAI_COMPATIBLE_MODEL) in its membership, so tasks pinned to them reach it.
    compat_models: str = Field(default="", validation_alias=_env("OPENAI_COMPATIBLE_MODELS"))

    @field_validator("logprobs")
    @classmethod
    def _logprobs_vendors(cls, v: str) -> str:
        chosen = [x.strip() for x in v.split(",") if x.strip()]
        if chosen == ["none"]:
            return ""
        wrong = [x for x in chosen if x not in LOGPROBS_VENDORS]
        if wrong:
            raise ValueError(
                f"SWARM_LLM_LOGPROBS: {', '.join(wrong)} cannot be asked for logprobs; "
                f"list some of {', '.join(LOGPROBS_VENDORS)}, or none"
            )
        return ",".join(chosen)

    def wants_logprobs(self, vendor: str) -> bool:
        return vendor in self.logprobs.split(",")

    def endpoint(self, vendor: str) -> Endpoint:
        """Base URL and key for `vendor`; raises MissingCredentialsError with the fix."""
        if vendor not in VENDORS:
            raise ValueError(f"unknown vendor {vendor!r}; choose one of: {', '.join(VENDORS)}")
        key, url, key_env, url_env, real_url = {
            "claude": (
                self.anthropic_api_key,
                self.anthropic_base_url,
                "ANTHROPIC_API_KEY",
                "ANTHROPIC_BASE_URL",
                None,
            ),
            "gemini": (
                self.google_api_key,
                self.gemini_base_url,
                "GOOGLE_API_KEY",
                "GOOGLE_GEMINI_BASE_URL",
                None,
            ),
            "openai": (
                self.openai_api_key,
                self.openai_base_url,
                "OPENAI_API_KEY",
                "OPENAI_BASE_URL",
                None,
            ),
            "codex": (
                self.openai_api_key,
                self.openai_base_url,
                "OPENAI_API_KEY",
                "OPENAI_BASE_URL",
                None,
            ),
            "deepseek": (
                self.deepseek_api_key,
                self.deepseek_base_url,
                "DEEPSEEK_API_KEY",
                "DEEPSEEK_BASE_URL",
                "https://api.deepseek.com",
            ),
            "openai-compatible": (
                self.compat_api_key,
                self.compat_base_url,
                "OPENAI_COMPATIBLE_API_KEY",
                "OPENAI_COMPATIBLE_BASE_URL",
                None,
            ),
        }[vendor]
        simulated = False
        if url is None and self.simulator_url:
            url = self.simulator_url.rstrip("/") + SIMULATOR_PREFIX[vendor]
            simulated = True
        if vendor == "openai-compatible":
            if url is None:
                raise MissingCredentialsError(
                    f"vendor openai-compatible needs {url_env} (e.g. http://localhost:8000/v1 "
                    "for vLLM, http://localhost:11434/v1 for Ollama) or SWARM_SIMULATOR_URL",
                    variable=url_env,
                )
            # Local servers usually take any key; the SDK insists on one.
            return Endpoint(url, key.get_secret_value() if key else "not-needed", simulated)
        if key is None:
            if simulated:
                return Endpoint(url, SIMULATOR_KEY, simulated)
            also = " or GEMINI_API_KEY" if vendor == "gemini" else ""
            raise MissingCredentialsError(
                f"vendor {vendor} needs {key_env}{also} (or SWARM_SIMULATOR_URL to use the "
                "simulator instead of the real API)",
                variable=key_env,
            )
        return Endpoint(url or real_url, key.get_secret_value(), simulated)

    def key_sent_to_simulator(self, vendor: str) -> str | None:
        """The variable of a real key that `vendor`'s calls would send to the simulator
        (its key set, SWARM_SIMULATOR_URL set and no base URL of its own), else None."""
        if not self.endpoint(vendor).simulated:
            return None
        key, variable = {
            "claude": (self.anthropic_api_key, "ANTHROPIC_API_KEY"),
            "gemini": (self.google_api_key, "GOOGLE_API_KEY"),
            "openai": (self.openai_api_key, "OPENAI_API_KEY"),
            "codex": (self.openai_api_key, "OPENAI_API_KEY"),
            "deepseek": (self.deepseek_api_key, "DEEPSEEK_API_KEY"),
            "openai-compatible": (self.compat_api_key, "OPENAI_COMPATIBLE_API_KEY"),
        }[vendor]
        return variable if key is not None and key.get_secret_value() else None

    def extra_models(self, vendor: str) -> tuple[str, ...]:
        """Models a vendor's worker serves besides its default (OPENAI_COMPATIBLE_MODELS)."""
        if vendor != "openai-compatible":
            return ()
        return tuple(dict.fromkeys(m.strip() for m in self.compat_models.split(",") if m.strip()))

    def model_for(self, vendor: str) -> str | None:
        return {
            "claude": self.claude_model,
            "gemini": self.gemini_model,
            "openai": self.openai_model,
            "deepseek": self.deepseek_model,
            "codex": self.codex_model,
            "openai-compatible": self.compat_model,
        }[vendor]


@dataclass(frozen=True, slots=True)
class Endpoint:
    base_url: str | None  # None: the SDK's own default (the vendor's real API)
    api_key: str
    simulated: bool

    def __repr__(self) -> str:  # never show the key
        return f"Endpoint(base_url={self.base_url!r}, api_key='***', simulated={self.simulated})"


class MissingCredentialsError(ValueError):
    """A vendor was asked for without the key or URL it needs; `variable` is the one to set."""

    def __init__(self, message: str, *, variable: str) -> None:
        super().__init__(message)
        self.variable = variable
