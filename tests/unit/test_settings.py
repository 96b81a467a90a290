"""Settings read the documented variables, and refuse settings that would lose work."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.protocol import Rejection, decode_rejection, encode_rejection
from shared.runtime.settings import BusSettings, SwarmSettings


def test_documented_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://cache:6380/2")
    monkeypatch.setenv("SWARM_NAMESPACE", "team-a")
    monkeypatch.setenv("METRICS_PORT", "9300")
    monkeypatch.setenv("SWARM_MAX_IN_FLIGHT", "17")
    swarm, bus = SwarmSettings(), BusSettings()
    assert swarm.redis_url.get_secret_value() == "redis://cache:6380/2"
    assert swarm.names.intake == "team-a:tasks"
    assert swarm.metrics_port == 9300
    assert bus.max_in_flight == 17


def test_a_generic_namespace_variable_does_not_move_the_swarm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NAMESPACE", "kube-system")  # set by many Kubernetes manifests
    monkeypatch.delenv("SWARM_NAMESPACE", raising=False)
    assert SwarmSettings().namespace == "swarm"


def test_a_bad_namespace_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ValidationError, match="must be 1-64 letters"):
        SwarmSettings(SWARM_NAMESPACE="has space")


def test_heartbeat_ttl_must_outlive_the_interval() -> None:
    with pytest.raises(ValidationError, match="SWARM_HEARTBEAT_TTL_S"):
        BusSettings(heartbeat_interval_s=5, heartbeat_ttl_s=3)


def test_block_stays_below_the_socket_timeout() -> None:
    assert BusSettings(block_ms=10_000).socket_timeout_s > 10


def test_rejection_record_round_trips_with_undecodable_bytes() -> None:
    rejection = Rejection(
        reason="prompt: is not valid UTF-8",
        field="prompt",
        source_stream="swarm:tasks",
        source_id="1-0",
        consumer="dispatcher-1",
        group="dispatcher",
    )
    record = encode_rejection(rejection, {b"prompt": b"\xff\xfe", b"urgency": b"high"})
    assert record["orig:prompt"] == b"\xff\xfe"  # byte-exact on the wire
    back = decode_rejection(
        {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in record.items()}
    )
    assert back.reason == rejection.reason
    assert back.group == "dispatcher"
    assert back.original == {"prompt": "\\xff\\xfe", "urgency": "high"}
