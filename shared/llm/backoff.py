"""When to try a vendor call again (workers and shards alike). Pure."""

from __future__ import annotations

import random


def backoff_s(
    attempt: int,
    *,
    base_s: float,
    max_s: float,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before try `attempt + 1`: the vendor's retry-after when it gave one
    (never less), else full-jitter exponential backoff, capped at `max_s`."""
    ceiling = min(max_s, base_s * 2 ** (attempt - 1))
    jittered = (rng or random).uniform(ceiling / 2, ceiling)
    if retry_after_s is not None:
        return max(retry_after_s, 0.0) + jittered * 0.1  # a little spread across replicas
    return jittered
