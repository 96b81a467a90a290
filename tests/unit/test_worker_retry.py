"""Backoff between vendor calls: exponential with jitter, capped, never before retry-after."""

from __future__ import annotations

import random

from shared.llm.backoff import backoff_s


def test_backoff_grows_and_is_capped() -> None:
    rng = random.Random(1)
    waits = [backoff_s(n, base_s=0.5, max_s=8, rng=rng) for n in range(1, 9)]
    for n, wait in enumerate(waits, start=1):
        ceiling = min(8, 0.5 * 2 ** (n - 1))
        assert ceiling / 2 <= wait <= ceiling
    assert max(waits) <= 8


def test_the_vendors_retry_after_is_never_undercut() -> None:
    rng = random.Random(2)
    for n in range(1, 6):
        assert backoff_s(n, base_s=0.5, max_s=30, retry_after_s=7.0, rng=rng) >= 7.0
