"""A settings error names the environment variable a person sets, never a secret's value."""

from __future__ import annotations

import pytest
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.worker.settings import WorkerSettings
from shared.runtime.config_errors import ConfigError, Problem, env_name, load, load_all
from shared.runtime.settings import BusSettings, SwarmSettings


class Demo(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_", extra="ignore")

    limit: int = 1
    token: SecretStr | None = None  # masked by its type
    vendor_api_key: int = 0  # masked by its name, whatever its type
    url: SecretStr = Field(
        default=SecretStr("rediss://localhost/0"), validation_alias=AliasChoices("DEMO_URL")
    )
    port: int = Field(default=1, validation_alias=AliasChoices("PORT"))
    required: str

    @field_validator("token")
    @classmethod
    def _refuse_short(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < 40:
            raise ValueError("too short")
        return v

    @field_validator("url")
    @classmethod
    def _tls_only(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().startswith("rediss://"):
            raise ValueError("use rediss://")
        return v


def _problems(monkeypatch: pytest.MonkeyPatch, **env: str) -> list[Problem]:
    monkeypatch.setenv("DEMO_REQUIRED", "x")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load(Demo)
    return list(info.value.problems)


def test_a_prefixed_field_is_named_by_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    [p] = _problems(monkeypatch, DEMO_LIMIT="ten")
    assert p.variable == "DEMO_LIMIT"
    assert p.message.startswith("DEMO_LIMIT=ten: Input should be a valid integer")


def test_an_aliased_field_is_named_by_its_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    [p] = _problems(monkeypatch, PORT="eighty")
    assert p.variable == "PORT" and p.message.startswith("PORT=eighty: ")
    assert env_name(Demo, "port") == "PORT"  # not DEMO_PORT: the alias overrides the prefix


def test_secret_values_never_appear(monkeypatch: pytest.MonkeyPatch) -> None:
    problems = _problems(
        monkeypatch,
        DEMO_TOKEN="sk-live-abcdef",
        DEMO_VENDOR_API_KEY="sk-live-123456",
        DEMO_URL="redis://app:hunter2@cache:6379/0",
    )
    text = "\n".join(p.message for p in problems)
    assert "sk-live" not in text and "hunter2" not in text
    assert "DEMO_TOKEN=***: Value error" not in text  # the pydantic prefix is dropped
    assert "DEMO_TOKEN=***: too short" in text
    assert "DEMO_VENDOR_API_KEY=***: Input should be a valid integer" in text
    assert "DEMO_URL=redis://app:***@cache:6379/0: use rediss://" in text


def test_a_missing_field_does_not_echo_the_other_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_TOKEN", "x" * 50)
    with pytest.raises(ConfigError) as info:
        load(Demo)
    [p] = info.value.problems
    assert p.message == "DEMO_REQUIRED: Field required"
    assert "x" * 50 not in str(info.value)


def test_a_check_across_fields_is_led_by_the_first_variable_it_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SWARM_HEARTBEAT_INTERVAL_S", "5")
    monkeypatch.setenv("SWARM_HEARTBEAT_TTL_S", "3")
    with pytest.raises(ConfigError) as info:
        load(BusSettings)
    [p] = info.value.problems
    assert p.variable == "SWARM_HEARTBEAT_TTL_S"
    assert p.message.startswith("SWARM_HEARTBEAT_TTL_S (3.0) must exceed")


def test_every_class_is_checked_before_refusing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METRICS_PORT", "x")
    monkeypatch.setenv("SWARM_WORKER_VENDOR", "nosuch")
    monkeypatch.setenv("SWARM_READ_COUNT", "0")
    with pytest.raises(ConfigError) as info:
        load_all(SwarmSettings, WorkerSettings, BusSettings)
    assert [p.variable for p in info.value.problems] == [
        "METRICS_PORT", "SWARM_WORKER_VENDOR", "SWARM_READ_COUNT"
    ]  # fmt: skip
    assert info.value.exit_code == 2


def test_good_settings_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARM_WORKER_RPM", "600")
    swarm, worker = load_all(SwarmSettings, WorkerSettings)
    assert worker.rpm == 600 and worker.unconfigured == "exit"
    assert isinstance(swarm, SwarmSettings)
