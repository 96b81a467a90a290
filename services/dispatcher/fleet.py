"""The fleet as the router sees it: live workers per vendor and what is cooling down,
read from Redis at most once per refresh interval (not once per task)."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from services.dispatcher.router import Fleet
from shared.bus import Cooldowns, live_members
from shared.protocol import Names


class FleetView:
    def __init__(self, redis: Redis, names: Names, cooldowns: Cooldowns, refresh_s: float) -> None:
        self._redis, self._names, self._cooldowns = redis, names, cooldowns
        self._refresh_s = refresh_s
        self._fleet = Fleet(live={}, cooling=frozenset())
        self._read_at = float("-inf")

    async def get(self) -> Fleet:
        if time.monotonic() - self._read_at >= self._refresh_s:
            live: dict[str, int] = {}
            for member in await live_members(self._redis, self._names):
                if member.get("service", "").startswith("worker-") and member.get("vendor"):
                    live[member["vendor"]] = live.get(member["vendor"], 0) + 1
            cooling = frozenset((await self._cooldowns.cooling()).keys())
            self._fleet = Fleet(live=live, cooling=cooling)
            self._read_at = time.monotonic()
        return self._fleet
