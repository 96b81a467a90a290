"""Request counters behind GET /_sim/stats."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Call:
    """What the router learns about a request from the vendor module, for the stats."""

    vendor: str
    model: str | None = None


class Stats:
    def __init__(self) -> None:
        self.total = 0
        self.in_flight = 0
        self.by_vendor: Counter[str] = Counter()
        self.by_model: Counter[str] = Counter()
        self.by_status: Counter[str] = Counter()
        self.by_vendor_status: dict[str, Counter[str]] = {}
        self.faults: Counter[str] = Counter()

    def record(self, call: Call, status: str) -> None:
        self.total += 1
        self.by_vendor[call.vendor] += 1
        if call.model:
            self.by_model[call.model] += 1
        self.by_status[status] += 1
        self.by_vendor_status.setdefault(call.vendor, Counter())[status] += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "in_flight": self.in_flight,
            "by_vendor": dict(self.by_vendor),
            "by_model": dict(self.by_model),
            "by_status": dict(self.by_status),
            "by_vendor_status": {v: dict(c) for v, c in self.by_vendor_status.items()},
            "faults": dict(self.faults),
        }
