"""Money spent per budget period, by vendor and by task type, shared by every replica.

Workers add the cost of each finding they publish; the dispatcher reads the totals to keep
vendors and task types under their caps. Periods are fixed windows of `period_s` seconds
(a day by default); each counter expires two periods after it starts.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from shared.protocol import Names


class SpendBook:
    def __init__(self, redis: Redis, names: Names, *, period_s: float = 86400.0) -> None:
        self._redis, self._names, self._period_s = redis, names, period_s

    def period(self, now: float | None = None) -> int:
        return int((time.time() if now is None else now) // self._period_s)

    async def record(self, vendor: str, task_type: str, cost_usd: float) -> None:
        if cost_usd <= 0:
            return
        period, ttl = self.period(), int(self._period_s * 2) + 60
        async with self._redis.pipeline(transaction=True) as pipe:
            for kind, name in (("vendor", vendor), ("task_type", task_type)):
                key = self._names.spend(period, kind, name)
                pipe.incrbyfloat(key, cost_usd)
                pipe.expire(key, ttl)
            await pipe.execute()

    async def spent(self, kind: str, names: list[str]) -> dict[str, float]:
        """USD spent this period by each of `names` (vendors or task types)."""
        if not names:
            return {}
        period = self.period()
        values = await self._redis.mget([self._names.spend(period, kind, n) for n in names])
        return {n: float(v) if v is not None else 0.0 for n, v in zip(names, values, strict=True)}
