"""Look for secret values in bytes: log files, every key of a Redis, metric expositions.

A secret counts as leaked if it appears whole, or if any 16-character run of its random
part does (a key cut short or half-masked in a message still gives it away).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

WINDOW = 16


@dataclass(frozen=True)
class Secret:
    label: str  # e.g. the environment variable
    value: str
    random_part: str  # the unguessable tail: any WINDOW-long run of it is a leak

    def needles(self) -> list[bytes]:
        runs = {
            self.random_part[i : i + WINDOW]
            for i in range(max(1, len(self.random_part) - WINDOW + 1))
        }
        return [self.value.encode(), *(r.encode() for r in sorted(runs))]


@dataclass
class Found:
    """What a scan read, and every place a secret showed up."""

    read: Counter[str] = field(default_factory=Counter)  # what kind of thing, how many
    leaks: list[str] = field(default_factory=list)  # "<label> in <where>"

    def look(self, where: str, blob: bytes | str, secrets: Iterable[Secret]) -> None:
        data = blob.encode(errors="surrogateescape") if isinstance(blob, str) else blob
        for secret in secrets:
            if any(needle in data for needle in secret.needles()):
                self.leaks.append(f"{secret.label} in {where}")


def scan_blobs(blobs: Mapping[str, bytes], secrets: Iterable[Secret], kind: str) -> Found:
    found = Found()
    secrets = list(secrets)
    for where, blob in blobs.items():
        found.read[kind] += 1
        found.look(where, blob, secrets)
    return found


async def scan_redis(redis: Redis, secrets: Iterable[Secret], match: str = "*") -> Found:
    """Read every key matching `match`, whatever its type, and every name and value in it.
    A type this scanner cannot read fails the scan, so nothing is skipped unseen."""
    found = Found()
    secrets = list(secrets)
    async for key in redis.scan_iter(match=match, count=500):
        name = key.decode(errors="backslashreplace")
        found.look(f"key name {name}", key, secrets)
        kind = (await redis.type(key)).decode()
        found.read[kind] += 1
        values: list[bytes] = []
        if kind == "string":
            values.append(await redis.get(key))
        elif kind == "hash":
            raw: Any = await redis.hgetall(key)  # type: ignore[misc]
            values += [*raw.keys(), *raw.values()]
        elif kind == "list":
            values += await redis.lrange(key, 0, -1)  # type: ignore[misc]
        elif kind == "set":
            values += await redis.smembers(key)  # type: ignore[misc]
        elif kind == "zset":
            values += [m for m, _score in await redis.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            for entry_id, fields in await redis.xrange(key):
                values += [entry_id, *fields.keys(), *fields.values()]
            for group in await redis.xinfo_groups(key):
                values.append(group["name"])
                for consumer in await redis.xinfo_consumers(key, group["name"]):
                    values.append(consumer["name"])
        else:
            raise AssertionError(f"{name}: a {kind} key, which this scanner cannot read")
        for value in values:
            found.look(f"{kind} {name}", value, secrets)
    return found
