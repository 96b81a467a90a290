"""The services' Redis client packs commands with hiredis and means exactly what redis-py's
own packer means: same bytes on the wire, same values stored, same errors; and its new
connections skip redis-py's per-connection metadata read."""

from __future__ import annotations

from typing import Any

import pytest
from redis import utils as redis_utils
from redis.asyncio import Redis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from shared.protocol import Names
from shared.runtime.redis import connect
from shared.runtime.redis_packing import hiredis_packing
from shared.runtime.settings import BusSettings

VALUES: list[Any] = [
    "text", "ünïcode ✓", b"\x00\xffbytes", 0, -7, 2**70, 0.1, 1e20, float("inf"),
    memoryview(b"view"), bytearray(b"array"), "x" * 100_000,
]  # fmt: skip


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_the_bytes_on_the_wire_are_redis_pys(value: Any) -> None:
    ours, theirs = hiredis_packing(Connection)(), Connection()
    command = ("XADD", "s", "*", "field", value)
    assert b"".join(ours.pack_command(*command)) == b"".join(theirs.pack_command(*command))


@pytest.mark.parametrize("value", [None, True])
def test_a_value_redis_py_refuses_is_refused_the_same_way(value: Any) -> None:
    with pytest.raises(DataError):
        hiredis_packing(Connection)().pack_command("SET", "k", value)


def test_every_kind_of_connection_keeps_its_own_class() -> None:
    for cls in (Connection, SSLConnection, UnixDomainSocketConnection):
        packing = hiredis_packing(cls)
        assert issubclass(packing, cls) and packing.__name__ == cls.__name__
        assert hiredis_packing(cls) is packing  # one subclass per class
    for url in ("redis://h:1/0", "rediss://h:1/0", "unix:///tmp/r.sock"):
        pool = connect(url, BusSettings()).connection_pool
        assert pool.connection_class.pack_command is not Connection.pack_command, url


def stored(value: Any) -> bytes:
    """What Redis keeps for `value`: bytes as they are, numbers as redis-py writes them."""
    if isinstance(value, bytes | memoryview | bytearray):
        return bytes(value)
    return (repr(value) if isinstance(value, float) else str(value)).encode()


async def test_values_round_trip_through_a_real_redis(redis: Redis, names: Names) -> None:
    key = f"{names.namespace}:packing"
    for value in VALUES:
        await redis.set(key, value)
        assert await redis.get(key) == stored(value), value
    # a command name of two words, split for the server
    assert await redis.execute_command("CONFIG GET", "maxmemory-policy")
    await redis.delete(key)


async def test_new_connections_do_not_read_the_package_metadata_again(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py reads its own version from the package metadata for each connection unless
    given one DriverInfo: a pool that grows to 500 connections paid 1.3 s of CPU for it."""
    calls: list[str] = []
    real = redis_utils.get_lib_version
    monkeypatch.setattr(redis_utils, "get_lib_version", lambda: calls.append("x") or real())
    client = connect(redis_url, BusSettings())
    held = [await client.connection_pool.get_connection() for _ in range(20)]
    for conn in held:
        await client.connection_pool.release(conn)
    assert await client.ping()
    await client.aclose()
    assert calls == []
