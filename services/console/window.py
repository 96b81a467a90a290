"""Cost and tokens per vendor and model over the last hour, from the findings stream.

The collector's totals are cumulative, so the window comes from the findings themselves:
every consumer keeps handled entries `SWARM_RETENTION_S` (an hour) before trimming, and an
entry id is its time. On start the console reads the findings of the last hour forward a
bounded batch per refresh, then only what is new; each finding lands in a one-minute bucket
and buckets older than the window are dropped. Memory is per minute and model, not per
finding, and a refresh reads at most `batch` entries, so a backlog of 100,000 findings is
caught up over a few refreshes without stalling the page.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from shared.bus.streamids import text

_BUCKET_MS = 60_000


@dataclass(slots=True)
class Usage:
    findings: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    unpriced: int = 0  # findings of unpriced models: cost_usd is a lower bound

    def add(self, other: Usage) -> None:
        self.findings += other.findings
        self.failed += other.failed
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost_usd += other.cost_usd
        self.unpriced += other.unpriced


@dataclass(frozen=True, slots=True)
class WindowRow:
    vendor: str
    model: str
    usage: Usage


class CostWindow:
    def __init__(self, stream: str, *, window_s: float, batch: int = 5000) -> None:
        self._stream = stream
        self._window_ms = int(window_s * 1000)
        self._batch = batch
        self._last: str | None = None  # the last entry read
        self._buckets: dict[int, dict[tuple[str, str], Usage]] = defaultdict(dict)
        self.caught_up = False

    async def refresh(self, redis: Redis, *, now_ms: int | None = None) -> None:
        """Read up to `batch` findings after the last one read; drop expired buckets."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        oldest_ms = now_ms - self._window_ms
        if self._last and int(self._last.split("-", maxsplit=1)[0]) >= oldest_ms:
            start = f"({self._last}"
        else:  # the first read, or after a pause longer than the window
            start = str(oldest_ms)
        raw: Any = await redis.xrange(self._stream, min=start, max="+", count=self._batch)
        for entry_id, fields in raw:
            self._last = text(entry_id)
            self._add(int(self._last.split("-")[0]), fields)
        self.caught_up = len(raw) < self._batch
        oldest = oldest_ms // _BUCKET_MS
        for minute in [m for m in self._buckets if m < oldest]:
            del self._buckets[minute]

    def _add(self, ms: int, raw: dict[bytes, bytes]) -> None:
        f: dict[str, object] = {text(k): text(v) for k, v in raw.items()}
        if set(f) == {"data"}:
            try:
                doc = json.loads(str(f["data"]))
            except ValueError:
                return
            if not isinstance(doc, dict):
                return
            f = doc
        vendor, model = str(f.get("vendor", "?")), str(f.get("model", "?"))
        u = self._buckets[ms // _BUCKET_MS].setdefault((vendor, model), Usage())
        u.findings += 1
        u.failed += str(f.get("status", "ok")) == "failed"
        u.input_tokens += int(_float(f.get("input_tokens")))
        u.output_tokens += int(_float(f.get("output_tokens")))
        cost = f.get("cost_usd")
        if cost is None or cost == "":
            u.unpriced += 1
        else:
            u.cost_usd += _float(cost)

    def rows(self) -> list[WindowRow]:
        """Per vendor and model, the whole window, sorted by cost (highest first)."""
        total: dict[tuple[str, str], Usage] = defaultdict(Usage)
        for bucket in self._buckets.values():
            for key, usage in bucket.items():
                total[key].add(usage)
        return sorted(
            (WindowRow(v, m, u) for (v, m), u in total.items()),
            key=lambda r: (-r.usage.cost_usd, r.vendor, r.model),
        )


def _float(raw: object) -> float:
    try:
        value = float(str(raw))
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0
