"""Money spent per budget period, by vendor and by task type, shared by every replica.

Workers add the cost of each finding they publish; the dispatcher reads the totals to keep
vendors and task types under their caps. Periods are fixed windows of `period_s` seconds
(a day by default); each counter expires two periods after it starts.

A finding of an unpriced model (cost unknown) adds nothing to the dollars: it is counted
apart, per vendor and task type (`<ns>:spend:<period>:unpriced:vendor:<v>`, ...:
`unpriced:task_type:<t>`), so whoever reads a total can say how many findings it leaves
out instead of taking them for $0.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from shared.protocol import Names

_UNPRICED = "unpriced:"  # key kind prefix: spend:<period>:unpriced:vendor:<v>


class SpendBook:
    def __init__(self, redis: Redis, names: Names, *, period_s: float = 86400.0) -> None:
        self._redis, self._names, self._period_s = redis, names, period_s

    def period(self, now: float | None = None) -> int:
        return int((time.time() if now is None else now) // self._period_s)

    async def record(self, vendor: str, task_type: str, cost_usd: float | None) -> None:
        """Add a finding's cost; None (an unpriced model) counts one unpriced finding."""
        if cost_usd is not None and cost_usd <= 0:
            return
        period, ttl = self.period(), int(self._period_s * 2) + 60
        async with self._redis.pipeline(transaction=True) as pipe:
            for kind, name in (("vendor", vendor), ("task_type", task_type)):
                if cost_usd is None:
                    key = self._names.spend(period, _UNPRICED + kind, name)
                    pipe.incrbyfloat(key, 1)  # the one increment both ACL patterns allow
                else:
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

    async def unpriced(self, kind: str, names: list[str]) -> dict[str, int]:
        """Findings of unpriced models this period by each of `names`: not in `spent`."""
        if not names:
            return {}
        period = self.period()
        keys = [self._names.spend(period, _UNPRICED + kind, n) for n in names]
        values = await self._redis.mget(keys)
        return {n: int(float(v)) if v else 0 for n, v in zip(names, values, strict=True)}
